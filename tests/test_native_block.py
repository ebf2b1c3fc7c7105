"""The whole block in one native call (models/native/block.py, block.c) for batch-1 decoding steps:
the same results as the functional code's block on the same product kernels (both families,
float32 and bfloat16, int8 and int4), the cache written alike, the cases it leaves to the
functional code, and the checks before each call."""

from __future__ import annotations

import pytest
import torch
from conftest import models, need_compiler, need_kernel, repo_module

block_module = repo_module("models.native.block")
decoder_module = repo_module("models.native.decoder")
kv_cache = repo_module("models.kv_cache")
generation = repo_module("models.generation")

WIDE = dict(vocab_size=64, n_positions=64, n_embd=128, n_layer=2, n_head=4)
STEPS = 56  # from 48 positions on, attention runs on all threads


@pytest.fixture(autouse=True)
def _same_products(monkeypatch):
    """Both paths on the same native product kernels: only what is around the products differs."""
    need_compiler()
    monkeypatch.setenv("GPT_HUB_KERNEL", "narrow")
    monkeypatch.setattr(repo_module("models.route_choice"), "_chosen", {})


def model_of(family: str, kind: str, **overrides):
    torch.manual_seed(0)
    if family == "gpt2":
        model = models.GPT2LMHeadModel.from_config(models.GPT2Config(**{**WIDE, **overrides}))
    else:
        model = models.OpenAIGPTLMHeadModel.from_config(models.OpenAIGPTConfig(**{**WIDE, **overrides}))
    model.eval()
    for p in model.parameters():  # larger than the init's, so that rounding differences would show
        p.data.normal_(0, 0.2) if p.dim() > 1 else p.data.normal_(0, 0.5)
    if kind in ("int8", "int4"):
        return model.quantize(kind)
    return model.to(getattr(torch, kind))


def steps(block, layer_cache, xs):
    """Each x through ``block`` at the next position of ``layer_cache``; the outputs stacked."""
    outs = []
    for x in xs:
        outs.append(block(x, None, layer_cache)[0])
        layer_cache.cache.length += 1
    return torch.cat(outs)


@pytest.mark.parametrize("family", ["gpt2", "openai-gpt"])
@pytest.mark.parametrize("kind", ["float32", "bfloat16", "int8", "int4"])
@pytest.mark.parametrize("kernels", ["narrow", "wide"])  # wide: AVX-512 (VNNI, BF16) where the CPU has it
def test_the_native_block_gives_the_functional_blocks_results(monkeypatch, family, kind, kernels):
    need_kernel(kernels)
    monkeypatch.setenv("GPT_HUB_KERNEL", kernels)
    assert_native_blocks_match(model_of(family, kind), kind)


@pytest.mark.parametrize("n_embd", [256, 96, 80])  # heads of 64 (GPT-2's), 24 and 20 values: 4 vectors, 1, a rest
@pytest.mark.parametrize("kernels", ["narrow", "wide"])
def test_heads_of_any_width_attend_as_the_functional_code_does(monkeypatch, n_embd, kernels):
    need_kernel(kernels)
    monkeypatch.setenv("GPT_HUB_KERNEL", kernels)
    assert_native_blocks_match(model_of("gpt2", "float32", n_embd=n_embd), "float32")


def assert_native_blocks_match(model, kind):
    """Each block's native step against its functional one over STEPS positions, within what
    ``kind``'s rounding allows; the caches they fill too."""
    dtype = torch.float32 if kind.startswith("int") else getattr(torch, kind)
    width = model.config.n_embd
    with torch.no_grad():
        for layer, block in enumerate(model.transformer.h):
            step = block.bind()
            native = block._native_step()
            assert native is not None, "every part of this block has a native form"
            xs = [torch.randn(1, 1, width).to(dtype) for _ in range(STEPS)]
            caches = [kv_cache.StaticKVCache.for_model(model, 1, STEPS) for _ in range(2)]
            got = steps(lambda x, mask, lc: (native(x, lc),), caches[0][layer], xs)
            want = steps(step.python, caches[1][layer], xs)
            assert step(xs[0], None, kv_cache.StaticKVCache.for_model(model, 1, 4)[layer])[0].shape == (1, 1, width)
            got, want = got.float(), want.float()
            if kind == "bfloat16":  # rounded where the functional code rounds: a value at most one step off
                assert ((got - want).abs() <= want.abs() * 2 ** -7 + 1e-6).all()
            else:  # float32 and int8: the order of sums, exp and tanh; int4: also an activation's int8
                tolerance = 2 ** -6 if kind == "int4" else 2e-5  # quantization may round the other way
                assert (got - want).abs().max().item() <= tolerance * want.abs().max().item()
            scale = want.abs().max().item()
            assert torch.allclose(caches[0].keys_values[layer], caches[1].keys_values[layer], rtol=0,
                                  atol=2 ** -6 * scale)  # this layer's positions


