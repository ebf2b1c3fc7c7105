"""A checkpoint's model and tokenizer, GPT or GPT-2 by its config's ``model_type``."""

from __future__ import annotations

import json

FAMILIES = {"gpt2": "GPT2", "openai-gpt": "OpenAIGPT"}
HEADS = {"lm": "LMHeadModel", "double": "DoubleHeadsModel"}


def family_of(model: str) -> str:
    """``gpt2`` or ``openai-gpt``: one of OpenAI's original releases (a name, or a folder in its
    layout) by its files, anything else by its config.json (wherever it lives)."""
    from ..download import resolve_file
    from ..models.openai_release import release_family

    release = release_family(model)
    if release is not None:
        return "gpt2" if release == "gpt2" else "openai-gpt"
    with open(resolve_file(model, ["config.json"]), encoding="utf-8") as f:
        model_type = json.load(f).get("model_type", "gpt2")
    if model_type not in FAMILIES:
        raise ValueError(f"{model} is a {model_type!r} checkpoint; this repository reads {' and '.join(FAMILIES)}")
    return model_type


def check_model_options(device: str, quantize: str | None, dtype: str | None) -> None:
    """``--device``, ``--quantize`` and ``--dtype`` together, refused as a usage error before
    anything is read or loaded (a prompt from stdin, a file to score, a download)."""
    from ..errors import GPTHubError
    from ..models.pretrained import check_placement
    from .main import UsageError

    try:
        check_placement(quantize, device, dtype, names=("--quantize", "--device"))
    except GPTHubError as error:
        raise UsageError(str(error)) from None


def load_family(model: str, dtype: str | None, head: str = "lm", quantize: str | None = None,
                device: str | None = None):
    """The checkpoint's model with ``head`` ("lm" or "double"), quantized if asked, on ``device``
    (a ``device_map``), and its tokenizer."""
    from .. import models, tokenizers

    family = FAMILIES[family_of(model)]
    model_class = getattr(models, family + HEADS[head])
    tokenizer_class = getattr(tokenizers, family + "Tokenizer")
    loaded = model_class.from_pretrained(model, torch_dtype=dtype or "float32", quantize=quantize, device_map=device)
    return loaded, tokenizer_class.from_pretrained(model)
