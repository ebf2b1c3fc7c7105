"""The inference routing of matrix products (models/kernels.py): same products as the stock kernels,
the fast kernels really taken, gradients untouched, packed copies kept in step with their weights."""

from __future__ import annotations

import gc
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, fresh_kernel_choices, models, need_compiler, need_kernel, repo_module

kernels = repo_module("models.kernels")
packed_weights = repo_module("models.packed_weights")
route_choice = repo_module("models.route_choice")


@pytest.fixture
def onednn():
    if kernels._ONEDNN_LINEAR is None or packed_weights._PACK is None:
        if os.environ.get("CI") == "true":
            pytest.fail("this torch build has no oneDNN linear kernel; CI's torch 2.13 CPU build has")
        pytest.skip("this torch build has no oneDNN linear kernel")


@pytest.fixture
def calls(monkeypatch, onednn):
    """Counts the products that go through oneDNN, the split batched product and the widened
    float32 one, with PyTorch's routes chosen for single rows (tests/test_native.py covers the
    native ones)."""
    monkeypatch.setenv("GPT_HUB_KERNEL", "torch")
    monkeypatch.setattr(route_choice, "_chosen", {})
    seen = {"onednn": 0, "bmm": 0, "widened": 0}
    linear, bmm, widened = kernels._ONEDNN_LINEAR, torch.bmm, kernels.widened_product

    def counting_linear(*args):
        seen["onednn"] += 1
        return linear(*args)

    def counting_bmm(*args):
        seen["bmm"] += 1
        return bmm(*args)

    def counting_widened(*args, **kwargs):
        seen["widened"] += 1
        return widened(*args, **kwargs)

    monkeypatch.setattr(kernels, "_ONEDNN_LINEAR", counting_linear)
    monkeypatch.setattr(kernels.torch, "bmm", counting_bmm)
    monkeypatch.setattr(kernels, "widened_product", counting_widened)
    return seen


def counts(onednn: int = 0, bmm: int = 0, widened: int = 0) -> dict[str, int]:
    return {"onednn": onednn, "bmm": bmm, "widened": widened}


def bfloat16_counts(products: int, several_rows: int) -> dict[str, int]:
    """What ``products`` bfloat16 products by PyTorch's routes, ``several_rows`` of them with
    more than one row, take: oneDNN's on packed copies, or where oneDNN has no bfloat16 product
    for this CPU (AVX2 only) the stock kernel for one row and the widened float32 one for more."""
    if packed_weights.ENABLED:
        return counts(onednn=products)
    assert not packed_weights.ONEDNN_BFLOAT16, "GPT_HUB_PACK_BFLOAT16=0 is set: these counts assume packing"
    return counts(widened=several_rows)


def assert_stock_or_widened(got, stock):
    """The stock product's result, or where several bfloat16 rows are widened (AVX2 only) within
    one rounding of it: a float32 sum in another order."""
    if packed_weights.ONEDNN_BFLOAT16:
        assert torch.equal(got, stock)
    else:
        assert_within_one_rounding(got, stock)


def keep_copies(monkeypatch) -> None:
    """Where oneDNN packs no bfloat16 weights (AVX2 only), the copy a bfloat16 weight gets is the
    native ``[out, in]`` kernel's transposed one: that kernel is forced."""
    if not packed_weights.ENABLED:
        need_kernel("narrow-rows")
        monkeypatch.setenv("GPT_HUB_KERNEL", "narrow-rows")


def copies_of(weight_id: int) -> list:
    """The kinds of copies kept of the weight with this id."""
    return [kind for key, kind in packed_weights._copies if key == weight_id]


def linear_in_out(x, weight, bias):
    return kernels.linear(x, weight, bias, stored_in_out=True)


def linear_out_in(x, weight, bias=None):
    return kernels.linear(x, weight, bias, stored_in_out=False)


def correctly_rounded(x, weight, bias=None):
    """``x @ weight (+ bias)`` in float64, rounded once to the inputs' dtype."""
    exact = x.double() @ weight.double()
    return (exact if bias is None else exact + bias.double()).to(x.dtype)


def assert_within_one_rounding(got, want):
    """bfloat16 results a float32 sum in another order may round the other way: one step apart."""
    step = want.float().abs().clamp(min=1e-30) * 2 ** -7
    assert bool(((got.float() - want.float()).abs() <= step).all()), (got - want).abs().max()


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_float32_products_equal_the_stock_ones(rows, calls):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(rows, 96), torch.randn(96, 200), torch.randn(200)
    with torch.no_grad():
        ours_in_out = linear_in_out(x, weight, bias)
        ours_out_in = linear_out_in(x[None], weight.t().contiguous(), bias)
    exact = (x.double() @ weight.double() + bias.double()).float()
    torch.testing.assert_close(ours_in_out, exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_out_in[0], exact, rtol=1e-5, atol=1e-5)
    assert ours_out_in.shape == (1, rows, 200)
    # one row against [in, out] splits the inner dimension; everything else is oneDNN's
    assert calls == (counts(onednn=1, bmm=1) if rows == 1 else counts(onednn=2))


