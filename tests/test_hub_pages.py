"""The PyTorch Hub pages (hub/*.md), the 2019 pages (../shared/seeds) and the README's examples,
run as PyTorch Hub's CI runs a page: every ```python block extracted, in order, into one script,
run as a subprocess. Offline: torch's hub cache holds the repository under the name the code
loads (torch uses and trusts a repository found there, without the network), and a local
imitation of the Hugging Face hub serves tiny checkpoints with the real vocabularies under the
checkpoint names the code uses. The checkpoints predict the tokens the 2019 pages assert."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, models, need_shared_data, predicting_checkpoint, repo_module
from fake_hub import FakeHub

SEEDS = REPO.parent / "shared" / "seeds"
PAGES = sorted((REPO / "hub").glob("*.md"))
PAGES = [page for page in PAGES if page.name != "README.md"]
HEADER_KEYS = ("layout: hub_detail", "background-class: hub-background", "body-class: hub", "title:", "summary:",
               "category:", "image:", "author:", "tags:", "github-link:", "github-id:")


def python_blocks(markdown: str) -> str:
    """What PyTorch Hub's CI runs of a page: its ```python blocks, fences dropped, joined in order
    (``sed -n '/^```python/,/^```/ p' | sed '/^```/ d'``)."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.startswith("```python") and not inside:
            inside = True
        elif line.startswith("```") and inside:
            inside = False
        elif inside:
            lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The local hub, serving the checkpoints the pages name (gpt2 and openai-gpt)."""
    data = need_shared_data()
    root = tmp_path_factory.mktemp("hub-checkpoints")
    gpt_tokenizer = repo_module("tokenizers").OpenAIGPTTokenizer.from_pretrained(data / "openai-gpt")
    small = dict(n_layer=2, n_embd=32, n_head=4)
    checkpoints = {
        "openai-gpt": predicting_checkpoint(root / "gpt", models.OpenAIGPTLMHeadModel, models.OpenAIGPTConfig(**small),
                                            gpt_tokenizer.convert_tokens_to_ids(".</w>"), data / "openai-gpt"),
        "gpt2": predicting_checkpoint(root / "gpt2", models.GPT2LMHeadModel, models.GPT2Config(**small),
                                      508, data / "gpt2"),  # " who"
    }
    server = FakeHub().start()
    for name, folder in checkpoints.items():
        for file in folder.iterdir():
            server.add(repo_module("download").HUB_REPOS[name], file.name, file.read_bytes())
    yield server
    server.stop()


def run_as_hub_ci(code: str, tmp_path: Path, hub: FakeHub, repository: str) -> subprocess.CompletedProcess:
    """Run ``code`` as a script, with ``repository`` (GitHub ``owner/name``) in torch's hub cache."""
    hub_dir = tmp_path / "torch" / "hub"
    hub_dir.mkdir(parents=True)
    (hub_dir / (repository.replace("/", "_") + "_main")).symlink_to(REPO, target_is_directory=True)
    script = tmp_path / "page.py"
    script.write_text(code, encoding="utf-8")
    closed = "http://127.0.0.1:9"  # torch asks GitHub for the default branch: refused at once, it looks in its cache
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_ENDPOINT": hub.endpoint, "https_proxy": closed,
           "http_proxy": closed, "HTTPS_PROXY": closed, "HTTP_PROXY": closed, "no_proxy": "127.0.0.1,localhost",
           "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    return result


def seed_page(seed: str) -> str:
    need_shared_data()
    path = next(SEEDS.glob(f"{seed}_*.txt"), None)
    if path is None:
        pytest.skip(f"seed {seed} is not in {SEEDS}")
    return path.read_text(encoding="utf-8")


