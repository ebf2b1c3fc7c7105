"""What every family's entrypoints share: how a model is made from the hub's arguments, and the
argument list and example in each docstring (torch.hub.help shows the docstring only)."""

from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import flag, take_neutral
from ..models.devices import place
from ..models.pretrained import LOADING_NEUTRAL, check_placement

# How examples name the repository: the GitHub owner/name it is published under.
HUB_REPO = "<owner>/<repo>"

LOADING_DOC = """
    Args:
        pretrained_model_name_or_path: a checkpoint name (``{default}``), a local directory with
            ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``), or a weights file
            with ``config.json`` beside it; or one of OpenAI's original releases, read without
            TensorFlow (``openai/124M`` ... ``openai/1558M``, ``openai-gpt-original``, or such a
            folder on disk).
        pretrained: False builds the architecture with fresh random weights (nothing downloaded).
        torch_dtype: ``torch.float32``, ``torch.bfloat16``, ``torch.float16`` or ``"auto"`` (the
            checkpoint's own); default: torch's default dtype (float32 unless set otherwise).
        revision: the hub revision (branch, tag or commit) to download; default ``main``.
        force_download: download again even if the files are cached.
        cache_dir: where downloads are kept; default ``torch.hub.get_dir()/gpt_hub``.
        local_files_only: never use the network: the cache must hold the files.
        config: a config object or path to use instead of the checkpoint's.
        state_dict: weights to use instead of the checkpoint's.
        quantize: ``"int8"`` or ``"int4"``: weight-only quantization of the projections and the
            LM head for CPU inference (``model.quantize(..., group_size=)`` for other int4 groups).
        device_map: the device the model goes to: ``"cuda"``, ``"cuda:1"``, a GPU index, ``"cpu"``
            (default) or ``"auto"`` (a GPU where there is one).
        **config_overrides: any config field, e.g. ``num_labels=3`` or ``summary_first_dropout=0.2``.
"""

CONFIG_DOC = """
    Args:
        pretrained_model_name_or_path: a preset name, a checkpoint name or directory, or a
            ``config.json``.
        revision, force_download, cache_dir, local_files_only: where and how the files are
            downloaded, as for the models.
        **overrides: config fields, e.g. ``n_positions=256``.
"""


def example(entry: str, checkpoint: str, body: str, variable: str = "model") -> str:
    """An entrypoint's example: load it from the hub, then ``body``."""
    return f"""
    Example (``{HUB_REPO}`` is the GitHub owner/name of this repository; a clone on disk loads
    with its path and ``source='local'``)::

        import torch
        {variable} = torch.hub.load('{HUB_REPO}', '{entry}', '{checkpoint}', trust_repo=True)
{body}"""


def fetch_options(revision: str | None, force_download: bool, cache_dir: str | os.PathLike | None,
                  local_files_only: bool) -> dict[str, Any]:
    """The download options that differ from the download layer's defaults."""
    given = dict(revision=revision, force_download=force_download, cache_dir=cache_dir,
                 local_files_only=local_files_only)
    return {key: value for key, value in given.items() if value not in (None, False)}


def load_config(config_class, name_or_path: str | os.PathLike, fetch: dict[str, Any], overrides: dict[str, Any]):
    """A preset name gives its architecture without the network; anything else is read."""
    if str(name_or_path) in config_class.presets() and not os.path.exists(name_or_path):
        return config_class.from_preset(str(name_or_path), **overrides)
    return config_class.from_pretrained(name_or_path, **fetch, **overrides)


def config_entrypoint(name: str, config_class, default: str, summary: str, body: str, shown: str | None = None
                      ) -> Callable:
    """A torch.hub entrypoint for ``config_class``: a preset (no download) or a checkpoint's config;
    the example loads ``shown`` (default: ``default``)."""

    def entry(pretrained_model_name_or_path: str | os.PathLike = default, *, revision: str | None = None,
              force_download: bool = False, cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
              **overrides: Any):
        fetch = fetch_options(revision, force_download, cache_dir, local_files_only)
        return load_config(config_class, pretrained_model_name_or_path, fetch, overrides)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = summary + "\n" + CONFIG_DOC + example(name, shown or default, body, variable="config")
    return entry


def model_entrypoint(name: str, model_class, default: str, summary: str, body: str) -> Callable:
    """A torch.hub entrypoint for ``model_class``: its signature names every loading option, and
    its docstring lists them and shows ``body`` as the example."""

    def entry(pretrained_model_name_or_path: str | os.PathLike = default, *, pretrained: bool = True,
              torch_dtype: Any = None, revision: str | None = None, force_download: bool = False,
              cache_dir: str | os.PathLike | None = None, local_files_only: bool = False, config: Any = None,
              state_dict: dict | None = None, quantize: str | None = None, device_map: Any = None,
              **config_overrides: Any):
        pretrained = flag("pretrained", pretrained)  # "no" or "False" would count as True and download
        fetch = fetch_options(revision, force_download, cache_dir, local_files_only)
        if pretrained:  # from_pretrained checks the scheme and the device before fetching anything
            return model_class.from_pretrained(pretrained_model_name_or_path, config=config, state_dict=state_dict,
                                               torch_dtype=torch_dtype, quantize=quantize, device_map=device_map,
                                               **fetch, **config_overrides)
        config = model_class.config_class.from_argument(config)
        take_neutral(config_overrides, LOADING_NEUTRAL, name)  # attn_implementation="eager" builds as ever
        device, _ = check_placement(quantize, device_map, torch_dtype)  # before a config is fetched
        if config is None or not isinstance(config, model_class.config_class):
            config = load_config(model_class.config_class, config or pretrained_model_name_or_path, fetch,
                                 config_overrides)
        elif config_overrides:
            config = config.replace(**config_overrides)
        model = model_class.from_config(config, torch_dtype=torch_dtype)
        if state_dict is not None:
            model.load_state_dict(state_dict)
        return place(model if quantize is None else model.quantize(quantize), device, device_map)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = summary + "\n" + LOADING_DOC.format(default=default) + example(name, default, body)
    return entry