@pytest.mark.parametrize("rows", [1, 5])
def test_bfloat16_products_equal_the_stock_ones_to_one_rounding(rows, calls):
    torch.manual_seed(0)
    x = torch.randn(rows, 64, dtype=torch.bfloat16)
    weight, bias = torch.randn(64, 48, dtype=torch.bfloat16), torch.randn(48, dtype=torch.bfloat16)
    head = torch.randn(48, 64, dtype=torch.bfloat16)  # [out, in], no bias: the LM head's form
    with torch.no_grad():
        ours = linear_in_out(x, weight, bias), linear_out_in(x[None], head)[0]
    assert_within_one_rounding(ours[0], correctly_rounded(x, weight, bias))
    assert_within_one_rounding(ours[1], correctly_rounded(x, head.t()))
    assert calls == bfloat16_counts(2, 2 if rows > 1 else 0)


def test_bfloat16_packing_is_on_only_where_onednn_can_pack(onednn):
    """On a CPU without AVX-512 BW/VL/DQ or AVX-NE-CONVERT (a Zen 3), oneDNN refuses to pack
    bfloat16 weights, and every bfloat16 product of several rows raised there."""
    try:
        packed_weights._PACK(torch.randn(16, 32, dtype=torch.bfloat16), 1)
        packs = True
    except RuntimeError as error:
        assert "bf16" in str(error)
        packs = False
    assert packed_weights.CAN_PACK == packs and packed_weights.ENABLED <= packed_weights.ONEDNN_BFLOAT16 <= packs