def test_a_page_per_family():
    assert [page.name for page in PAGES] == ["owner_repo_gpt.md", "owner_repo_gpt2.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_our_pages_have_pytorch_hubs_format(page):
    text = page.read_text(encoding="utf-8")
    header = text.split("---\n")[1]
    assert text.startswith("---\n") and all(key in header for key in HEADER_KEYS)
    assert re.fullmatch(r"owner_repo_\w+\.md", page.name) and "### Model Description" in text
    hubconf_names = set(repo_module("hubconfs.gpt_hubconf").__dict__) | set(repo_module("hubconfs.gpt2_hubconf").__dict__)
    loaded = re.findall(r"torch\.hub\.(?:load|help)\('owner/repo', '(\w+)'", text)
    assert loaded and set(loaded) <= hubconf_names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_our_pages_run_as_pytorch_hub_ci_runs_them(page, tmp_path, hub):
    code = python_blocks(page.read_text(encoding="utf-8"))
    assert code.count("torch.hub.load('owner/repo'") >= 4
    result = run_as_hub_ci(code + "print('page done')\n", tmp_path, hub, "owner/repo")
    assert result.returncode == 0 and "page done" in result.stdout, result.stderr[-3000:]


def test_2019_gpt_page_runs_verbatim(tmp_path, hub):
    code = python_blocks(seed_page("000"))
    assert "assert predicted_token == '.</w>'" in code
    result = run_as_hub_ci(code + "print('page done')\n", tmp_path, hub, "huggingface/pytorch-pretrained-BERT")
    assert result.returncode == 0 and "page done" in result.stdout, result.stderr[-3000:]


def test_2019_gpt2_page_runs_whole_once_its_typo_is_corrected(tmp_path, hub):
    """The page's one mistake is `tokenized_text1`/`tokenized_text2` in its last block (it defines
    `tokenized_text_1`/`_2`). Both texts are 14 tokens, so its `[[indexed_tokens1, indexed_tokens2]]`
    tensor is fine: [1, 2, 14]."""
    code = python_blocks(seed_page("001"))
    as_written = run_as_hub_ci(code, tmp_path / "as-written", hub, "huggingface/pytorch-pretrained-BERT")
    assert as_written.returncode != 0
    assert as_written.stderr.strip().splitlines()[-1].startswith("NameError: name 'tokenized_text1' is not defined")
    fixed = code.replace("tokenized_text1", "tokenized_text_1").replace("tokenized_text2", "tokenized_text_2")
    check = "print('double heads', tuple(tokens_tensor.shape), tuple(multiple_choice_logits.shape))\n"
    result = run_as_hub_ci(fixed + check, tmp_path / "fixed", hub, "huggingface/pytorch-pretrained-BERT")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "double heads (1, 2, 14) (1, 2)" in result.stdout


def test_readme_examples_run(tmp_path, hub):
    """The README's ```python blocks, with /path/to/clone standing for this clone."""
    code = python_blocks((REPO / "README.md").read_text(encoding="utf-8")).replace("/path/to/clone", str(REPO))
    assert "source='local'" in code and "'<owner>/<repo>'" in code
    result = run_as_hub_ci(code + "print('readme done')\n", tmp_path, hub, "<owner>/<repo>")
    assert result.returncode == 0 and "readme done" in result.stdout, result.stderr[-3000:]


def test_every_entrypoints_example_runs_as_torch_hub_help_shows_it(tmp_path, hub):
    """The ``Example::`` of each entrypoint's docstring (what ``torch.hub.help`` prints), all in
    one script, as a user would paste them; the 2019 hub's checkpoint names are served locally."""
    import textwrap

    hubconf = repo_module("hubconf")
    names = [name for name in dir(hubconf) if not name.startswith("_") and callable(getattr(hubconf, name))
             and "torch.hub.load" in (getattr(hubconf, name).__doc__ or "")]
    assert len(names) >= 12, names
    examples = [textwrap.dedent(getattr(hubconf, name).__doc__.split("::\n", 1)[1]) for name in names]
    assert all("torch.hub.load('<owner>/<repo>'" in example for example in examples)
    code = "\n".join(examples) + "print('examples done')\n"
    result = run_as_hub_ci(code, tmp_path, hub, "<owner>/<repo>")
    assert result.returncode == 0 and "examples done" in result.stdout, result.stderr[-3000:]
