"""OpenAI's original releases, read with numpy and the standard library (no TensorFlow).

GPT-2 (``openai/124M`` ... ``openai/1558M``): ``hparams.json`` and a TensorFlow checkpoint
(``model.ckpt.index`` + ``model.ckpt.data-00000-of-00001``) with src/model.py's variables:
``model/wte``, ``model/wpe``, per block ``model/h{i}/{ln_1,attn/c_attn,attn/c_proj,ln_2,mlp/c_fc,
mlp/c_proj}/{g,b,w}`` (convolution weights ``[1, in, out]``), ``model/ln_f/{g,b}``.

GPT-1 (``openai-gpt-original``): finetune-transformer-lm's ``model/params_shapes.json`` and
``params_0.npy`` ... ``params_9.npy``: every parameter flattened, concatenated and cut into ten
files. The shapes, in order: positions ``[512, 768]``, tokens ``[40478, 768]``, then per block
attn/c_attn w, b; attn/c_proj w, b; ln_1 g, b; mlp/c_fc w, b; mlp/c_proj w, b; ln_2 g, b (the
order train.py's ``block`` creates them in). GPT-1 ships no hyper-parameters; the number of heads
(12) is the paper's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..download import resolve_file
from ..download.names import ORIGINAL_RELEASES
from .checkpoint import CheckpointError
from .config import GPT2Config, OpenAIGPTConfig
from .tf_checkpoint import TFCheckpoint, TFCheckpointError, data_file_name

logger = logging.getLogger(__name__)

GPT1_BLOCK = ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
              "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
              "ln_2.weight", "ln_2.bias")
GPT1_FILES = 10
_GPT2_VARIABLE = re.compile(r"^model/(?:h(\d+)/)?(.+)/([gbw])$")


class OriginalReleaseError(CheckpointError):
    """OpenAI's files are missing, damaged, or do not fit the model; the message names the tensor."""


def release_family(name: object) -> str | None:
    """"gpt2" or "gpt1" for a release name or a local folder in OpenAI's layout (no config.json),
    else None."""
    if not isinstance(name, (str, os.PathLike)):
        return None
    name = os.fspath(name)
    if name in ORIGINAL_RELEASES:
        return "gpt2" if name.startswith("openai/") else "gpt1"
    if not os.path.isdir(name) or os.path.isfile(os.path.join(name, "config.json")):
        return None
    if os.path.isfile(os.path.join(name, "hparams.json")):
        return "gpt2"
    return "gpt1" if os.path.isfile(os.path.join(name, "params_shapes.json")) else None


def is_original_release(name: object) -> bool:
    return release_family(name) is not None


def _getter(source: str | os.PathLike, download_options: dict) -> Callable[[str], str]:
    """Local path of one of the release's files, from a folder, a URL or a release name."""
    source = os.fspath(source)
    if os.path.isfile(source + ".index"):  # a checkpoint prefix, such as models/124M/model.ckpt
        source = os.path.dirname(os.path.abspath(source))
    return lambda filename: resolve_file(source, [filename], **download_options)


# -- GPT-2 -----------------------------------------------------------------------------------------

def gpt2_config(hparams: dict, **overrides) -> GPT2Config:
    """A GPT2Config from OpenAI's ``hparams.json`` (n_vocab, n_ctx, n_embd, n_head, n_layer)."""
    if not isinstance(hparams, dict):
        raise OriginalReleaseError(f"hparams.json holds a JSON {type(hparams).__name__}, not an object of "
                                   "hyper-parameters")
    try:
        fields = dict(vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"], n_ctx=hparams["n_ctx"],
                      n_embd=hparams["n_embd"], n_head=hparams["n_head"], n_layer=hparams["n_layer"])
    except KeyError as missing:
        raise OriginalReleaseError(f"hparams.json has no {missing}") from None
    return GPT2Config(**{**fields, **overrides})


def _gpt2_name(variable: str) -> str | None:
    """Our parameter name for one of src/model.py's variables (None: not a model weight)."""
    if variable == "model/wte":
        return "wte.weight"
    if variable == "model/wpe":
        return "wpe.weight"
    match = _GPT2_VARIABLE.match(variable)
    if match is None:
        return None
    layer, module, kind = match.groups()
    name = f"{module.replace('/', '.')}.{'bias' if kind == 'b' else 'weight'}"
    return name if layer is None else f"h.{layer}.{name}"


