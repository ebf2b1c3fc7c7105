"""What every family's entrypoints share: how a model is made from the hub's arguments."""

from __future__ import annotations

import os
from typing import Any

LOADING_DOC = """
    Args:
        pretrained_model_name_or_path: a checkpoint name (``{default}``), a local directory with
            ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``), or a weights file
            with ``config.json`` beside it; or one of OpenAI's original releases, read without
            TensorFlow (``openai/124M`` ... ``openai/1558M``, ``openai-gpt-original``, or such a
            folder on disk).
        pretrained: False builds the architecture with fresh random weights (nothing downloaded).
        config: a config object or path to use instead of the checkpoint's.
        state_dict: weights to use instead of the checkpoint's.
        torch_dtype: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16`` or ``"auto"``.
        cache_dir, revision, force_download, local_files_only: where and how files are fetched.
        **config_overrides: any config field, e.g. ``num_labels=3`` or ``summary_first_dropout=0.2``.
"""


def example(entry: str, checkpoint: str, body: str) -> str:
    """An entrypoint's example: load it from the hub, then ``body``."""
    return f"""
    Example::

        import torch
        model = torch.hub.load('<owner>/<repo>', '{entry}', '{checkpoint}', trust_repo=True)
{body}"""


def documented(example: str, default: str):
    """Append the shared argument list and the entrypoint's example to its docstring."""

    def decorate(entry):
        entry.__doc__ = (entry.__doc__ or "").rstrip() + "\n" + LOADING_DOC.format(default=default) + example
        return entry

    return decorate


def load_config(config_class, name_or_path: str | os.PathLike, kwargs: dict[str, Any]):
    """A preset name gives its architecture without the network; anything else is read."""
    if str(name_or_path) in config_class.presets() and not os.path.exists(name_or_path):
        return config_class.from_preset(str(name_or_path), **kwargs)
    return config_class.from_pretrained(name_or_path, **kwargs)


def load_model(model_class, name_or_path: str | os.PathLike, pretrained: bool, kwargs: dict[str, Any]):
    if pretrained:
        return model_class.from_pretrained(name_or_path, **kwargs)
    config = kwargs.pop("config", None)
    torch_dtype = kwargs.pop("torch_dtype", kwargs.pop("dtype", None))
    if config is None or not isinstance(config, model_class.config_class):
        config = load_config(model_class.config_class, config or name_or_path, kwargs)
    elif kwargs:
        config = config.replace(**kwargs)
    return model_class.from_config(config, torch_dtype=torch_dtype)
