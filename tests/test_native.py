"""The native one-row kernels (models/native) and the choice between them and PyTorch's
(models/route_choice.py): each build's results against float64 references (the AVX-512, AVX2 and
plain-C paths, each compiled here), the checks before each call, compiling and caching (atomic,
keyed, rebuilt when damaged, absent without a compiler), and models on every route agreeing."""

from __future__ import annotations

import json
import logging
import shutil
import threading

import pytest
import torch
from conftest import TINY, models, need_compiler, need_kernel, repo_module

build = repo_module("models.native.build")
products = repo_module("models.native.products")
route_choice = repo_module("models.route_choice")
kernels = repo_module("models.kernels")
quantize = repo_module("models.quantize")

# Builds of the same source: what -march=native gives here, AVX2 at most, AVX2 without the
# VNNI/AVX-512 instructions (llama.cpp's older int4 path), AVX-512 without VNNI (int4 on 16-bit
# pair sums), and no vector extension at all (int4 on floats). Each runs here only where this CPU has its instructions.
BUILDS = {
    "native": build.BASE_FLAGS,
    "narrow": build.BASE_FLAGS + build.VARIANTS["narrow"],
    "haswell": tuple(f for f in build.BASE_FLAGS if f != "-march=native") + ("-march=haswell",),
    "skylake": tuple(f for f in build.BASE_FLAGS if f != "-march=native") + ("-march=skylake-avx512",),
    "plain": tuple(f for f in build.BASE_FLAGS if f != "-march=native") + ("-march=x86-64", "-mno-sse3"),
}


NEEDS = {"haswell": {"avx2", "fma"}, "skylake": {"avx512f", "avx512bw", "avx512vl", "avx512dq"}}


def cpu_flags() -> frozenset[str]:
    return build.cpu_flags() or frozenset()


class Builds(dict):
    """The builds by name, each compiled on first ask; one whose instructions this CPU lacks skips."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def __missing__(self, name):
        lacking = NEEDS.get(name, set()) - cpu_flags()
        if lacking:
            pytest.skip(f"this CPU lacks {', '.join(sorted(lacking))}: the {name} build cannot run here")
        self[name] = build.load(BUILDS[name], self.folder)
        return self[name]


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    need_compiler()
    return Builds(tmp_path_factory.mktemp("builds"))


def call(lib, name, x, weight, scale, bias, out, group=0):
    """A kernel called directly (as products.py does), its result."""
    fn = getattr(lib, name)
    fn.argtypes = [products._POINTER] * 5 + [products._SIZE] * 3 + [products._INT] * 2
    y = torch.empty(out, dtype=x.dtype)
    pointer = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    assert fn(x.data_ptr(), weight.data_ptr(), pointer(scale), pointer(bias), y.data_ptr(), x.numel(), out, group,
              products.ACTIVATIONS[x.dtype], 2) == 0
    return y


def assert_close_to(got, want, dtype):
    tolerance = 1e-5 if dtype == torch.float32 else 2 ** -7  # float32 sums in another order; one bfloat16 step
    scale = want.abs().max().item()
    assert (got.double() - want).abs().max().item() <= tolerance * scale + 1e-6


@pytest.mark.parametrize("build_name", list(BUILDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(77, 301), (256, 64), (3, 5)])  # [in, out]: tails, whole vectors, tiny
def test_float_kernels_against_float64(libraries, build_name, dtype, shape):
    torch.manual_seed(0)
    n_in, n_out = shape
    x, w, b = torch.randn(n_in).to(dtype), torch.randn(n_in, n_out).to(dtype), torch.randn(n_out).to(dtype)
    want = x.double() @ w.double() + b.double()
    lib = libraries[build_name]
    suffix = "f32" if dtype == torch.float32 else "bf16"
    assert_close_to(call(lib, f"gemv_cols_{suffix}", x, w, None, b, n_out), want, dtype)
    assert_close_to(call(lib, f"gemv_rows_{suffix}", x, w.t().contiguous(), None, b, n_out), want, dtype)
    assert_close_to(call(lib, f"gemv_rows_{suffix}", x, w.t().contiguous(), None, None, n_out), want - b.double(), dtype)


@pytest.mark.parametrize("build_name", list(BUILDS))
@pytest.mark.parametrize("rows", [1, 3, 8, 17])
@pytest.mark.parametrize("shape", [(77, 301), (256, 64), (3, 5)])  # [in, out]: tails, whole vectors, tiny
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_few_row_kernels_against_float64(libraries, build_name, rows, shape, dtype):
    """Several rows against a weight of either layout (decode.c's ``few_*``: ``group`` is the
    number of rows), eight rows a pass and the rest after, in tiles of one or more vectors of
    outputs and the outputs past them; the columns' kernel splits the inputs between threads."""
    torch.manual_seed(0)
    n_in, n_out = shape
    x = torch.randn(rows, n_in).to(dtype)
    w, b = torch.randn(n_in, n_out).to(dtype), torch.randn(n_out).to(dtype)
    want = x.double() @ w.double()
    lib = libraries[build_name]
    kind = "f32" if dtype == torch.float32 else "bf16"
    for name, weight in ((f"few_cols_{kind}", w), (f"few_rows_{kind}", w.t().contiguous())):
        fn = getattr(lib, name)
        fn.argtypes = [products._POINTER] * 5 + [products._SIZE] * 3 + [products._INT] * 2
        for bias in (b, None):
            y = torch.empty(rows, n_out, dtype=dtype)
            assert fn(x.data_ptr(), weight.data_ptr(), None, None if bias is None else bias.data_ptr(), y.data_ptr(),
                      n_in, n_out, rows, products.ACTIVATIONS[dtype], 2) == 0
            for row in range(rows):
                assert_close_to(y[row], want[row] + (0 if bias is None else b.double()), dtype)


