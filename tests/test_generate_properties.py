"""generate() under arbitrary arguments (hypothesis): any combination gives tokens that start with
the prompt and lie in the vocabulary, or an error of this library naming the argument; never a
raw error from deep inside, NaN sampling or a hang."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY, models, repo_module

errors = repo_module("errors")
torch.manual_seed(0)
MODEL = models.GPT2LMHeadModel(models.GPT2Config(**TINY)).eval()
VOCAB = TINY["vocab_size"]

odd_values = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.lists(st.integers(-2, 100), max_size=3),
                       st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20))
counts = st.one_of(st.integers(-3, 6), odd_values)
reals = st.one_of(st.floats(-2, 3), st.sampled_from([0.0, 1e-45, 1e-30, float("nan"), float("inf")]), odd_values)
token_ids = st.one_of(st.integers(-2, VOCAB + 2), st.lists(st.integers(-1, VOCAB), max_size=3), odd_values)


@st.composite
def prompts(draw):
    batch, length = draw(st.integers(0, 3)), draw(st.integers(0, 6))
    dtype = draw(st.sampled_from([torch.int64, torch.int32, torch.int16, torch.uint8, torch.float32]))
    high = draw(st.sampled_from([VOCAB, VOCAB + 5]))
    ids = torch.randint(0, min(high, 127 if dtype in (torch.uint8, torch.int16) else high), (batch, length))
    shape = draw(st.sampled_from(["2d", "1d", "3d"]))
    ids = ids[0] if shape == "1d" and batch else ids[None] if shape == "3d" else ids
    mask = draw(st.sampled_from([None, "ones", "left-padded", "wrong-shape", "zeros"]))
    if mask == "ones":
        mask = torch.ones_like(ids)
    elif mask == "left-padded" and ids.dim() == 2 and ids.size(1) > 1:
        mask = torch.ones_like(ids)
        mask[:, 0] = 0
    elif mask == "wrong-shape":
        mask = torch.ones(ids.dim() and ids.shape[0] + 1, 2)
    elif mask == "zeros":
        mask = torch.zeros_like(ids)
    else:
        mask = None
    return ids.to(dtype), mask


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=prompts(), max_new_tokens=counts, max_length=counts, do_sample=st.one_of(st.booleans(), odd_values),
       temperature=reals, top_k=counts, top_p=reals, repetition_penalty=reals, eos_token_id=token_ids,
       pad_token_id=token_ids, num_return_sequences=counts)
def test_any_arguments_give_tokens_or_a_clear_error(prompt, **kwargs):
    ids, mask = prompt
    try:
        out = MODEL.generate(ids, attention_mask=mask, **kwargs)
    except errors.GPTHubError as error:
        assert isinstance(error, (ValueError, TypeError)), type(error)
        assert any(name in str(error) for name in ("input_ids", "attention_mask", *kwargs)), str(error)
        return
    rows = ids if ids.dim() == 2 else ids[None]
    repeats = kwargs["num_return_sequences"]
    assert out.dtype == torch.int64 and out.dim() == 2 and out.size(0) == rows.size(0) * repeats
    assert torch.equal(out[:, :rows.size(1)], rows.long().repeat_interleave(repeats, 0))
    assert int(out.min()) >= 0 and int(out.max()) < VOCAB
    assert not any(isinstance(v, float) and math.isnan(v) for v in kwargs.values())