def test_bfloat16_products_of_several_rows_go_to_onednn_only_where_the_cpu_multiplies_bfloat16():
    """oneDNN packs and multiplies bfloat16 on any AVX-512 CPU, but emulates it without AVX512_BF16
    or AMX: on such an Intel Xeon 1024 bfloat16 rows of GPT-2 ran at 236 tokens/s against 940
    widened to float32 (docs/performance.md)."""
    assert packed_weights.bfloat16_arithmetic(frozenset({"avx512f", "avx512_bf16"}))
    assert packed_weights.bfloat16_arithmetic(frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    assert not packed_weights.bfloat16_arithmetic(frozenset({"avx512f", "avx512bw", "avx512_vnni"}))
    assert packed_weights.bfloat16_arithmetic(None)  # unknown (no /proc/cpuinfo): oneDNN's word
    flags = repo_module("models.native.build").cpu_flags()
    assert packed_weights.ONEDNN_BFLOAT16 == (packed_weights.CAN_PACK and packed_weights.bfloat16_arithmetic(flags))
    assert (kernels.WIDENED_DTYPE == torch.bfloat16) == packed_weights.ONEDNN_BFLOAT16


@pytest.mark.parametrize("at_once", [4096, 16])
def test_several_bfloat16_rows_without_onednn_take_a_widened_float32_product(at_once, calls, monkeypatch):
    """Where oneDNN has no bfloat16 product for the CPU (AVX2 only), the stock bfloat16 product of
    1024 rows by GPT-2's [768, 2304] weight took 3.2 s against 28 ms widened to float32 (a Zen 3),
    and oneDNN's packing raised. Simulated here: several rows take the widened product, a block of
    ``at_once`` output rows at a time, rounded once."""
    monkeypatch.setattr(packed_weights, "ENABLED", False)
    monkeypatch.setattr(kernels, "WIDENED_DTYPE", torch.float32)
    monkeypatch.setattr(kernels, "WIDENED_AT_ONCE", at_once)
    torch.manual_seed(0)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    weight, bias = torch.randn(64, 48, dtype=torch.bfloat16), torch.randn(48, dtype=torch.bfloat16)
    head = torch.randn(48, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        ours = linear_in_out(x, weight, bias), linear_out_in(x[None], head)[0]
        row = linear_in_out(x[:1], weight, bias)
    assert calls == counts(widened=2)  # one row stays on the stock kernel (or a native one)
    assert_within_one_rounding(ours[0], correctly_rounded(x, weight, bias))
    assert_within_one_rounding(ours[1], correctly_rounded(x, head.t()))
    assert_within_one_rounding(row, correctly_rounded(x[:1], weight, bias))
    assert ours[0].dtype == ours[1].dtype == torch.bfloat16 and ours[1].shape == (5, 48)
    with torch.no_grad():  # no rows: "cannot reshape tensor of 0 elements into shape [0, -1]"
        assert linear_in_out(x[:0], weight, bias).shape == (0, 48)
        assert kernels._stock_product(x[:0], weight, bias, stored_in_out=True).shape == (0, 48)


@pytest.mark.parametrize("forced", ["torch", "stock", None])
def test_many_float32_rows_take_the_faster_measured_of_onednn_and_pytorchs_own_gemm(monkeypatch, tmp_path, onednn,
                                                                                   forced):
    """oneDNN's linear operator was the route for every float32 product of many rows, but on an
    Intel Xeon without AMX it ran GPT-2's [in, out] block weights 1.3x slower than PyTorch's own
    GEMM (a 1024-token prefill at 0.97x Hugging Face); more than ``FEW_ROWS`` rows now take the
    faster of the two, measured once per shape at ``MANY_ROWS`` rows."""
    fresh_kernel_choices(monkeypatch, tmp_path, forced)
    ran = []
    for name in ("_stock_product", "_onednn_product"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _o=original, _n=name, **k: ran.append(_n) or _o(*a, **k))
    torch.manual_seed(0)
    weight, bias = torch.randn(64, 48), torch.randn(48)
    x = torch.randn(3, 50, 64)
    with torch.no_grad():
        measured = kernels._several_rows_ranking(weight, bias, True, kernels.MANY_ROWS)
        ran.clear()  # the measurement ran both
        got = linear_in_out(x, weight, bias)
    assert set(measured) == ({forced} if forced else {"torch", "stock"})
    assert ran == ["_onednn_product" if measured[0] == "torch" else "_stock_product"]
    torch.testing.assert_close(got, x @ weight + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_few_rows_take_the_fastest_measured_of_the_native_few_row_kernels_and_pytorchs(monkeypatch, tmp_path, narrow, dtype):
    """Several rows against GPT-2's float32 block weights streamed at half the speed of memory
    through oneDNN's GEMM on an Intel Xeon (batch 8: 1.34x Hugging Face); where oneDNN has no
    bfloat16 product (AVX2 only) every bfloat16 weight was widened. From 2 to ``FEW_ROWS`` rows
    the native few-row kernels are now candidates beside PyTorch's route, measured per shape and
    power of two of rows; more rows take PyTorch's route; ``GPT_HUB_KERNEL`` forces either."""
    monkeypatch.setattr(packed_weights, "ENABLED", False)
    monkeypatch.setattr(kernels, "WIDENED_DTYPE", torch.float32)
    monkeypatch.setattr(route_choice, "_chosen", {})
    monkeypatch.setattr(route_choice, "_record", lambda: tmp_path / "choices.json")
    ran = []
    make = kernels.native.float_product

    def counting(*args, **kwargs):
        product = make(*args, **kwargs)
        return product if not kwargs.get("several_rows") else lambda x: ran.append(args[0]) or product(x)

    monkeypatch.setattr(kernels.native, "float_product", counting)
    torch.manual_seed(0)
    weight, bias = torch.randn(67, 45, dtype=dtype), torch.randn(45, dtype=dtype)
    head = torch.randn(45, 67, dtype=dtype)
    check = assert_within_one_rounding if dtype == torch.bfloat16 else (
        lambda got, want: torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5))
    for forced in ("narrow", "torch", None):
        if forced:
            monkeypatch.setenv("GPT_HUB_KERNEL", forced)
        else:
            monkeypatch.delenv("GPT_HUB_KERNEL", raising=False)
        route_choice._chosen.clear()
        with torch.no_grad():
            for rows in (2, 9, kernels.FEW_ROWS, kernels.FEW_ROWS + 1):
                x = torch.randn(rows, 67, dtype=dtype)
                measured = [kernels._several_rows_ranking(w, b, stored, kernels.rows_bucket(rows))[0]
                            for w, b, stored in ((weight, bias, True), (head, None, False), (head, bias, False))
                            if rows <= kernels.FEW_ROWS]
                ran.clear()  # the measurement ran them all
                ours = linear_in_out(x, weight, bias), linear_out_in(x[None], head)[0], linear_out_in(x, head, bias)
                if rows > kernels.FEW_ROWS:
                    assert ran == [], (forced, rows, ran)
                else:
                    assert measured == [forced] * 3 if forced else set(measured) <= {"torch", "wide", "narrow"}
                    assert ran == [name for name in measured if name != "torch"], (forced, rows, ran, measured)
                check(ours[0], correctly_rounded(x, weight, bias))
                check(ours[1], correctly_rounded(x, head.t()))
                check(ours[2], correctly_rounded(x, head.t(), bias))
                assert all(y.dtype == dtype and y.shape == (rows, 45) for y in ours)
    many = {kernels.MANY_ROWS} if dtype == torch.float32 and kernels._ONEDNN_LINEAR is not None else set()
    assert {key[-2] for key in route_choice.chosen() if key[0] == "rows"} == {2, 16, 32} | many  # 2, 9, 32, 33 rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bound_products_take_the_same_kernels_as_the_per_call_ones(dtype, calls):
    torch.manual_seed(0)
    in_out, bias = torch.randn(64, 48, dtype=dtype), torch.randn(48, dtype=dtype)
    out_in = torch.randn(48, 64, dtype=dtype)
    by_in_out, by_out_in = kernels.bind(in_out, bias, stored_in_out=True), kernels.bind(out_in, None, stored_in_out=False)
    with torch.no_grad():
        for rows in (1, 3):
            x = torch.randn(rows, 64, dtype=dtype)
            before = dict(calls)
            bound = by_in_out(x), by_out_in(x)
            bound_calls = {key: calls[key] - before[key] for key in calls}
            before = dict(calls)
            per_call = linear_in_out(x, in_out, bias), linear_out_in(x, out_in)
            assert {key: calls[key] - before[key] for key in calls} == bound_calls
            assert all(torch.equal(a, b) for a, b in zip(bound, per_call))
    if dtype == torch.float32:
        assert calls == counts(onednn=6, bmm=2)  # single rows against [in, out] split
    else:
        assert calls == bfloat16_counts(8, 4)


def test_strided_inputs_and_weights_work(calls):
    torch.manual_seed(0)
    x = torch.randn(3, 64)[1:2, ::2]  # one row, every other column
    weight = torch.randn(48, 32).t()  # [32, 48], not contiguous
    bias = torch.randn(48)
    with torch.no_grad():
        torch.testing.assert_close(linear_in_out(x, weight, bias), x @ weight + bias, rtol=1e-5, atol=1e-5)


def test_gradients_take_the_stock_kernels(calls):
    torch.manual_seed(0)
    x = torch.randn(1, 32, requires_grad=True)
    weight = torch.randn(32, 16, requires_grad=True)
    bias = torch.randn(16, requires_grad=True)
    linear_in_out(x, weight, bias).square().sum().backward()
    assert calls == counts()
    expected = [t.grad.clone() for t in (x, weight, bias)]
    for t in (x, weight, bias):
        t.grad = None
    torch.addmm(bias, x, weight).square().sum().backward()
    for got, want in zip(expected, (x.grad, weight.grad, bias.grad)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("rows, kernel", [(1, "torch"), (2, "torch"), (1, "narrow-rows")])
def test_a_packed_copy_follows_its_weight(rows, kernel, onednn, monkeypatch):
    """With the route to one row left to timing, a fresh machine could choose the [in, out]
    kernel, which keeps no copy, and this test failed: the route that keeps one is forced."""
    if kernel != "torch":
        need_compiler()
    monkeypatch.setenv("GPT_HUB_KERNEL", kernel)  # more rows take oneDNN's packing whatever is forced
    monkeypatch.setattr(route_choice, "_chosen", {})
    torch.manual_seed(0)
    x = torch.randn(rows, 32, dtype=torch.bfloat16)
    weight = torch.randn(32, 16, dtype=torch.bfloat16)
    bias = torch.randn(16, dtype=torch.bfloat16)
    with torch.no_grad():
        first = linear_in_out(x, weight, bias)
        weight.mul_(2)  # changed in place: the copy must be remade
        bias.mul_(2)
        doubled = linear_in_out(x, weight, bias)
    assert torch.equal(doubled, 2 * first)  # doubling is exact in binary floating point
    key = id(weight)
    if kernel == "torch" and not packed_weights.ENABLED:
        assert not copies_of(key)  # no oneDNN packing for bfloat16 on this CPU: nothing to follow
        return
    assert copies_of(key)  # oneDNN's packing, or for one row the native kernel's [out, in] copy
    del weight
    gc.collect()
    assert not copies_of(key)  # freed with its weight


def test_models_give_the_same_outputs_on_fast_and_stock_kernels(monkeypatch, calls):
    torch.manual_seed(0)
    model = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 7))
    stock = model(ids).logits  # gradients enabled: the stock kernels
    assert calls == counts()
    with torch.no_grad():
        fast = model(ids).logits
        greedy = model.generate(ids[:1], max_new_tokens=6)
    assert calls["onednn"] > 0 and calls["bmm"] > 0
    torch.testing.assert_close(fast, stock, rtol=1e-5, atol=1e-5)

    routable = kernels._routable
    monkeypatch.setattr(kernels, "_routable", lambda weight: False)  # stock kernels only
    before = dict(calls)
    with torch.no_grad():
        assert torch.equal(model.generate(ids[:1], max_new_tokens=6), greedy)
    assert calls == before

    bf16 = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval().to(torch.bfloat16)
    with torch.no_grad():
        plain = bf16(ids).logits
    monkeypatch.setattr(kernels, "_routable", routable)
    with torch.no_grad():
        packed = bf16(ids).logits
        single_rows = bf16(ids[:1, :1]).logits
    torch.testing.assert_close(packed.float(), plain.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(single_rows[0, 0].float(), plain[0, 0].float(), rtol=2e-2, atol=2e-2)


def test_weights_made_in_inference_mode_get_no_copies(calls):
    with torch.inference_mode():  # such tensors have no version counter: in-place changes go unseen
        x, weight = torch.randn(2, 8, dtype=torch.bfloat16), torch.randn(4, 8, dtype=torch.bfloat16)
        y, row = linear_out_in(x, weight), linear_out_in(x[:1], weight)
    assert calls == counts(widened=0 if packed_weights.ONEDNN_BFLOAT16 else 1) and not copies_of(id(weight))
    assert_stock_or_widened(y, F.linear(x, weight))
    assert torch.equal(row, F.linear(x[:1], weight))
    model = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).to(torch.bfloat16)
    with torch.inference_mode():
        assert model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3).shape == (1, 6)