@pytest.mark.parametrize("build_name", list(BUILDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_kernel_against_float64(libraries, build_name, dtype):
    torch.manual_seed(0)
    q = torch.randint(-127, 128, (301, 77), dtype=torch.int8)
    scales, x, b = torch.rand(301) / 100, torch.randn(77).to(dtype), torch.randn(301).to(dtype)
    want = (q.double() * scales.double()[:, None]) @ x.double() + b.double()
    assert_close_to(call(libraries[build_name], "gemv_int8", x, q, scales, b, 301), want, dtype)
    fn = getattr(libraries[build_name], "few_int8")  # several rows, eight a pass: group is the rows
    fn.argtypes = [products._POINTER] * 5 + [products._SIZE] * 3 + [products._INT] * 2
    for rows in (1, 3, 8, 17):
        xs = torch.randn(rows, 77).to(dtype)
        y = torch.empty(rows, 301, dtype=dtype)
        assert fn(xs.data_ptr(), q.data_ptr(), scales.data_ptr(), b.data_ptr(), y.data_ptr(), 77, 301, rows,
                  products.ACTIVATIONS[dtype], 2) == 0
        for row in range(rows):
            assert_close_to(y[row], (q.double() * scales.double()[:, None]) @ xs[row].double() + b.double(), dtype)


def int4_reference(x, q, scales, group, integer: bool):
    """The int4 product in float64: with x as the kernel sees it (quantized to int8 per block of 32
    on the integer path, round half away from zero), else exact."""
    x = x.double()
    if integer:
        blocks = x.view(-1, 32)
        step = blocks.abs().amax(-1, keepdim=True) / 127
        quantized = torch.where(step > 0, blocks / step, torch.zeros_like(blocks))
        x = (quantized.abs() + 0.5).floor().copysign(quantized).mul(step).view(-1)
    return (q.double() * scales.double().repeat_interleave(group, 1)) @ x


@pytest.mark.parametrize("build_name", list(BUILDS))
@pytest.mark.parametrize("group", [32, 64, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_kernel_against_float64(libraries, build_name, group, dtype):
    torch.manual_seed(0)
    n_in, n_out = 512, 37  # 37 rows: two whole tiles of 16 and part of a third
    q = torch.randint(-8, 8, (n_out, n_in), dtype=torch.int8)
    scales, x = (torch.rand(n_out, n_in // group) / 10).bfloat16(), torch.randn(n_in).to(dtype)
    tiles, kernel_scales = products.int4_tiles(q, scales)
    got = call(libraries[build_name], "gemv_int4", x, tiles, kernel_scales, None, n_out, group)
    integer = build_name != "plain"  # the build without integer dot products
    assert_close_to(got, int4_reference(x, q, scales, group, integer), dtype)


@pytest.mark.parametrize("build_name", list(BUILDS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_int4_kernel_gives_nan_for_a_nan_or_infinite_input(libraries, build_name, bad):
    q = torch.ones(4, 128, dtype=torch.int8)
    tiles, scales = products.int4_tiles(q, torch.ones(4, 4))
    x = torch.ones(128)
    x[40] = bad  # the second block of 32
    got = call(libraries[build_name], "gemv_int4", x, tiles, scales, None, 4, 32)
    assert torch.isnan(got).all(), got


def test_int4_tiles_layout():
    q = torch.arange(17 * 64, dtype=torch.int32).remainder(16).sub(8).to(torch.int8).view(17, 64)
    q[3] = torch.arange(64).remainder(13).sub(6)
    scales = torch.arange(17 * 2, dtype=torch.bfloat16).view(17, 2)
    tiles, tile_scales = products.int4_tiles(q, scales)
    assert tiles.shape == (2, 64 * 8) and tile_scales.shape == (2, 2 * 16)  # 17 rows: two tiles of 16
    assert tile_scales.dtype == torch.bfloat16
    for row, block, chunk, j in [(0, 0, 0, 0), (3, 1, 2, 3), (16, 1, 3, 1), (5, 0, 1, 2)]:
        byte = tiles[row // 16, block * 256 + chunk * 64 + (row % 16) * 4 + j].item()
        first = block * 32 + 4 * chunk + j  # its low nibble; the high one is 16 inputs on
        assert (byte & 15, byte >> 4) == (q[row, first] + 8, q[row, first + 16] + 8)
        assert tile_scales[row // 16, block * 16 + row % 16] == scales[row, block]
    assert (tiles[1, 4:64] == 8 | (8 << 4)).all() and (tile_scales[1, 1:16] == 0).all()  # padding rows: zeros


# -- the products' checks ------------------------------------------------------------------------

def test_a_product_refuses_inputs_it_was_not_made_for(narrow):
    weight = torch.randn(16, 8)
    product = products.float_product(narrow, weight, None, stored_in_out=False)
    assert product(torch.ones(1, 8)).shape == (1, 16)
    assert product(torch.ones(1, 1, 16)[..., ::2]).shape == (1, 1, 16)  # a strided row is copied
    for bad in (torch.ones(1, 8, dtype=torch.bfloat16), torch.ones(2, 8), torch.ones(1, 9)):
        with pytest.raises(ValueError, match="one torch.float32 CPU row of 8"):
            product(bad)
    with pytest.raises(ValueError, match="contiguous 2-D CPU weight"):
        products.float_product(narrow, weight.t(), None, stored_in_out=False)


def test_a_few_row_product_takes_any_rows_of_its_width_only(narrow):
    weight = torch.randn(16, 8).bfloat16()
    product = products.float_product(narrow, weight, None, stored_in_out=False, several_rows=True)
    x = torch.randn(2, 3, 8).bfloat16()
    assert torch.equal(product(x), torch.stack([product(row) for row in x]))  # [..., rows, in] as rows
    assert product(x[:, :0]).shape == (2, 0, 16)
    for bad in (torch.ones(2, 8), torch.ones(2, 9).bfloat16(), torch.ones(()).bfloat16()):
        with pytest.raises(ValueError, match="torch.bfloat16 CPU rows of 8 values"):
            product(bad)
    with pytest.raises(ValueError, match="contiguous 2-D CPU weight"):
        products.float_product(narrow, weight.half(), None, stored_in_out=False, several_rows=True)


def test_a_weight_given_other_memory_is_refused_not_read(narrow):
    weight = torch.nn.Parameter(torch.randn(16, 8), requires_grad=False)
    product = products.float_product(narrow, weight, None, stored_in_out=False)
    weight.data = torch.randn(4, 2)  # param.data = ...: the old memory may be gone
    with pytest.raises(ValueError, match="changed shape"):
        product(torch.ones(1, 8))


# -- building ------------------------------------------------------------------------------------

@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No build loaded yet in this process, and a folder of its own."""
    need_compiler()
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    return tmp_path


def test_a_build_is_kept_and_named_by_what_made_it(fresh, monkeypatch):
    monkeypatch.setattr(build, "cpu_flags", lambda: None)  # flags unknown: both builds, as on AVX-512
    assert build.library("narrow") is not None and build.library("wide") is not None
    names = sorted(p.name for p in fresh.iterdir())
    assert len(names) == 2 and all(name.startswith("decode-") and name.endswith(".so") for name in names)
    assert build.library_path(build.BASE_FLAGS, build.compiler(), fresh).name in names


def test_a_cpu_without_avx512_gets_no_wide_build(fresh, monkeypatch):
    """-march=native without AVX-512 compiles the wide build into the narrow one's code: it was
    built, and its kernels timed against their twins, on every AVX2-only CPU."""
    monkeypatch.setattr(build, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert build.library("wide") is None and not products.available("wide")
    assert build.library("narrow") is not None
    assert len(list(fresh.iterdir())) == 1
    monkeypatch.setattr(build, "cpu_flags", lambda: pytest.fail("/proc/cpuinfo read again"))  # asked on every product
    assert build.library("wide") is None and build.either_library() is build.library("narrow")
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setattr(build, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert build.builds_here("wide") and build.builds_here("narrow")


def test_a_damaged_build_is_rebuilt(fresh, caplog):
    path = build.library_path(build.BASE_FLAGS + build.VARIANTS["narrow"], build.compiler(), fresh)
    path.write_bytes(b"not a shared object")
    with caplog.at_level(logging.WARNING):
        assert build.library("narrow") is not None
    assert "rebuilding" in caplog.text and path.read_bytes()[:4] == b"\x7fELF"


def test_threads_asking_at_once_build_once(fresh):
    found = []
    threads = [threading.Thread(target=lambda: found.append(build.library("narrow"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(map(id, found))) == 1 and found[0] is not None
    assert [p.name for p in fresh.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("how", ["no compiler", "compiler fails", "switched off"])
def test_without_a_build_products_take_pytorchs_kernels(fresh, monkeypatch, caplog, how):
    if how == "no compiler":
        monkeypatch.setenv("CC", "no-such-compiler")
        monkeypatch.setattr(build.shutil, "which", lambda name: None)
    elif how == "compiler fails":
        monkeypatch.setenv("CC", shutil.which("false"))
    else:
        monkeypatch.setenv("GPT_HUB_NATIVE", "0")
    monkeypatch.setattr(route_choice, "_chosen", {})
    with caplog.at_level(logging.INFO):
        assert build.library("narrow") is None
        weight, x = torch.randn(8, 16), torch.randn(1, 8)
        with torch.no_grad():
            torch.testing.assert_close(kernels.linear(x, weight, None, stored_in_out=True), x @ weight)
    assert list(route_choice.chosen().values()) == ["torch"]
    assert [p for p in fresh.iterdir()] == []  # nothing half-written left behind
    if how != "switched off":
        assert "unavailable" in caplog.text


# -- the choice ----------------------------------------------------------------------------------

def test_a_choice_is_made_once_per_key_and_can_be_forced(monkeypatch, tmp_path):
    monkeypatch.setattr(route_choice, "_chosen", {})
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    built = []

    def candidates():
        built.append(1)
        return {"a": lambda x: x, "b": lambda x: x + 0}

    first = route_choice.ranking(("k",), candidates, 1 << 30, torch.ones(4))[0]
    assert first in ("a", "b") and len(built) == 1  # weights larger than any cache: one copy
    assert route_choice.ranking(("k",), candidates, 1 << 30, torch.ones(4))[0] == first and len(built) == 1
    monkeypatch.setenv("GPT_HUB_KERNEL", "b")
    assert route_choice.ranking(("other",), candidates, 1, torch.ones(4))[0] == "b" and len(built) == 2


def test_the_copies_timed_spill_even_a_300_mb_cache():
    """Candidates were timed on at most 256 MB of copies (and 64 of them): on a Xeon with 300 MB of
    last-level cache they were timed from the cache, while a float32 GPT-2 (500 MB) streams from
    memory, and PyTorch's route won there for every block shape."""
    mb = 1 << 20
    stream = route_choice.stream_bytes(300 * mb, 64 << 30)
    assert stream >= 600 * mb
    c_proj = 768 * 768 * 4  # GPT-2 small's smallest block weight in float32
    assert route_choice.copy_count(c_proj, stream) * c_proj >= 600 * mb


def test_the_copies_timed_fit_the_memory_there_is():
    mb = 1 << 20
    assert route_choice.stream_bytes(300 * mb, 800 * mb) == 100 * mb  # an eighth of what is available
    assert route_choice.stream_bytes(4 << 30, None) == 1 << 30  # at most 1 GB
    assert route_choice.stream_bytes(None, None) == 64 * mb  # an unknown cache: 32 MB assumed
    assert route_choice.stream_bytes(mb, 64 * mb) == 16 * mb  # at least 16 MB
    assert route_choice.copy_count(1 << 10, 1 << 30) == 8  # a toy model's weights: their calls cost
    assert route_choice.copy_count(1 << 30, 1 << 30) == 1
    assert [route_choice._sysfs_bytes(t) for t in ("32768K\n", "300M", "1G", "512")] == [32 * mb, 300 * mb, 1 << 30, 512]
    cache, available = route_choice._machine()  # this machine's, as Linux reports them
    assert available is None or available > 0
    assert cache is None or cache > 0


def fake_cpus(root, caches):
    """A sysfs cpu folder: CPU n's L1 data, L2 and L3, the L3 shared as ``caches[n]`` says."""
    for cpu, shared in enumerate(caches):
        for index, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                                     (2, "Unified", "2048K"), (3, "Unified", "32768K")]):
            folder = root / f"cpu{cpu}" / "cache" / f"index{index}"
            folder.mkdir(parents=True)
            for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
                (folder / name).write_text(f"{value}\n")


def test_the_cache_reached_counts_each_die_the_threads_run_on(tmp_path):
    """cpu0's L3 was taken for the whole machine's: on a multi-die AMD (a 32 MB L3 per die) two
    threads on two dies fill two of them, and the copies timed stayed in the caches."""
    fake_cpus(tmp_path, ["0-1", "0-1", "2-3", "2-3"])
    reach = lambda threads, cpus: route_choice.cache_reach(threads, frozenset(cpus), str(tmp_path))  # noqa: E731
    mb = 1 << 20
    assert reach(2, {0, 1, 2, 3}) == 64 * mb  # two dies, a thread on each
    assert reach(1, {0, 1, 2, 3}) == 32 * mb  # one thread fills one
    assert reach(2, {0, 1}) == 32 * mb  # the process kept to one die
    assert reach(2, {2, 3}) == 32 * mb
    assert route_choice.cache_reach(2, frozenset({0}), str(tmp_path / "absent")) is None


def test_a_containers_memory_limit_bounds_the_copies_timed(tmp_path):
    """MemAvailable is the host's: in a container with 2 GB, a Xeon's cache asked for 600 MB of copies
    and as many transposed ones, and going past the limit kills the process."""
    memory = repo_module("models.memory")
    gb = 1 << 30
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {512 << 20} kB\nMemAvailable: {500 << 20} kB\n")
    v2, v1 = (tmp_path / "max", tmp_path / "current"), (tmp_path / "limit", tmp_path / "usage")
    v2[0].write_text(f"{2 * gb}\n")
    v2[1].write_text(f"{gb + gb // 2}\n")
    v1[0].write_text("9223372036854771712\n")  # v1's "no limit"
    v1[1].write_text(f"{gb}\n")
    paths = tuple((str(limit), str(usage)) for limit, usage in (v2, v1))
    assert memory.available_memory(str(meminfo), paths) == gb // 2
    assert route_choice.stream_bytes(300 << 20, gb // 2) == 64 << 20
    v2[0].write_text("max\n")
    assert memory.available_memory(str(meminfo), paths) == 500 * gb
    assert memory.available_memory(str(tmp_path / "none"), ()) is None


@pytest.mark.parametrize("gain, first", [(1.05, "plain"), (1.25, "copying")])
def test_a_copy_of_the_weight_is_kept_only_for_a_clear_gain(monkeypatch, tmp_path, gain, first):
    """A candidate that keeps a transposed copy (the model's weights twice over) was ranked first for
    any gain, a tie within noise included."""
    monkeypatch.setattr(route_choice, "_chosen", {})
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    costs = {"plain": 1.0, "copying": 1.0 / gain}  # seconds per call
    monkeypatch.setattr(route_choice, "_seconds", lambda products, x: sum(p(x) for p in products))
    candidates = lambda: {name: (lambda x, c=cost: c) for name, cost in costs.items()}  # noqa: E731
    assert route_choice.ranking(("k", gain), candidates, 1 << 30, torch.ones(4), copying=frozenset({"copying"}))[0] == first


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_ranking_whose_first_cannot_be_built_runs_its_next(monkeypatch, narrow, dtype):
    """A weight made under inference mode keeps no transposed copy, so a ranking led by a "-rows"
    kernel could not build it there; PyTorch's route ran instead of the next, a native kernel."""
    monkeypatch.setattr(kernels, "_ranking", lambda *args: ("narrow-rows", "narrow", "torch"))
    with torch.inference_mode():
        weight, bias, x = torch.randn(64, 48, dtype=dtype), torch.randn(48, dtype=dtype), torch.randn(1, 64, dtype=dtype)
        route = kernels.native_route(weight, bias, stored_in_out=True)
        assert route is not None and kernels._route(weight, bias, True, one_row=True) is not None
        assert_close_to(route(x), (x.double() @ weight.double() + bias.double()), dtype)


@pytest.mark.parametrize("kernel", ["torch", "wide", "narrow", "wide-rows", "narrow-rows"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_models_generate_alike_on_every_kernel(monkeypatch, narrow, kernel, dtype):
    if kernel != "torch":
        need_kernel(kernel)
    torch.manual_seed(0)
    model = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).to(dtype).eval()
    prompt = torch.randint(0, TINY["vocab_size"], (1, 5))
    with torch.no_grad():
        monkeypatch.setattr(route_choice, "_chosen", {})
        monkeypatch.setenv("GPT_HUB_KERNEL", "torch")
        want_logits = model(prompt[:, :1]).logits
        monkeypatch.setattr(route_choice, "_chosen", {})
        monkeypatch.setenv("GPT_HUB_KERNEL", kernel)
        got_logits = model(prompt[:, :1]).logits  # one row: the forced kernel wherever it exists
        tokens = model.generate(prompt, max_new_tokens=8)
    assert_close_to(got_logits, want_logits.double(), dtype)
    assert set(route_choice.chosen().values()) <= {kernel, "torch"} if "-" not in kernel else \
        kernel in route_choice.chosen().values()  # the "-rows" kernels exist for [in, out] weights only
    if kernel == "torch" or dtype == torch.float32:
        monkeypatch.setattr(route_choice, "_chosen", {})
        monkeypatch.setenv("GPT_HUB_KERNEL", "torch")
        assert torch.equal(model.generate(prompt, max_new_tokens=8), tokens)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_models_on_native_kernels_stay_within_their_error(monkeypatch, narrow, scheme):
    torch.manual_seed(0)
    config = models.GPT2Config(**{**TINY, "n_embd": 128})
    model = models.GPT2LMHeadModel(config).eval().quantize(scheme)
    prompt = torch.randint(0, config.vocab_size, (1, 1))
    with torch.no_grad():
        results = {}
        for kernel in ("torch", "narrow"):
            monkeypatch.setattr(route_choice, "_chosen", {})
            monkeypatch.setenv("GPT_HUB_KERNEL", kernel)
            results[kernel] = model(prompt).logits
            assert set(route_choice.chosen().values()) == {kernel}
    want, got = results["torch"], results["narrow"]
    assert (got - want).abs().max() <= 0.02 * want.abs().max()


def test_a_choice_is_kept_on_disk_for_the_next_process(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(route_choice, "_chosen", {})
    built = []

    def candidates():
        built.append(1)
        return {"a": lambda x: x, "b": lambda x: x + 0}

    order = route_choice.ranking(("kept",), candidates, 1 << 30, torch.ones(4))
    first = order[0]
    assert sorted(order) == ["a", "b"]
    [record] = tmp_path.glob("choices-*.json")
    assert json.loads(record.read_text()) == {f"kept {torch.get_num_threads()}": " ".join(order)}
    monkeypatch.setattr(route_choice, "_chosen", {})  # a new process, as far as memory goes
    assert route_choice.ranking(("kept",), candidates, 1 << 30, torch.ones(4)) == order and len(built) == 1
    monkeypatch.setattr(route_choice, "_chosen", {})
    monkeypatch.setenv("GPT_HUB_KERNEL", "b" if first == "a" else "a")  # forcing wins over the file
    assert route_choice.ranking(("kept",), candidates, 1 << 30, torch.ones(4))[0] != first


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"kept 2": 7}', b""])
def test_a_damaged_choices_file_is_measured_again_and_rewritten(monkeypatch, tmp_path, damage):
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(route_choice, "_chosen", {})
    record = route_choice._record()
    record.write_bytes(damage)
    built = []

    def candidates():
        built.append(1)
        return {"a": lambda x: x, "b": lambda x: x + 0}

    choice = route_choice.ranking(("kept",), candidates, 1 << 30, torch.ones(4))[0]
    assert built and json.loads(record.read_text())[f"kept {torch.get_num_threads()}"].split()[0] == choice


def test_a_folder_that_cannot_be_written_keeps_choices_in_memory(monkeypatch, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(blocker / "native"))  # below a file: cannot be made
    monkeypatch.setattr(route_choice, "_chosen", {})
    choice = route_choice.ranking(("k",), lambda: {"a": lambda x: x, "b": lambda x: x}, 1 << 30, torch.ones(4))[0]
    assert choice in ("a", "b") and route_choice.ranking(("k",), None, 1 << 30, torch.ones(4))[0] == choice


@pytest.mark.parametrize("kernel", ["torch", "narrow-rows"])  # oneDNN's packed copy; the transposed one
def test_a_weight_given_new_memory_gets_new_copies(monkeypatch, narrow, kernel):
    monkeypatch.setattr(route_choice, "_chosen", {})
    monkeypatch.setenv("GPT_HUB_KERNEL", kernel)
    weight = torch.nn.Parameter(torch.randn(64, 48, dtype=torch.bfloat16), requires_grad=False)  # [in, out]
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        kernels.linear(x, weight, None, stored_in_out=True)  # makes the copy
        weight.data = torch.randn(64, 48, dtype=torch.bfloat16)  # same id and version, other memory
        got = kernels.linear(x, weight, None, stored_in_out=True)
    assert_close_to(got, x.double() @ weight.double(), torch.bfloat16)


def test_choices_made_under_inference_mode_time_the_routes_that_run(monkeypatch, tmp_path, narrow):
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(route_choice, "_chosen", {})
    seen = []
    real = route_choice._seconds

    def seconds(products, x):
        seen.append(len(products))
        return real(products, x)

    monkeypatch.setattr(route_choice, "_seconds", seconds)
    weight = torch.randn(64, 48, dtype=torch.bfloat16)  # [in, out]
    names = []
    original = kernels._candidates

    def candidates(*args):
        found = original(*args)
        names.append(sorted(found))
        return found

    monkeypatch.setattr(kernels, "_candidates", candidates)
    with torch.inference_mode():
        kernels.linear(torch.randn(1, 64, dtype=torch.bfloat16), weight, None, stored_in_out=True)
    assert names and all("narrow-rows" in found for found in names)  # transposed copies made for the timing


def test_an_unknown_kernel_in_the_choices_file_falls_back_to_pytorch(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT_HUB_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(route_choice, "_chosen", {})
    weight, x = torch.randn(64, 48), torch.randn(1, 64)
    key = " ".join(map(str, ("float", torch.float32, True, 64, 48, torch.get_num_threads())))
    route_choice._record().write_text(json.dumps({key: "from-a-future-version"}))
    with torch.no_grad():
        torch.testing.assert_close(kernels.linear(x, weight, None, stored_in_out=True), x @ weight)
