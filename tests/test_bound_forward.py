"""generate()'s bound forward (``DecoderModel.bind``): the same functions as the modules
(models/functional.py) with the parameters bound once, so the modules' logits bit for bit; and the
modules themselves wherever something could make them differ."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY, TINY_GPT, models, repo_module

generation = repo_module("models.generation")
StaticKVCache = repo_module("models.kv_cache").StaticKVCache


def bound_step(model):
    """generate's step function for ``model`` if it binds the parameters, else None."""
    step = generation.step_function(model)
    return step if step.func is generation._bound_logits else None

FAMILIES = {
    "gpt2": lambda **extra: models.GPT2LMHeadModel(models.GPT2Config(**{**TINY, **extra})),
    "gpt2-layer-scaled": lambda **extra: models.GPT2LMHeadModel(
        models.GPT2Config(**{**TINY, "scale_attn_by_inverse_layer_idx": True, **extra})),
    "gpt2-upcast": lambda **extra: models.GPT2LMHeadModel(
        models.GPT2Config(**{**TINY, "reorder_and_upcast_attn": True, **extra})),
    "gpt": lambda **extra: models.OpenAIGPTLMHeadModel(models.OpenAIGPTConfig(**{**TINY_GPT, **extra})),
}


def build(family: str, dtype=torch.float32, **extra):
    torch.manual_seed(0)
    return FAMILIES[family](**extra).to(dtype).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_bound_forward_gives_the_modules_logits_bit_for_bit(family, dtype, batch):
    model = build(family, dtype)
    direct = bound_step(model)
    assert direct is not None
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, 9))
    total = 20
    mask = None
    if batch > 1:  # left padding
        mask = torch.ones(batch, total, dtype=torch.long)
        mask[1, :4] = mask[2, :2] = 0
    by_modules, by_direct = (StaticKVCache.for_model(model, batch, total) for _ in range(2))
    step, length = ids, 0
    with torch.no_grad():
        for _ in range(6):  # the prompt, then one token at a time
            length += step.size(1)
            visible = None if mask is None else mask[:, :length]
            expected = generation._module_logits(model, step, by_modules, visible)
            got = direct(step, by_direct, visible)
            assert torch.equal(got, expected)
            step = expected.argmax(-1)[:, None]
    filled = by_modules.length
    assert by_direct.length == filled
    assert torch.equal(by_direct.keys_values[..., :filled, :], by_modules.keys_values[..., :filled, :])


def test_generate_takes_it_and_gives_the_modules_tokens(monkeypatch):
    model = build("gpt2")
    ids = torch.randint(0, TINY["vocab_size"], (1, 5))
    taken = []
    bound_logits = generation._bound_logits
    monkeypatch.setattr(generation, "_bound_logits", lambda *a, **k: taken.append(1) or bound_logits(*a, **k))
    fast = model.generate(ids, max_new_tokens=8, do_sample=True, seed=3)
    assert len(taken) == 8
    model.transformer.h[0].register_forward_hook(lambda *args: None)  # now the modules run
    assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=True, seed=3), fast)
    assert len(taken) == 8


def test_double_heads_models_take_it_too():
    torch.manual_seed(0)
    assert bound_step(models.GPT2DoubleHeadsModel(models.GPT2Config(**TINY)).eval()) is not None
    assert bound_step(models.OpenAIGPTDoubleHeadsModel(models.OpenAIGPTConfig(**TINY_GPT)).eval()) is not None


def test_the_prompt_is_still_checked():
    model = build("gpt")
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 99\)"):
        model.generate(torch.tensor([[1, 99]]), max_new_tokens=2)


class Wrapped(nn.Module):
    """A layer wrapped the way adapters do (LoRA): the same product plus something."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.weight, self.bias = inner.weight, inner.bias

    def forward(self, x):
        return self.inner(x) + 1.0


def with_forward_hook(model):
    calls = []
    model.transformer.h[1].mlp.c_fc.register_forward_hook(lambda module, args, out: calls.append(1))
    return calls


def with_pre_hook(model):
    calls = []
    model.transformer.h[0].register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


def with_wrapped_layer(model):
    model.transformer.h[0].attn.c_attn = Wrapped(model.transformer.h[0].attn.c_attn)


def with_subclassed_layer(model):
    class Scaled(type(model.transformer.h[0].ln_1)):
        def forward(self, x):
            return super().forward(x) * 2

    old = model.transformer.h[1].ln_2
    new = Scaled(old.normalized_shape, eps=old.eps)
    new.load_state_dict(old.state_dict())
    model.transformer.h[1].ln_2 = new


def with_instance_forward(model):
    layer = model.transformer.h[0].mlp
    plain = layer.forward
    layer.forward = lambda x: plain(x) * 0.5


def with_extra_module(model):
    model.transformer.h[0].mlp.extra = nn.Identity()


def in_training_mode(model):
    model.train()


def with_mixed_dtypes(model):
    model.transformer.h[1].to(torch.float64)


def with_a_replaced_body(model):
    class Body(type(model.transformer)):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    body = model.transformer
    body.__class__ = Body


def with_a_hook_on_the_head_model(model):
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(1))
    return None  # generate runs the body and the head, not the whole model: no call to count


CHANGES = [with_forward_hook, with_pre_hook, with_wrapped_layer, with_subclassed_layer, with_instance_forward,
           with_extra_module, in_training_mode, with_mixed_dtypes, with_a_replaced_body, with_a_hook_on_the_head_model]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__)
def test_anything_it_cannot_see_runs_the_modules(change):
    model = build("gpt2")
    assert bound_step(model) is not None
    calls = change(model)
    assert bound_step(model) is None
    if calls is not None:  # the hook sees every step of generate
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4)
        assert len(calls) == 4


def test_global_hooks_run_the_modules():
    model = build("gpt2")
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert bound_step(model) is None
    finally:
        handle.remove()
    assert bound_step(model) is not None


def test_a_renormalising_embedding_is_bound_with_its_max_norm():
    model, reference = build("gpt2"), build("gpt2")
    for m in (model, reference):
        m.transformer.wte.max_norm = 0.5
    reference.transformer.h[0].register_forward_hook(lambda *args: None)  # the modules run there
    ids = torch.randint(0, TINY["vocab_size"], (1, 5))
    assert bound_step(model) is not None and bound_step(reference) is None
    assert torch.equal(model.generate(ids, max_new_tokens=6), reference.generate(ids, max_new_tokens=6))
    assert torch.equal(model.transformer.wte.weight, reference.transformer.wte.weight)  # renormalised alike


def test_a_plain_linear_head_put_in_place_runs_the_modules():
    """A head replaced by ``torch.nn.Linear`` (which has no ``bind``) made generate raise
    AttributeError."""
    model = build("gpt2")
    model.lm_head = nn.Linear(model.config.n_embd, model.config.vocab_size, bias=False)
    model.eval()
    assert bound_step(model) is None
    ids = torch.randint(0, TINY["vocab_size"], (1, 5))
    out = model.generate(ids, max_new_tokens=4)
    with torch.no_grad():
        logits = model(out[:, :-1]).logits
    assert torch.equal(out[0, 5:], logits[0, 4:].argmax(-1))
