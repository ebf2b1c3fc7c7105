"""Weight-only int8/int4 quantization (models/quantize.py): products within the quantization's own
error, generate on the bound path with the modules' tokens, the saved format's round trip, the
arguments' errors, and no process-wide change."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import (REPO, TINY, TINY_GPT, fresh_kernel_choices, hubconf, models, need_compiler, need_kernel,
                      need_shared_data, peak_script, repo_module)
from test_process_state import Sampler

quantize = repo_module("models.quantize")
generation = repo_module("models.generation")
errors = repo_module("errors")
route_choice = repo_module("models.route_choice")

SCHEMES = [("int8", 32), ("int4", 32)]


def build(family: str = "gpt2", dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    if family == "gpt2":
        model = models.GPT2LMHeadModel(models.GPT2Config(**TINY))
    else:
        model = models.OpenAIGPTLMHeadModel(models.OpenAIGPTConfig(**TINY_GPT))
    return model.to(dtype).eval()


def dequantized(layer) -> torch.Tensor:
    """The float weight ``[out, in]`` the layer stands for, from its checkpoint form."""
    q, scales = layer.values()
    if layer.scheme == "int8":
        return q.float() * scales.float()[:, None]
    return q.float() * scales.float().repeat_interleave(layer.group_size, 1)


@pytest.mark.parametrize("scheme, group_size", [("int8", 32), ("int4", 32), ("int4", 128)])
@pytest.mark.parametrize("rows", [1, 8, 100])  # 3, 24, 300 rows: int8 from 16, int4 from 48 widened (quantize.py)
@pytest.mark.parametrize("shape", [(256, 48), (128, 96)])  # [in, out]; 96 and 48 pad to the int4 kernel's 16s
def test_products_equal_the_dequantized_reference_within_the_quantization_error(scheme, group_size, rows, shape):
    torch.manual_seed(0)
    weight = torch.randn(shape[1], shape[0]) * 0.02  # [out, in]
    bias = torch.randn(shape[1]) * 0.02
    layer = quantize.QuantizedLinear.of(weight, bias, scheme, group_size).eval()
    x = torch.randn(rows, 3, shape[0])
    with torch.no_grad():
        got = layer(x)
    reference = torch.nn.functional.linear(x.bfloat16().float(), dequantized(layer), bias)
    assert got.shape == (rows, 3, shape[1]) and got.dtype == torch.float32
    # the kernel's own rounding (bfloat16 results) only
    torch.testing.assert_close(got, reference, rtol=1e-2, atol=1e-2 * reference.abs().max().item())
    # the quantization's error: half a step per weight at most, but for int4's values clamped at
    # +7 (q4_0's scale maps the largest magnitude to -8), which are within one step
    q, step = layer.values()
    step = (step.float()[:, None] if scheme == "int8" else step.float().repeat_interleave(group_size, 1)).abs()
    error = (dequantized(layer) - weight).abs()
    # the scale is bfloat16 (relative error up to 2^-9): |w| / |scale| may reach 8 / (1 - 2^-9)
    assert ((error <= step / 2 + 1e-6) | ((q == 7) & (error <= step * (1 + 2 ** -5)))).all()
    if scheme == "int4":  # every group's largest magnitude is exactly -8 steps
        assert (q.view(q.size(0), -1, group_size) == -8).any(-1).all()


@pytest.mark.parametrize("forced", ["wide", "narrow", "torch", None])
def test_a_few_int8_rows_take_the_fastest_measured_of_the_native_few_row_kernels_and_pytorchs(monkeypatch, tmp_path, forced):
    """A batch's step of int8 rows ran through PyTorch's int8 kernel (batch 8 at 1.31x Hugging
    Face's float32 on an Intel Xeon); from 2 to ``kernels.FEW_ROWS`` rows the native few-row
    kernel of each build is now a candidate, measured per bucket of rows, and gives the same
    products within the kernels' rounding."""
    need_kernel(forced or "narrow")
    fresh_kernel_choices(monkeypatch, tmp_path, forced)
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 256) * 0.02, torch.randn(96) * 0.02
    layer = quantize.QuantizedLinear.of(weight, bias, "int8", 32).eval()
    product = layer.bind()
    for rows in (2, 5, 8, 33):
        x = torch.randn(rows, 256)
        with torch.no_grad():
            got = product(x)
        reference = torch.nn.functional.linear(x, dequantized(layer), bias)
        torch.testing.assert_close(got, reference, rtol=1e-2, atol=1e-2 * reference.abs().max().item())
    found = {key[-2]: names for key, names in route_choice._chosen.items() if key[0] == "rows"}  # [-1]: threads
    assert sorted(found) == [2, 8]  # 5 rows are measured at 8; 33 take PyTorch's kernel unmeasured
    assert all(names == (forced,) if forced else set(names) <= {"torch", "wide", "narrow"} for names in found.values())


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_many_rows_widen_a_few_output_rows_at_a_time_and_give_the_whole_product(monkeypatch, scheme):
    """The widened weight is made ``kernels.WIDENED_AT_ONCE`` output rows at a time (a bounded copy):
    16 here, so 40 outputs take three pieces, the last a part of a tile."""
    torch.manual_seed(0)
    weight, bias = torch.randn(40, 256) * 0.02, torch.randn(40) * 0.02
    layer = quantize.QuantizedLinear.of(weight, bias, scheme, 32).eval()
    x = torch.randn(300, 256)
    with torch.no_grad():
        whole = layer(x)
        monkeypatch.setattr(repo_module("models.kernels"), "WIDENED_AT_ONCE", 16)
        pieces = layer(x)
    reference = torch.nn.functional.linear(x.bfloat16().float(), dequantized(layer), bias)
    torch.testing.assert_close(pieces, reference, rtol=1e-2, atol=1e-2 * reference.abs().max().item())
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-6)