@pytest.mark.parametrize("family", ["gpt2", "openai-gpt"])
@pytest.mark.parametrize("kind", ["float32", "bfloat16", "int4"])
def test_generate_runs_the_native_body_and_the_modules_give_its_logits(monkeypatch, family, kind):
    """generate's steps run the embeddings and blocks in one native call (models/native/decoder.py),
    its greedy ones on through the final norm, the head and the argmax; the modules' forward runs
    each block's native step after PyTorch's embeddings, then the same final norm and head: the
    same logits, bit for bit (the embeddings' sum rounds alike), and generate's tokens their argmax."""
    model = model_of(family, kind)
    calls = []
    real = decoder_module.NativeGreedy.run
    monkeypatch.setattr(decoder_module.NativeGreedy, "run",
                        lambda self, ids, c, steps: calls.append(steps) or real(self, ids, c, steps))
    prompt = torch.tensor([[5, 9, 11]])
    out = model.generate(prompt, max_new_tokens=6)
    assert calls == [5]  # the new tokens after the first, in one call
    with torch.no_grad():  # the modules' forward, one token at a time over a cache, runs the same blocks
        cache = kv_cache.StaticKVCache.for_model(model, 1, out.size(1))
        model(out[:, :3], past=cache)
        for i in range(3, out.size(1)):
            logits = model(out[:, i:i + 1], past=cache).logits
            assert torch.equal(logits[:, -1], generation.step_function(model)(out[:, i:i + 1], _replay(model, out, i),
                                                                              None))
            if i + 1 < out.size(1):
                assert out[0, i + 1] == logits[0, -1].argmax()


def _replay(model, tokens, i):
    """A cache holding ``tokens[:, :i]``, filled as generate fills it."""
    cache = kv_cache.StaticKVCache.for_model(model, 1, tokens.size(1))
    step = generation.step_function(model)
    step(tokens[:, :3], cache, None)
    for j in range(3, i):
        step(tokens[:, j:j + 1], cache, None)
    return cache


def test_greedy_tokens_are_the_functional_codes(monkeypatch):
    model = model_of("gpt2", "float32")
    native = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=16)
    monkeypatch.setattr(block_module, "native_block", lambda *args, **kwargs: None)
    assert torch.equal(model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=16), native)


@pytest.mark.parametrize("case", ["batch", "mask", "prompt", "attentions", "head_mask", "tuple_cache"])
def test_other_calls_run_the_functional_code(monkeypatch, case):
    model = model_of("gpt2", "float32")
    monkeypatch.setattr(block_module.NativeBlock, "run", lambda *args: pytest.fail("the native block ran"))
    block = model.transformer.h[0]
    step = block.bind()
    batch = 2 if case == "batch" else 1
    cache = kv_cache.StaticKVCache.for_model(model, batch, 8)
    x = torch.randn(batch, 4 if case == "prompt" else 1, 128)
    mask = torch.ones(batch, 1, 1, 1, dtype=torch.bool) if case == "mask" else None
    past = None if case == "tuple_cache" else cache[0]
    head_mask = torch.ones(1, 4, 1, 1) if case == "head_mask" else None
    with torch.no_grad():
        y, _, weights = step(x, mask, past, True, head_mask, case == "attentions")
    assert y.shape == x.shape and (weights is not None) == (case == "attentions")


@pytest.mark.parametrize("change", ["silu", "no_norm_bias", "torch_kernels"])
def test_blocks_without_a_native_form_run_the_functional_code(monkeypatch, change):
    model = model_of("gpt2", "float32", activation_function="silu" if change == "silu" else "gelu_new")
    if change == "no_norm_bias":
        for block in model.transformer.h:
            block.ln_1.bias = None
    if change == "torch_kernels":
        monkeypatch.setenv("GPT_HUB_KERNEL", "torch")
        monkeypatch.setattr(repo_module("models.route_choice"), "_chosen", {})
    assert model.transformer.h[0]._native_step() is None
    monkeypatch.setattr(block_module.NativeBlock, "run", lambda *args: pytest.fail("the native block ran"))
    model.generate(torch.tensor([[1, 2]]), max_new_tokens=3)


def test_relu_blocks_run_natively():
    model = model_of("openai-gpt", "float32", afn="relu")
    block = model.transformer.h[0]
    native, step = block._native_step(), block.bind()
    xs = [torch.randn(1, 1, 128) for _ in range(4)]
    caches = [kv_cache.StaticKVCache.for_model(model, 1, 4) for _ in range(2)]
    with torch.no_grad():
        assert native.takes(xs[0], caches[0][0])
        got = steps(lambda x, mask, lc: (native(x, lc),), caches[0][0], xs)
        want = steps(step.python, caches[1][0], xs)
    assert torch.allclose(got, want, rtol=0, atol=2e-5 * want.abs().max().item())