def test_bfloat16_routes_can_be_switched_off(monkeypatch, calls):
    monkeypatch.setattr(packed_weights, "ENABLED", False)
    x, weight = torch.randn(2, 8, dtype=torch.bfloat16), torch.randn(4, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        y, row = linear_out_in(x, weight), linear_out_in(x[:1], weight)
    assert calls == counts(widened=0 if packed_weights.ONEDNN_BFLOAT16 else 1)
    assert_stock_or_widened(y, F.linear(x, weight))
    assert torch.equal(row, F.linear(x[:1], weight))


def test_copies_of_weights_moved_or_converted_are_dropped(calls, monkeypatch):
    """``model.to('cuda')`` or ``model.half()`` keeps each Parameter and gives it other memory:
    the bfloat16 copies made for the CPU kernels stayed, holding host memory while the model lived."""
    keep_copies(monkeypatch)
    model = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).to(torch.bfloat16)
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3)
    held = lambda: [kind for p in model.parameters() for kind in copies_of(id(p))]  # noqa: E731
    assert held()
    model.bfloat16()  # nothing moves: the copies still match
    assert held()
    block = model.transformer.h[0]
    block.half()
    assert not [kind for p in block.parameters() for kind in copies_of(id(p))] and held()
    model.half()
    assert held() == []


