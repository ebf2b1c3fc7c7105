"""The 2019 hub pages' examples, read from ../shared/seeds and run as written, against local
checkpoints made so that the pages' asserts hold (the pretrained weights need the network): only
the repository and checkpoint names are replaced."""

import re
from pathlib import Path

import pytest
from conftest import REPO, models, need_shared_data, predicting_checkpoint, repo_module

SEEDS = REPO.parent / "shared" / "seeds"


def page_code(seed: str) -> str:
    need_shared_data()
    path = next(SEEDS.glob(f"{seed}_*.txt"), None)
    if path is None:
        pytest.skip(f"seed {seed} is not in {SEEDS}")
    return re.search(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S).group(1)


def localise(code: str, checkpoint_name: str, checkpoint: Path) -> str:
    code = code.replace("torch.hub.load('huggingface/pytorch-pretrained-BERT', ", "torch.hub.load(REPO, ")
    return code.replace(f", '{checkpoint_name}')", ", CHECKPOINT, source='local')")


def test_gpt_page_runs_verbatim(tmp_path):
    data = need_shared_data() / "openai-gpt"
    config = models.OpenAIGPTConfig(n_layer=2, n_embd=32, n_head=4)
    tokenizer = repo_module("tokenizers").OpenAIGPTTokenizer.from_pretrained(data)
    checkpoint = predicting_checkpoint(tmp_path / "gpt", models.OpenAIGPTLMHeadModel, config,
                                       tokenizer.convert_tokens_to_ids(".</w>"), data)
    code = localise(page_code("000"), "openai-gpt", checkpoint)
    assert code.count("source='local'") == 3 and "assert predicted_token == '.</w>'" in code
    scope = {"REPO": str(REPO), "CHECKPOINT": str(checkpoint)}
    exec(compile(code, "seed-000 (the GPT hub page)", "exec"), scope)
    assert scope["predicted_token"] == ".</w>"
    assert scope["hidden_states"].last_hidden_state.shape == (1, 14, 32)


def test_gpt2_page_runs_verbatim_up_to_its_own_mistakes(tmp_path):
    """The GPT-2 page's double-heads lines cannot run anywhere: they use `tokenized_text1`, which
    the page never defines, and stack two lists of different lengths into one tensor. Everything
    before them runs as written; README.md shows the corrected lines."""
    data = need_shared_data() / "gpt2"
    config = models.GPT2Config(n_layer=2, n_embd=32, n_head=4)
    checkpoint = predicting_checkpoint(tmp_path / "gpt2", models.GPT2LMHeadModel, config, 508, data)  # " who"
    code = localise(page_code("001"), "gpt2", checkpoint)
    runnable, broken = code.split("### Language modeling and multiple choice classification")
    assert "tokenized_text1" in broken and "assert predicted_token == ' who'" in runnable
    scope = {"REPO": str(REPO), "CHECKPOINT": str(checkpoint)}
    exec(compile(runnable, "seed-001 (the GPT-2 hub page)", "exec"), scope)
    assert scope["predicted_token"] == " who"
    assert scope["past"][0][0].shape[-2] == len(scope["indexed_tokens1"]) + len(scope["indexed_tokens2"])