def one_token_steps_against_the_full_forward(model, tokens, **cache_options):
    """The logits of ``tokens`` fed one at a time over a cache (the last ones), and of one forward."""
    cache = kv_cache.StaticKVCache(**{**dict(n_layer=2, batch=1, n_head=4, head_dim=32, capacity=tokens.size(1),
                                             dtype=torch.float32), **cache_options})
    model(tokens[:, :3], past=cache)
    stepped = [model(tokens[:, i:i + 1], past=cache).logits[:, -1] for i in range(3, tokens.size(1))]
    return torch.cat(stepped), model(tokens).logits[0, 3:]


def test_a_cache_the_native_block_cannot_write_runs_the_functional_code(monkeypatch):
    """A bfloat16 cache made by the user was refused with an error instead of being used."""
    model = model_of("gpt2", "float32")
    monkeypatch.setattr(block_module.NativeBlock, "run", lambda *args: pytest.fail("the native block ran"))
    with torch.no_grad():
        stepped, full = one_token_steps_against_the_full_forward(model, torch.tensor([[1, 2, 3, 4, 5]]),
                                                                  dtype=torch.bfloat16)
    assert (stepped - full).abs().max() < 0.1 * full.abs().max()  # keys and values kept in bfloat16


def test_a_replaced_activation_is_what_one_token_steps_compute():
    """The native block read the activation's name, not the module's ``act``: with ``act``
    replaced, one-token steps computed GELU while the forward computed ReLU."""
    model = model_of("gpt2", "float32")
    for block in model.transformer.h:
        block.mlp.act = torch.relu
    assert model.transformer.h[0]._native_step() is None
    with torch.no_grad():
        stepped, full = one_token_steps_against_the_full_forward(model, torch.tensor([[1, 2, 3, 4, 5]]))
    assert torch.allclose(stepped, full, rtol=0, atol=1e-4)


def test_gradients_of_inputs_embeds_are_kept_over_a_cache():
    """With the weights frozen, a one-token step over a cache ran natively and cut the graph to
    ``inputs_embeds``."""
    model = model_of("gpt2", "float32", n_layer=1)  # one layer: the cache's in-place writes meet no saved view
    model.requires_grad_(False)
    cache = kv_cache.StaticKVCache.for_model(model, 1, 4)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), past=cache)
    embeds = torch.randn(1, 1, 128, requires_grad=True)
    logits = model(inputs_embeds=embeds, past=cache).logits
    logits.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_the_block_comes_from_its_products_build(monkeypatch):
    model = model_of("gpt2", "float32")
    native = model.transformer.h[0]._native_step()
    assert native.fn is block_module._function("narrow")  # GPT_HUB_KERNEL=narrow: no wide build needed


def test_a_full_cache_and_a_weight_without_memory_are_refused_not_read():
    model = model_of("gpt2", "float32")
    native = model.transformer.h[0]._native_step()
    cache = kv_cache.StaticKVCache.for_model(model, 1, 2)
    assert native.takes(torch.zeros(1, 1, 128), cache[0])
    cache.length = 2
    with pytest.raises(repo_module("errors").InvalidArgumentError, match="holds 2 positions"):  # as the cache says it
        native(torch.zeros(1, 1, 128), cache[0])
    cache.length = 0
    model.transformer.h[0].mlp.c_fc.weight.untyped_storage().resize_(0)
    with pytest.raises(block_module.NativeKernelError, match="lost its memory"):
        native(torch.zeros(1, 1, 128), cache[0])


def test_nan_in_gives_nan_out():
    model = model_of("gpt2", "float32")
    native = model.transformer.h[0]._native_step()
    x = torch.zeros(1, 1, 128)
    x[0, 0, 7] = float("nan")
    assert native(x, kv_cache.StaticKVCache.for_model(model, 1, 2)[0]).isnan().all()


def test_a_cache_is_checked_and_its_memory_on_every_call():
    model = model_of("gpt2", "float32")
    native = model.transformer.h[0]._native_step()
    x = torch.zeros(1, 1, 128)
    assert not native.takes(x, kv_cache.StaticKVCache.for_model(model, 2, 4)[0])  # a batch of 2
    assert not native.takes(x, kv_cache.StaticKVCache(2, 1, 4, 32, 4, torch.bfloat16)[0])
    with pytest.raises(repo_module("errors").InvalidArgumentError, match="float32 CPU cache"):
        native(x, kv_cache.StaticKVCache.for_model(model, 2, 4)[0])
    cache = kv_cache.StaticKVCache.for_model(model, 1, 4)
    assert native.takes(x, cache[0])
    native(x, cache[0])
    cache.keys_values.untyped_storage().resize_(0)
    with pytest.raises(block_module.NativeKernelError, match="lost its memory"):
        native(torch.zeros(1, 1, 128), cache[0])
