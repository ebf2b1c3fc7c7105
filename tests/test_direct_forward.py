"""generate()'s direct forward (models/direct_forward.py): the modules' logits bit for bit, and the
modules themselves wherever something could make them differ."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY, TINY_GPT, models, repo_module

direct_forward = repo_module("models.direct_forward")
generation = repo_module("models.generation")
StaticKVCache = repo_module("models.kv_cache").StaticKVCache
DirectForward = direct_forward.DirectForward

FAMILIES = {
    "gpt2": lambda **extra: models.GPT2LMHeadModel(models.GPT2Config(**{**TINY, **extra})),
    "gpt2-layer-scaled": lambda **extra: models.GPT2LMHeadModel(
        models.GPT2Config(**{**TINY, "scale_attn_by_inverse_layer_idx": True, **extra})),
    "gpt": lambda **extra: models.OpenAIGPTLMHeadModel(models.OpenAIGPTConfig(**{**TINY_GPT, **extra})),
}


def build(family: str, dtype=torch.float32, **extra):
    torch.manual_seed(0)
    return FAMILIES[family](**extra).to(dtype).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_direct_forward_gives_the_modules_logits_bit_for_bit(family, dtype, batch):
    model = build(family, dtype)
    direct = DirectForward.for_model(model)
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
            expected = generation._last_logits(model, step, by_modules, visible)
            got = direct.last_logits(step, by_direct, visible)
            assert torch.equal(got, expected)
            step = expected.argmax(-1)[:, None]
    filled = by_modules.length
    assert by_direct.length == filled
    assert torch.equal(by_direct.keys_values[..., :filled, :], by_modules.keys_values[..., :filled, :])


def test_generate_takes_it_and_gives_the_modules_tokens(monkeypatch):
    model = build("gpt2")
    ids = torch.randint(0, TINY["vocab_size"], (1, 5))
    taken = []
    last_logits = DirectForward.last_logits
    monkeypatch.setattr(DirectForward, "last_logits", lambda self, *a: taken.append(1) or last_logits(self, *a))
    fast = model.generate(ids, max_new_tokens=8, do_sample=True, seed=3)
    assert len(taken) == 8
    monkeypatch.setattr(DirectForward, "for_model", classmethod(lambda cls, model: None))
    assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=True, seed=3), fast)
    assert len(taken) == 8


def test_double_heads_models_take_it_too():
    torch.manual_seed(0)
    assert DirectForward.for_model(models.GPT2DoubleHeadsModel(models.GPT2Config(**TINY)).eval()) is not None
    assert DirectForward.for_model(models.OpenAIGPTDoubleHeadsModel(models.OpenAIGPTConfig(**TINY_GPT)).eval()) is not None


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


def with_renormalising_embedding(model):
    model.transformer.wte.max_norm = 1.0


def without_the_parts_it_expects(model):
    del model.transformer.h[0].attn.c_attn


CHANGES = [with_forward_hook, with_pre_hook, with_wrapped_layer, with_subclassed_layer, with_instance_forward,
           with_extra_module, in_training_mode, with_mixed_dtypes, with_renormalising_embedding,
           without_the_parts_it_expects]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__)
def test_anything_it_cannot_see_runs_the_modules(change):
    model = build("gpt2")
    assert DirectForward.for_model(model) is not None
    calls = change(model)
    assert DirectForward.for_model(model) is None
    if calls is not None:  # the hook sees every step of generate
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4)
        assert len(calls) == 4


def test_upcast_attention_and_global_hooks_run_the_modules():
    assert DirectForward.for_model(build("gpt2", reorder_and_upcast_attn=True)) is None
    model = build("gpt2")
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert DirectForward.for_model(model) is None
    finally:
        handle.remove()
    assert DirectForward.for_model(model) is not None