WIDENED_PEAK = """
    quantize = importlib.import_module(package + ".models.quantize")
    torch.manual_seed(0)
    layer = quantize.QuantizedLinear.of(torch.randn(50257, 768, dtype=torch.bfloat16) * 0.02, None, "int8", 32).eval()
    x = torch.randn(1024, 768, dtype=torch.bfloat16)
    with torch.no_grad():
        layer(x[:16])  # warm-up: the kernels' own first allocations are not the product's
        growth = growth_from_here()
        y = layer(x)
        print(y.nbytes, growth())
"""


def test_a_widened_product_of_many_rows_holds_little_beside_its_result(tmp_path):
    """GPT-2's head over 1024 rows of bfloat16 activations (a 98 MB result): the scales were applied
    to the whole result in float32, four times its memory at the peak."""
    size, grown = peak_script(tmp_path, WIDENED_PEAK)
    assert grown <= 1.5 * size + 32 * 2**20, (grown / 2**20, size / 2**20)


@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
def test_int4_widened_from_the_native_tiles_is_each_value_times_its_scale(group_size):
    """What many rows' bfloat16 product reads: the tiles' values times their scales, rounded once."""
    need_compiler()
    torch.manual_seed(0)
    layer = quantize.QuantizedLinear.of(torch.randn(40, 256) * 0.02, None, "int4", group_size)  # 40: tiles of 16 padded
    q, scales = layer.values()
    products = repo_module("models.native.products")
    expected = (q.float() * scales.float().repeat_interleave(group_size, 1)).bfloat16()
    assert torch.equal(products.int4_widened(*layer.native, 0, 40, group_size), expected)
    assert torch.equal(products.int4_widened(*layer.native, 16, 24, group_size), expected[16:])  # a part, C's
    for first, rows in ((8, 8), (32, 17), (-16, 8)):  # not on a tile, past the tiles' 48 rows, before them
        with pytest.raises(errors.InvalidArgumentError, match="hold no rows"):
            products.int4_widened(*layer.native, first, rows, group_size)


