"""Greedy decoding's native argmax (models/native/argmax.py) answers as torch.argmax does."""

from __future__ import annotations

import pytest
import torch
from test_native_block import model_of

from conftest import need_compiler, repo_module

argmax_module = repo_module("models.native.argmax")
sampling = repo_module("models.sampling")


@pytest.fixture(autouse=True)
def _compiler():
    need_compiler()


def special_rows() -> list[torch.Tensor]:
    inf, nan = float("inf"), float("nan")
    rows = [[1.0, 3.0, 3.0, 2.0], [-inf, -inf, -inf], [-inf, 5.0, inf, inf], [1.0, nan, 7.0, nan],
            [inf, nan], [nan], [0.0, -0.0], [-0.0, 0.0], [2.0, 1.0, -inf, 2.0],
            [1.0, 1.0 + 2 ** -23], [0.5, 0.5 + 2 ** -8]]  # the largest by a float32's or a bfloat16's last bit
    return [torch.tensor([row]) for row in rows]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_it_answers_as_torch_argmax(dtype):
    torch.manual_seed(0)
    rows = special_rows() + [torch.randn(1, n) for n in (1, 7, 16, 33, 50257)]
    rows.append(torch.randint(-3, 3, (1, 1000)).float())  # many ties
    for row in rows:
        row = row.to(dtype)
        assert torch.equal(argmax_module.argmax(row), row.float().argmax(-1)), row


def test_other_tensors_are_left_to_torch():
    assert argmax_module.argmax(torch.randn(2, 5)) is None  # a batch
    assert argmax_module.argmax(torch.randn(5, 1).t()) is not None  # a [1, 5] view is contiguous
    assert argmax_module.argmax(torch.randn(1, 10)[:, ::2]) is None  # strided
    assert argmax_module.argmax(torch.randn(1, 5, dtype=torch.float16)) is None
    assert argmax_module.argmax(torch.randn(1, 5, requires_grad=True)) is None
    assert argmax_module.argmax(torch.empty(1, 0)) is None
    freed = torch.randn(1, 5)
    freed.untyped_storage().resize_(0)
    assert argmax_module.argmax(freed) is None


def test_greedy_generation_uses_it_and_chooses_the_same_tokens(monkeypatch):
    """The head's kernel is forced native: where the timing ranked PyTorch's first for it (a
    small head on an AVX2-only CPU), greedy steps rightly left C, and this test failed."""
    monkeypatch.setenv("GPT_HUB_KERNEL", "narrow")
    monkeypatch.setattr(repo_module("models.route_choice"), "_chosen", {})
    model = model_of("gpt2", "bfloat16")
    calls = []
    real = argmax_module.argmax
    monkeypatch.setattr(sampling, "native_argmax", lambda logits: calls.append(1) or real(logits))
    fused = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=12)
    assert len(calls) == 1  # the prompt's step: the others choose inside their one native call (decoder.c)
    monkeypatch.setattr(repo_module("models.native.decoder").GreedyStep, "__call__", lambda self, ids, cache, steps=1: None)
    native = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=12)
    assert len(calls) == 13 and torch.equal(native, fused)
    monkeypatch.setattr(sampling, "native_argmax", lambda logits: None)
    assert torch.equal(model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=12), native)


def test_sampling_and_a_repetition_penalty_do_not_use_it(monkeypatch):
    model = model_of("gpt2", "float32")
    monkeypatch.setattr(sampling, "native_argmax", lambda logits: pytest.fail("the native argmax ran"))
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, repetition_penalty=1.3)
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=True, seed=0)