def test_a_collection_while_copies_are_listed_never_breaks_a_conversion():
    """A garbage collection inside ``model.to()`` can free dead weights (held only by a reference
    cycle) that had copies: their finalizers dropped entries while the copies were being listed
    (``drop_stale``, which ``to()`` ends with), and ``to()`` raised "dictionary changed size during
    iteration" half-way. The collection is made to land at each allocation of the listing in turn:
    a sweep over the whole of ``to()`` never reaches it (the module walk before it frees as much
    as it allocates)."""
    torch.manual_seed(0)
    live = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()
    weights = list(live.parameters())  # a generator's walk of the modules would allocate (and collect) first
    thresholds = gc.get_threshold()
    gc.freeze()  # what the process holds so far is left out of each collection: late in a run a full one took 0.4 s
    try:
        for allocations in range(1, 25):
            gc.collect()
            gc.disable()
            dead = [torch.nn.Parameter(torch.zeros(4)) for _ in range(16)]
            for weight in dead:
                packed_weights.derived(weight, "test", weight.detach().clone)
            dead.append(dead)  # a cycle: only a collection frees it
            del dead, weight
            gc.enable()
            gc.set_threshold(gc.get_count()[0] + allocations)
            packed_weights.drop_stale(weights)
            gc.set_threshold(*thresholds)
    finally:
        gc.enable()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    gc.collect()
    assert not [key for key in packed_weights._copies if key[1] == "test"]  # every dead one dropped
    live.to(torch.bfloat16)
    assert {p.dtype for p in live.parameters()} == {torch.bfloat16}
