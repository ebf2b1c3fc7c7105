"""The repository as torch.hub users meet it: list, help, load."""

import pytest
import torch
from conftest import REPO, TINY, models

GPT2_ENTRYPOINTS = ["gpt2Config", "gpt2DoubleHeadsModel", "gpt2ForQuestionAnswering", "gpt2ForSequenceClassification",
                    "gpt2ForTokenClassification", "gpt2LMHeadModel", "gpt2Model", "gpt2Tokenizer"]


@pytest.fixture
def hub_repo(monkeypatch):
    """torch.hub's GitHub functions, with the fetch of '<owner>/<repo>' answered by this folder."""
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(REPO))
    return "owner/repo"


GPT_ENTRYPOINTS = ["openAIGPTConfig", "openAIGPTDoubleHeadsModel", "openAIGPTForSequenceClassification",
                   "openAIGPTLMHeadModel", "openAIGPTModel", "openAIGPTTokenizer"]
ENTRYPOINTS = sorted(GPT2_ENTRYPOINTS + GPT_ENTRYPOINTS)


def test_list_shows_the_entrypoints_only(hub_repo):
    assert sorted(torch.hub.list(hub_repo, trust_repo=True)) == ENTRYPOINTS


@pytest.mark.parametrize("entry", ENTRYPOINTS)
def test_help_documents_each_entrypoint_with_an_example(hub_repo, entry):
    doc = torch.hub.help(hub_repo, entry, trust_repo=True)
    assert "Example::" in doc and f"torch.hub.load('<owner>/<repo>', '{entry}'" in doc


def test_load_a_local_checkpoint(hf_checkpoint):
    model = torch.hub.load(str(REPO), "gpt2LMHeadModel", str(hf_checkpoint), source="local")
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training
    logits, past = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, TINY["vocab_size"]) and len(past) == TINY["n_layer"]


def test_keywords_reach_the_config_and_the_loader(hf_checkpoint):
    model = torch.hub.load(str(REPO), "gpt2ForSequenceClassification", str(hf_checkpoint), source="local",
                           num_labels=5, pad_token_id=0, torch_dtype=torch.bfloat16)
    assert model.config.num_labels == 5 and model.score.weight.shape == (5, TINY["n_embd"])
    assert model.dtype == torch.bfloat16
    logits = model(torch.tensor([[3, 4, 0], [5, 0, 0]])).logits
    assert logits.shape == (2, 5)


def test_random_weights_without_download():
    model = torch.hub.load(str(REPO), "gpt2LMHeadModel", "distilgpt2", source="local", pretrained=False,
                           n_positions=64, vocab_size=128)
    assert (model.config.n_layer, model.config.n_embd, model.config.n_positions) == (6, 768, 64)
    config = torch.hub.load(str(REPO), "gpt2Config", "gpt2-large", source="local")
    assert isinstance(config, models.GPT2Config) and config.n_layer == 36
    tiny = models.GPT2Config(**TINY)
    model = torch.hub.load(str(REPO), "gpt2DoubleHeadsModel", config=tiny, pretrained=False, source="local")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.2)