def _checkpoint_prefix(get: Callable[[str], str]) -> str:
    """The prefix the ``checkpoint`` file names (OpenAI's: ``model.ckpt``)."""
    try:
        with open(get("checkpoint"), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return "model.ckpt"
    except UnicodeDecodeError:
        raise OriginalReleaseError("the release's `checkpoint` file is not UTF-8 text") from None
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.MULTILINE)
    return os.path.basename(match.group(1)) if match else "model.ckpt"


def read_gpt2_release(get: Callable[[str], str], n_layer: int) -> dict[str, tuple[str, Tensor]]:
    """Our parameter name -> (OpenAI's variable name, tensor), every variable CRC-checked."""
    prefix = _checkpoint_prefix(get)
    try:
        checkpoint = TFCheckpoint(get(f"{prefix}.index"),
                                  lambda shard, shards: get(data_file_name(prefix, shard, shards)))
        wanted = ["model/wte", "model/wpe", "model/ln_f/g", "model/ln_f/b"] + [
            f"model/h{i}/{module}/{kind}" for i in range(n_layer)
            for module, kinds in (("ln_1", "gb"), ("attn/c_attn", "wb"), ("attn/c_proj", "wb"), ("ln_2", "gb"),
                                  ("mlp/c_fc", "wb"), ("mlp/c_proj", "wb"))
            for kind in kinds]
        state = {}
        for variable in wanted:
            tensor = checkpoint.read_tensor(variable)
            state[_gpt2_name(variable)] = (variable, tensor[0] if variable.endswith("/w") else tensor)  # [1, in, out]
    except TFCheckpointError as err:
        raise OriginalReleaseError(str(err)) from None
    extra = sorted(v for v in checkpoint.entries if _gpt2_name(v) is not None and v not in wanted)
    if extra:
        logger.warning("the checkpoint's variables beyond the model's %d layers were left out: %s", n_layer, ", ".join(extra))
    return state


def load_tf_weights_in_gpt2(model: nn.Module, gpt2_checkpoint_path: str | os.PathLike, **download_options) -> nn.Module:
    """Copy OpenAI's GPT-2 checkpoint into ``model`` (a GPT2Model or a model with one as
    ``transformer``): ``gpt2_checkpoint_path`` is the release folder, its ``model.ckpt`` prefix, a
    URL or a name (``openai/124M``). Returns the model."""
    get = _getter(gpt2_checkpoint_path, download_options)
    return _copy_into(model, read_gpt2_release(get, model.config.n_layer), f"{gpt2_checkpoint_path}")


# -- GPT-1 -----------------------------------------------------------------------------------------

def read_gpt1_release(get: Callable[[str], str]) -> list[np.ndarray]:
    """The parameters of finetune-transformer-lm's ``model/`` folder, in their order and shapes."""
    try:
        with open(get("params_shapes.json"), encoding="utf-8") as f:
            shapes = json.load(f)
    except (OSError, ValueError) as err:
        raise OriginalReleaseError(f"cannot read params_shapes.json: {err}") from None
    if not isinstance(shapes, list) or not all(isinstance(s, list) and all(isinstance(d, int) for d in s) for s in shapes):
        raise OriginalReleaseError("params_shapes.json is not a list of shapes")
    parts = []
    for i in range(GPT1_FILES):
        name = f"params_{i}.npy"
        path = get(name)
        try:
            part = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # noqa: BLE001 (numpy's header parser fails in many ways on damage)
            raise OriginalReleaseError(f"{name} cannot be read (damaged or truncated?): {err}") from None
        if part.ndim != 1 or part.dtype != np.float32:
            raise OriginalReleaseError(f"{name} holds a {part.dtype} array of shape {list(part.shape)}, not a flat float32 one")
        parts.append(part)
    flat = np.concatenate(parts)
    if any(d < 0 for s in shapes for d in s):
        raise OriginalReleaseError("params_shapes.json holds a negative dimension")
    sizes = [math.prod(s) for s in shapes]  # Python ints: no wrap-around
    if sum(sizes) != flat.size:
        raise OriginalReleaseError(f"params_*.npy hold {flat.size} values; params_shapes.json describes {sum(sizes)}")
    return [piece.reshape(shape) for piece, shape in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]


