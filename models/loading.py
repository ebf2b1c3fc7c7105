"""Making a model from a checkpoint: find its files, build the model on the meta device, assign
the checkpoint's tensors to it, so the weights are allocated once (read from the file into weight
memory, 2 MB pages where large: models/pages.py); only parameters the checkpoint lacks (a new
head) are allocated and initialised."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor, nn

from ..download import resolve_file
from ..errors import InvalidArgumentError
from .checkpoint import LEGACY_BUFFERS, CheckpointError, load_weights
from .config_base import CONFIG_NAME, PretrainedConfig
from .dtypes import resolve_dtype
from .memory import check_fits_in_memory
from .openai_release import OriginalReleaseError, is_original_release, read_original_release
from .pages import copy_in_huge_pages
from .shards import SEARCH_ORDER, check_shard, is_index, read_index
from .quantize import quantize_model, read_quantization_config

logger = logging.getLogger(__name__)



def on_meta(cls, config: PretrainedConfig) -> nn.Module:
    """``cls(config)`` with every parameter on the meta device: shapes without memory."""
    with torch.device("meta"):
        return cls(config)


def materialize(module: nn.Module, dtype: torch.dtype, recurse: bool = True) -> None:
    """Give a meta module's parameters real, uninitialised memory (``to_empty`` without the
    imports it drags in)."""
    for owner in (module.modules() if recurse else [module]):
        for name, param in list(owner.named_parameters(recurse=False)):
            if param.is_meta:
                setattr(owner, name, nn.Parameter(torch.empty(param.shape, dtype=dtype), requires_grad=param.requires_grad))


def load_pretrained(cls, path: str | os.PathLike, *, config: PretrainedConfig | str | os.PathLike | None,
                    state_dict: dict[str, Tensor] | None, dtype: torch.dtype | str, fetch_options: dict[str, Any],
                    overrides: dict[str, Any], quantize: str | None = None) -> nn.Module:
    """``cls.from_pretrained``: see its docstring."""
    origin: dict[str, str] = {}
    given = state_dict is not None  # the caller's tensors: the model gets copies, never shares them
    if is_original_release(path) and config is None and state_dict is None:
        config, release = read_original_release(path, cls.config_class, fetch_options, **overrides)
        state_dict = {name: tensor for name, (_, tensor) in release.items()}
        origin = {name: variable for name, (variable, _) in release.items()}
    elif isinstance(config, PretrainedConfig):
        config = config.replace(**overrides) if overrides else config
    else:
        config = cls.config_class.from_pretrained(config if config is not None else path, **fetch_options, **overrides)

    if state_dict is None:
        given_file = isinstance(path, (str, os.PathLike)) and os.path.isfile(path)
        if given_file and os.path.basename(path) != CONFIG_NAME:
            weights_path = os.fspath(path)
        else:
            weights_path = resolve_file(path, SEARCH_ORDER, **fetch_options)
        state_dict = _read_weights(path, weights_path, dtype if isinstance(dtype, torch.dtype) else None, fetch_options)
    saved = read_quantization_config(config)
    if saved is not None and quantize not in (None, saved[0]):
        raise InvalidArgumentError(f"{path} is saved quantized as {saved[0]}; quantize={quantize!r} cannot change that "
                                   f"(load the float checkpoint to quantize it otherwise)")
    model = from_state_dict(cls, config, state_dict, resolve_dtype(dtype, weights=state_dict), str(path), origin,
                            quantized=saved, copy=given)
    return model.quantize(quantize) if quantize is not None and saved is None else model


def _read_weights(path, weights_path: str, dtype: torch.dtype | None, fetch_options: dict[str, Any]) -> dict[str, Tensor]:
    """The tensors of a weights file, or of every shard a shard index names (each fetched from
    where the index came from, as ``path`` leads to it)."""
    if not is_index(weights_path):
        return load_weights(weights_path, dtype)
    tensors: dict[str, Tensor] = {}
    for file, names in read_index(weights_path).items():
        shard_path = resolve_file(path, [file], **fetch_options)
        shard = load_weights(shard_path, dtype)
        check_shard(shard_path, shard, names)
        tensors.update((name, shard[name]) for name in names)
    return tensors


def from_state_dict(cls, config: PretrainedConfig, state_dict: dict[str, Tensor], dtype: torch.dtype,
                    source: str, origin: dict[str, str] | None = None,
                    quantized: tuple[str, int] | None = None, copy: bool = False) -> nn.Module:
    """The model with ``state_dict``'s tensors as its weights (converted to ``dtype``; copied
    where ``copy``: tensors the caller still holds); ``origin`` names a tensor's source where the
    checkpoint calls it otherwise (OpenAI's); ``quantized`` (scheme, group size) for a checkpoint
    saved quantized."""
    check_fits_in_memory(config, dtype)
    model = on_meta(cls, config)
    if quantized is not None:
        quantize_model(model, *quantized, dtype=dtype)
    expected = model.state_dict(keep_vars=True)  # a tied weight is one object under both names
    weights = _match_keys(model, state_dict, source)
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise _shape_error(source, name, model.base_model_prefix + ".", tensor, expected[name], origin)
    model.load_state_dict(_owned(weights, expected, dtype, copy), strict=False, assign=True)
    model.tie_weights()
    _initialise_missing(model, dtype, source)
    return model.eval()


def _owned(weights: dict[str, Tensor], expected: dict[str, Tensor], dtype: torch.dtype,
           copy: bool = False) -> dict[str, Tensor]:
    """``weights`` as the model will hold them: floating-point ones in ``dtype``, and in memory of
    their own wherever the model keeps two weights apart that the checkpoint stores as one (a
    ``torch.save`` of a tied model loaded with ``tie_word_embeddings=False``: sharing memory,
    training the head would move the embedding too), or everywhere with ``copy``. One stored
    tensor is converted once, however many names it has."""
    holders: dict[tuple, Tensor] = {}  # a stored tensor -> the model's weight that holds it
    converted: dict[tuple, Tensor] = {}
    for name, tensor in weights.items():
        target = dtype if tensor.is_floating_point() else tensor.dtype
        address = tensor.untyped_storage().data_ptr()
        stored = (str(tensor.device), address, tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if address and holders.setdefault(stored[:2], expected[name]) is not expected[name]:
            weights[name] = copy_in_huge_pages(tensor, target)
        elif target != tensor.dtype or copy:
            if (stored, target) not in converted:
                converted[stored, target] = copy_in_huge_pages(tensor, target)
            weights[name] = converted[stored, target]
    return weights


def _shape_error(source: str, name: str, prefix: str, tensor: Tensor, want: Tensor,
                 origin: dict[str, str] | None) -> CheckpointError:
    variable = (origin or {}).get(name.removeprefix(prefix))
    if variable is not None:  # one of OpenAI's releases: name its variable
        return OriginalReleaseError(f"{source}: {variable} has shape {list(tensor.shape)}, but the model's "
                                    f"configuration (from hparams.json or given) needs {list(want.shape)} for {name}")
    return CheckpointError(f"{source}: weight {name!r} has shape {list(tensor.shape)}, the model expects "
                           f"{list(want.shape)} (does the config match the checkpoint?)")


def _match_keys(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Rename checkpoint keys to the model's: with or without the ``transformer.`` prefix,
    dropping the legacy attention buffers. Logs what is left over."""
    expected = set(model.state_dict())
    prefix = model.base_model_prefix + "."
    matched, unexpected = {}, []
    for key, tensor in state_dict.items():
        for candidate in (key, prefix + key, key.removeprefix(prefix)):
            if candidate in expected:
                matched[candidate] = tensor
                break
        else:
            if not key.endswith(LEGACY_BUFFERS):
                unexpected.append(key)
    if not matched:
        raise CheckpointError(f"{source}: none of its {len(state_dict)} weights belong to {type(model).__name__}")
    if unexpected:
        logger.warning("%s: weights not used by %s: %s", source, type(model).__name__, ", ".join(unexpected))
    return matched


def _initialise_missing(model: nn.Module, dtype: torch.dtype, source: str) -> None:
    """Allocate and initialise what the checkpoint did not provide: a task head may be new, but
    the transformer body must come from the checkpoint."""
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if not missing:
        return
    prefix = model.base_model_prefix
    body = [name for name in missing if name.startswith(prefix + ".") or not hasattr(model, prefix)]
    if body:
        raise CheckpointError(f"{source} lacks weights the model needs: {', '.join(body)}")
    for owner in sorted({name.rsplit(".", 1)[0] for name in missing}):
        module = model.get_submodule(owner)
        materialize(module, dtype, recurse=False)
        model._init_weights(module)
    logger.warning("%s: newly initialised, to be trained: %s", source, ", ".join(missing))
