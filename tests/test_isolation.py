"""Loading this repository never shadows, and is never shadowed by, other packages named
`models` or `tokenizers` (Hugging Face's, other hub repositories'). Each case runs in a fresh
interpreter, as a user's process would."""

import subprocess
import sys
import textwrap

import pytest
from conftest import require, REPO

PRELUDE = f"""
import sys, torch
REPO = {str(REPO)!r}

def ours(checkpoint):
    model = torch.hub.load(REPO, "gpt2LMHeadModel", checkpoint, source="local")
    assert type(model).__name__ == "GPT2LMHeadModel"
    return model

def no_bare_names():
    for name in ("models", "tokenizers", "hubconfs", "download", "cli"):
        module = sys.modules.get(name)
        assert module is None or not getattr(module, "__file__", "").startswith(REPO), (name, module)
"""


def run(code: str, tmp_path, *args: str) -> str:
    script = tmp_path / "case.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    result = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def other_hub_repo(tmp_path):
    """A hub repository with its own top-level `models` package, as many have."""
    repo = tmp_path / "other_repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "__init__.py").write_text("")
    (repo / "models" / "resnet.py").write_text("def build():\n    return 'their model'\n")
    (repo / "hubconf.py").write_text("dependencies = []\nfrom models.resnet import build\n\n"
                                     "def theirs():\n    return build()\n")
    return repo


@pytest.fixture
def checkpoint(hf_checkpoint):
    return str(hf_checkpoint)


def test_hugging_face_imported_first_and_still_real_after(tmp_path, checkpoint):
    require("transformers")
    run("""
        import tokenizers, transformers
        real_tokenizers = tokenizers.__file__
        model = ours(sys.argv[1])
        no_bare_names()
        import tokenizers
        assert tokenizers.__file__ == real_tokenizers and hasattr(tokenizers, "Tokenizer")
        from transformers import GPT2Config, GPT2TokenizerFast
        print("ok")
    """, tmp_path, checkpoint)


def test_hugging_face_imported_after_us_is_the_real_one(tmp_path, checkpoint):
    require("transformers")
    out = run("""
        model = ours(sys.argv[1])
        no_bare_names()
        import tokenizers, transformers
        assert "site-packages" in tokenizers.__file__ and hasattr(tokenizers, "Tokenizer"), tokenizers
        from transformers import GPT2LMHeadModel
        print(tokenizers.__file__)
    """, tmp_path, checkpoint)
    assert str(REPO) not in out


def test_another_hub_repository_with_its_own_models_package(tmp_path, checkpoint):
    other = other_hub_repo(tmp_path)
    run("""
        other = sys.argv[2]
        assert torch.hub.load(other, "theirs", source="local") == "their model"
        ours(sys.argv[1])
        assert torch.hub.load(other, "theirs", source="local") == "their model"
        assert sys.modules["models"].__file__.startswith(other)
    """, tmp_path, checkpoint, str(other))
    run("""
        other = sys.argv[2]
        ours(sys.argv[1])
        no_bare_names()
        assert torch.hub.load(other, "theirs", source="local") == "their model"
        ours(sys.argv[1])
    """, tmp_path, checkpoint, str(other))


def test_loading_twice_in_one_process(tmp_path, checkpoint):
    run("""
        first, second = ours(sys.argv[1]), ours(sys.argv[1])
        assert type(first) is type(second)
        assert isinstance(second, type(first))
        x = torch.tensor([[1, 2, 3]])
        with torch.no_grad():
            assert torch.equal(first(x).logits, second(x).logits)
            logits, past = second(x)
            step, _ = first(torch.tensor([[4]]), past=past)  # objects from both loads work together
        no_bare_names()
    """, tmp_path, checkpoint)
