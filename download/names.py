"""Checkpoint names and where their files live on the Hugging Face hub."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from ..errors import GPTHubError

DEFAULT_ENDPOINT = "https://huggingface.co"

# The 2019 names and today's hub repositories.
HUB_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
    "openai-gpt": "openai-community/openai-gpt",
}

# OpenAI's own releases, read by models/openai_release.py: GPT-2 from OpenAI's storage, GPT-1 from
# the finetune-transformer-lm repository. The bases can be moved (tests serve them locally).
OPENAI_GPT2_SIZES = ("124M", "355M", "774M", "1558M")
ORIGINAL_RELEASES = {**{f"openai/{size}": ("GPT2_URL", f"models/{size}/") for size in OPENAI_GPT2_SIZES},
                     "openai-gpt-original": ("GPT1_URL", "model/")}
_ORIGINAL_BASES = {"GPT2_URL": "https://openaipublic.blob.core.windows.net/gpt-2",
                   "GPT1_URL": "https://raw.githubusercontent.com/openai/finetune-transformer-lm/master"}

# sha256 of OpenAI's vocabulary files as OpenAI serves them (../shared/data/README.md: the GPT-2
# hashes are those tiktoken pins for OpenAI's encoder.json/vocab.bpe, which every size shares; the
# GPT-1 ones are finetune-transformer-lm's files). Pinned for these URLs only: hub files are checked
# against the hub's own validators instead (download.transfer), whatever their bytes.
OPENAI_GPT2_VOCAB_SHA256 = {"encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
                            "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}
_GPT1_VOCAB = {"encoder_bpe_40000.json": "fdf49b19e7de236852091da09b84a7a3cd5e7b0e79916376cf45f6b8127b8078",
               "vocab_40000.bpe": "0ea9b51ae695073cd871e0358f7016311d671a7ff3963e367d5236522f294725"}
PINNED_SHA256 = {**{f"{_ORIGINAL_BASES['GPT2_URL']}/models/{size}/{name}": sha
                    for size in OPENAI_GPT2_SIZES for name, sha in OPENAI_GPT2_VOCAB_SHA256.items()},
                 **{f"{_ORIGINAL_BASES['GPT1_URL']}/model/{name}": sha for name, sha in _GPT1_VOCAB.items()}}

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_HEX = re.compile(r"[0-9a-f]+")


class InvalidNameError(GPTHubError, ValueError):
    """A checkpoint name, repository id or revision that could not be a real one."""


def is_hex(value: object, digits: int) -> bool:
    """Whether ``value`` is ``digits`` lowercase hex digits: a git commit or blob id (40), a sha256 (64)."""
    return isinstance(value, str) and len(value) == digits and _HEX.fullmatch(value) is not None


def endpoint() -> str:
    """``HF_ENDPOINT``, read at call time (tests point it at a local server), else the hub."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def original_release_url(name: str) -> str | None:
    """The folder URL (ending in ``/``) of one of OpenAI's original releases, or None. The bases
    are ``GPT_HUB_OPENAI_GPT2_URL`` and ``GPT_HUB_OPENAI_GPT1_URL`` where set."""
    if name not in ORIGINAL_RELEASES:
        return None
    which, folder = ORIGINAL_RELEASES[name]
    base = os.environ.get(f"GPT_HUB_OPENAI_{which}", _ORIGINAL_BASES[which]).rstrip("/")
    return f"{base}/{folder}"


def repo_id(name: str) -> str | None:
    """The hub repository a name stands for, or None if it is not a name."""
    if name in HUB_REPOS:
        return HUB_REPOS[name]
    if "\x00" in name or ".." in name or name.startswith(("/", "\\")):
        raise InvalidNameError(f"{name!r} is not a checkpoint name, a repository id or an existing path")
    return name if _REPO_ID.fullmatch(name) else None  # fullmatch: '$' lets a final newline through


def hub_url(repo: str, filename: str, revision: str | None = None) -> str:
    revision = revision or "main"
    if not revision or revision in (".", "..") or any(ord(c) < 32 for c in revision):
        raise InvalidNameError(f"revision {revision!r} is not a branch, tag or commit")
    return f"{endpoint()}/{repo}/resolve/{quote(revision, safe='')}/{quote(filename)}"