def _gpt1_state(params: list[np.ndarray]) -> dict[str, tuple[str, Tensor]]:
    if len(params) < 2 or (len(params) - 2) % len(GPT1_BLOCK):
        raise OriginalReleaseError(f"params_shapes.json lists {len(params)} arrays; GPT-1's are 2 + 12 per layer")
    state = {"positions_embed.weight": ("params[0] (positions)", params[0]),
             "tokens_embed.weight": ("params[1] (tokens)", params[1])}
    for index, array in enumerate(params[2:], 2):
        layer, slot = divmod(index - 2, len(GPT1_BLOCK))
        state[f"h.{layer}.{GPT1_BLOCK[slot]}"] = (f"params[{index}]", array[0] if array.ndim == 3 else array)
    return {name: (source, torch.from_numpy(np.ascontiguousarray(array))) for name, (source, array) in state.items()}  # views of one copy


def gpt1_config(params: list[np.ndarray], **overrides) -> OpenAIGPTConfig:
    """Sizes from the shapes (positions, tokens, number of blocks); 12 heads unless overridden."""
    fields = dict(n_positions=params[0].shape[0], vocab_size=params[1].shape[0], n_embd=params[1].shape[1],
                  n_layer=(len(params) - 2) // len(GPT1_BLOCK))
    return OpenAIGPTConfig(**{**fields, **overrides})


def load_tf_weights_in_openai_gpt(model: nn.Module, openai_checkpoint_folder_path: str | os.PathLike,
                                  **download_options) -> nn.Module:
    """Copy finetune-transformer-lm's released weights into ``model`` (an OpenAIGPTModel or a
    model with one as ``transformer``): the folder with ``params_shapes.json``, a URL, or the name
    ``openai-gpt-original``. A token embedding with more rows (special tokens added with
    ``set_num_special_tokens``) keeps its extra rows. Returns the model."""
    state = _gpt1_state(read_gpt1_release(_getter(openai_checkpoint_folder_path, download_options)))
    body = getattr(model, "transformer", model)
    rows = body.tokens_embed.weight.shape[0]
    source, tokens = state["tokens_embed.weight"]
    if rows > tokens.shape[0]:  # fine-tuning tokens appended after the pretrained ones
        grown = body.tokens_embed.weight.detach().clone()
        grown[: tokens.shape[0]] = tokens
        state["tokens_embed.weight"] = (source, grown)
    return _copy_into(model, state, f"{openai_checkpoint_folder_path}")


# -- shared ----------------------------------------------------------------------------------------

def _check_shapes(state: dict[str, tuple[str, Tensor]], model: nn.Module, source: str) -> None:
    """Every tensor has a place of its shape in ``model``'s body (its ``transformer``, or itself)."""
    expected = {name: t.shape for name, t in getattr(model, "transformer", model).state_dict().items()}
    for name, (variable, tensor) in state.items():
        if name not in expected:
            raise OriginalReleaseError(f"{source}: {variable} has no place in the model ({name})")
        if tuple(tensor.shape) != tuple(expected[name]):
            raise OriginalReleaseError(
                f"{source}: {variable} has shape {list(tensor.shape)}, but the model's configuration "
                f"(from hparams.json or given) needs {list(expected[name])} for {name}")


def _copy_into(model: nn.Module, state: dict[str, tuple[str, Tensor]], source: str) -> nn.Module:
    _check_shapes(state, model, source)
    body = getattr(model, "transformer", model)
    with torch.no_grad():
        for name, (_, tensor) in state.items():
            body.get_parameter(name).copy_(tensor)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def read_original_release(name: str | os.PathLike, config_class: type, fetch_options: dict,
                          **overrides) -> tuple[GPT2Config | OpenAIGPTConfig, dict[str, tuple[str, Tensor]]]:
    """The config and the weights (our name -> (OpenAI's name, tensor)) of ``openai/124M`` ...,
    ``openai-gpt-original`` or a folder in their layout, for a model whose config is
    ``config_class``."""
    gpt2 = release_family(name) == "gpt2"
    if not issubclass(config_class, GPT2Config if gpt2 else OpenAIGPTConfig):
        raise OriginalReleaseError(f"{os.fspath(name)} is a {'GPT-2' if gpt2 else 'GPT'} release; load it with a "
                                   f"{'GPT2' if gpt2 else 'OpenAIGPT'} class")
    get = _getter(name, fetch_options)
    if not gpt2:
        params = read_gpt1_release(get)
        return gpt1_config(params, **overrides), _gpt1_state(params)
    try:
        with open(get("hparams.json"), encoding="utf-8") as f:
            hparams = json.load(f)
    except ValueError as err:
        raise OriginalReleaseError(f"{os.fspath(name)}: hparams.json is not valid JSON: {err}") from None
    config = gpt2_config(hparams, **overrides)
    return config, read_gpt2_release(get, config.n_layer)