@pytest.mark.parametrize("family", ["gpt2", "gpt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scheme, group_size", SCHEMES)
def test_generate_takes_the_bound_path_and_gives_the_modules_tokens(family, dtype, scheme, group_size):
    model = build(family, dtype)
    ids = torch.randint(1, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        before = model(ids).logits.float()
    assert model.quantize(scheme, group_size=group_size) is model
    assert type(model.lm_head) is quantize.QuantizedLinear
    assert model.get_input_embeddings().weight.dtype == dtype  # the embedding stays exact
    step = generation.step_function(model)
    assert step.func is generation._bound_logits
    bound = model.generate(ids, max_new_tokens=6)
    model.register_forward_hook(lambda *args: None)  # forces the modules' path
    assert generation.step_function(model).func is generation._module_logits
    assert torch.equal(model.generate(ids, max_new_tokens=6), bound)
    with torch.no_grad():
        after = model(ids).logits.float()
    bound = 0.05 if scheme == "int8" else 0.25  # tiny random weights: int4's error is large here
    assert (after - before).abs().max() < bound * before.abs().max()


@pytest.mark.parametrize("scheme, group_size", SCHEMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_and_load_round_trip_gives_identical_logits(tmp_path, scheme, group_size, dtype):
    model = build("gpt2", dtype).quantize(scheme, group_size)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "gpt_hub", "scheme": scheme, "group_size": group_size}
    loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype=dtype)
    assert loaded.quantization() == config["quantization_config"]
    ids = torch.randint(1, 96, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    again = models.GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype=dtype, quantize=scheme)
    assert torch.equal(again.generate(ids, max_new_tokens=4), model.generate(ids, max_new_tokens=4))
    layer = loaded.transformer.h[0].mlp.c_fc
    assert torch.equal(layer.values()[0], model.transformer.h[0].mlp.c_fc.values()[0])


def test_the_saved_tensors_have_the_documented_names_shapes_and_values(tmp_path):
    model = build("gpt2").quantize("int4", group_size=32)
    model.save_pretrained(tmp_path)
    saved = repo_module("models.checkpoint").load_weights(str(tmp_path / "model.safetensors"), None)
    c_fc = model.transformer.h[0].mlp.c_fc
    qweight, scales = saved["transformer.h.0.mlp.c_fc.qweight"], saved["transformer.h.0.mlp.c_fc.scales"]
    assert qweight.dtype == torch.uint8 and list(qweight.shape) == [128, 16]  # [out, in / 2]
    assert scales.dtype == torch.bfloat16 and list(scales.shape) == [128, 1]  # [out, in / 32]
    assert torch.equal(quantize.unpack_nibbles(qweight), c_fc.values()[0])
    assert "transformer.wte.weight" in saved and "lm_head.qweight" in saved and "lm_head.weight" not in saved


def test_from_pretrained_and_the_entrypoints_quantize(tmp_path):
    build("gpt2").save_pretrained(tmp_path)
    ids = torch.randint(1, 96, (1, 6))
    direct = build("gpt2").quantize("int8")
    for model in (models.GPT2LMHeadModel.from_pretrained(tmp_path, quantize="int8"),
                  hubconf.gpt2LMHeadModel(str(tmp_path), quantize="int8")):
        assert model.quantization()["scheme"] == "int8"
        assert torch.equal(model.generate(ids, max_new_tokens=4), direct.generate(ids, max_new_tokens=4))
    fresh = hubconf.gpt2LMHeadModel("gpt2", pretrained=False, quantize="int4", n_layer=1, n_embd=64, n_head=2,
                                    vocab_size=64)
    assert type(fresh.lm_head) is quantize.QuantizedLinear and fresh.lm_head.scheme == "int4"


def test_bad_arguments_are_library_errors(tmp_path):
    model = build("gpt2")
    for bad in ("int2", "INT8", 8, None):
        with pytest.raises(errors.InvalidArgumentError, match="quantize"):
            models.GPT2LMHeadModel.from_pretrained(tmp_path, quantize=bad) if bad is not None else model.quantize(bad)
    with pytest.raises(errors.InvalidArgumentError, match="group_size"):
        model.quantize("int4", group_size=48)
    with pytest.raises(errors.InvalidArgumentError, match="group_size=64 must divide"):
        model.quantize("int4", group_size=64)  # n_embd is 32
    assert "Conv1D" in {type(m).__name__ for m in model.modules()}  # refused before any change
    with pytest.raises(errors.InvalidArgumentError, match="float32 or bfloat16"):
        build("gpt2", torch.float16).quantize("int8")
    model.quantize("int8")
    with pytest.raises(errors.InvalidArgumentError, match="already quantized"):
        model.quantize("int4")
    with pytest.raises(errors.InvalidArgumentError, match="resize_token_embeddings"):
        model.resize_token_embeddings(100)
    model.save_pretrained(tmp_path)
    with pytest.raises(errors.InvalidArgumentError, match="saved quantized as int8"):
        models.GPT2LMHeadModel.from_pretrained(tmp_path, quantize="int4")
    model.train()
    with pytest.raises(quantize.QuantizedUseError, match="inference") as raised:
        model(torch.ones(1, 3, dtype=torch.long))
    assert isinstance(raised.value, errors.GPTHubError) and isinstance(raised.value, RuntimeError)
    model.eval()
    embeds = torch.randn(1, 3, 32, requires_grad=True)
    with pytest.raises(quantize.QuantizedUseError, match="gradients"):
        model(inputs_embeds=embeds)
    assert not any(p.requires_grad for p in model.parameters())


def test_a_shared_config_is_not_marked_quantized_for_the_other_model():
    config = models.GPT2Config(**TINY)
    first, second = models.GPT2LMHeadModel(config), models.GPT2LMHeadModel(config)
    first.quantize("int8")
    assert first.config.quantization_config["scheme"] == "int8" and first.transformer.config is first.config
    assert second.quantization() is None and "quantization_config" not in config.extra
    second.quantize("int4")


def test_the_other_layers_are_left_alone():
    model = models.GPT2DoubleHeadsModel(models.GPT2Config(**TINY)).eval().quantize("int8")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Conv1D" not in kinds and "QuantizedLinear" in kinds
    assert type(model.multiple_choice_head.summary) is torch.nn.Linear  # the task head stays float
    with torch.no_grad():
        out = model(torch.ones(1, 2, 4, dtype=torch.long))
    assert out.mc_logits.shape == (1, 2)


def test_quantizing_loading_and_generating_change_nothing_another_thread_sees(tmp_path):
    build("gpt2").save_pretrained(tmp_path)
    with Sampler() as sampler:
        for scheme in ("int8", "int4"):
            model = models.GPT2LMHeadModel.from_pretrained(tmp_path, quantize=scheme)
            model.generate(torch.randint(1, 96, (2, 5)), max_new_tokens=6)
            model.save_pretrained(tmp_path / scheme)
            models.GPT2LMHeadModel.from_pretrained(tmp_path / scheme).generate(torch.ones(1, 2, dtype=torch.long))
    assert sampler.readings > 10, sampler.readings
    assert sampler.changes == []


def test_the_command_line_generates_with_quantize(tmp_path):
    example = repo_module("cli.example")
    checkpoint = example.build_example_checkpoint(tmp_path / "gpt2", "gpt2", need_shared_data() / "gpt2")
    tokenizer = repo_module("tokenizers").GPT2Tokenizer.from_pretrained(checkpoint)
    model = models.GPT2LMHeadModel.from_pretrained(checkpoint, quantize="int8")
    prompt = "The meaning of life is"
    ids = torch.tensor([tokenizer.encode(prompt)])
    expected = model.generate(ids, max_new_tokens=5, eos_token_id=tokenizer.eos_token_id)
    result = subprocess.run([sys.executable, str(REPO / "hubconf.py"), "generate", "--model", str(checkpoint),
                             "--prompt", prompt, "--max-new-tokens", "5", "--quantize", "int8"],
                            capture_output=True, text=True, cwd=REPO.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout == prompt + tokenizer.decode(expected[0, ids.size(1):].tolist()) + "\n"
    bad = subprocess.run([sys.executable, str(REPO / "hubconf.py"), "score", "--model", str(checkpoint), "f.txt",
                          "--quantize", "int3"], capture_output=True, text=True, cwd=REPO.parent)
    assert bad.returncode == 2 and "--quantize" in bad.stderr


@pytest.mark.parametrize("convert", ["float", "half", "bfloat16", "meta"])
def test_a_quantized_model_refuses_conversions_whole(convert):
    """``to``, ``half()``, ``cuda()``... moved the float parameters and left the quantized values
    and scales (attributes) as they were: generate then failed inside a kernel. Now refused before
    anything moves, naming why."""
    model = build("gpt2", torch.bfloat16 if convert == "float" else torch.float32).quantize("int8")
    before = {name: (t.dtype, t.device) for name, t in model.state_dict().items()}
    ids = torch.tensor([[1, 2, 3]])
    expected = model.generate(ids, max_new_tokens=4)
    with pytest.raises(errors.InvalidArgumentError, match="quantized model runs on the CPU"):
        model.to("meta") if convert == "meta" else getattr(model, convert)()
    for part in (model.lm_head, model.transformer.h[1]):  # a block converted its layer norms first
        with pytest.raises(errors.InvalidArgumentError, match="quantized model runs on the CPU"):
            part.to("meta") if convert == "meta" else getattr(part, convert)()
    assert {name: (t.dtype, t.device) for name, t in model.state_dict().items()} == before
    assert torch.equal(model.generate(ids, max_new_tokens=4), expected)
    model.cpu().share_memory()  # what changes nothing is taken
