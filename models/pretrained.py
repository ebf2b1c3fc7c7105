"""What every model class shares: loading and saving checkpoints in Hugging Face's layout.

Loading builds the model on the meta device and assigns the checkpoint's tensors to it, so the
weights are allocated once (and, from safetensors, mapped from the file rather than copied); only
parameters the checkpoint lacks (a new head) are allocated and initialised.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..download import download_options, resolve_file
from .checkpoint import SAFETENSORS_NAME, WEIGHTS_NAMES, CheckpointError, load_weights, write_safetensors
from .layers import Conv1D
from .matmul import Linear
from .openai_release import from_original_release, is_original_release
from .config import CONFIG_NAME, ConfigError, PretrainedConfig

logger = logging.getLogger(__name__)

# Buffers that old checkpoints carry and today's code derives (the causal mask, -1e4).
_LEGACY_BUFFERS = (".attn.bias", ".attn.masked_bias", "position_ids")
_DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def skeleton() -> Iterator[None]:
    """Build modules on the meta device without their default initialisation: every weight is
    assigned from a checkpoint or initialised by ``_init_weights`` afterwards, and initialising a
    meta tensor makes torch import its compiler stack (about a second, once per process)."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "constant_", "trunc_normal_")
    saved = {name: getattr(nn.init, name) for name in names}
    try:
        for name in names:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        with torch.device("meta"):
            yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def materialize(module: nn.Module, dtype: torch.dtype, recurse: bool = True) -> None:
    """Give a meta module's parameters real, uninitialised memory (``to_empty`` without the
    imports it drags in)."""
    for owner in (module.modules() if recurse else [module]):
        for name, param in list(owner.named_parameters(recurse=False)):
            if param.is_meta:
                setattr(owner, name, nn.Parameter(torch.empty(param.shape, dtype=dtype), requires_grad=param.requires_grad))


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """``torch_dtype`` as given: a torch dtype, its name, ``"auto"`` (the checkpoint's), or None."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and dtype not in _DTYPES.values():
            raise ValueError(f"torch_dtype must be float32, float16 or bfloat16, got {dtype}")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"torch_dtype must be 'float32', 'float16', 'bfloat16' or 'auto', got {dtype!r}")
    return _DTYPES[name]


class PreTrainedModel(nn.Module):
    config_class: type[PretrainedConfig] = PretrainedConfig
    base_model_prefix = "transformer"

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        if str(torch.get_default_device()) != "meta":
            check_fits_in_memory(config, torch.get_default_dtype())

    # -- subclasses provide -------------------------------------------------------------------

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) weights, zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, Conv1D)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return getattr(self, self.base_model_prefix).get_input_embeddings()

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        getattr(self, self.base_model_prefix).set_input_embeddings(embedding)

    def get_output_embeddings(self) -> nn.Module | None:
        return getattr(self, "lm_head", None)

    # -- weights --------------------------------------------------------------------------------

    def post_init(self) -> None:
        """End of every ``__init__``: initialise what no inner model initialised yet (a head
        wraps a base model that already initialised itself), then tie. Nothing on meta."""
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights(only_new=True)
        self.tie_weights()

    def init_weights(self, only_new: bool = False) -> None:
        """Random initialisation, as for training from scratch, then weight tying. Children go
        before their parents, so a block may override its layers' defaults."""
        for module in reversed(list(self.modules())):
            if only_new and getattr(module, "_initialised", False):
                continue
            self._init_weights(module)
            module._initialised = True
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the input embedding with the language-model head, where the config asks for it."""
        head = self.get_output_embeddings()
        if head is None or not self.config.tie_word_embeddings:
            return
        embedding = self.get_input_embeddings()
        if embedding.weight.is_meta and not head.weight.is_meta:
            embedding.weight = head.weight  # the checkpoint stored the shared weight under the head's name
        else:
            head.weight = embedding.weight

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Give the token embedding ``new_num_tokens`` rows (``len(tokenizer)`` after adding
        tokens): existing rows are kept, new ones initialised, the tied head follows, and
        ``config.vocab_size`` is updated."""
        old = self.get_input_embeddings()
        if new_num_tokens == old.num_embeddings:
            return old
        if new_num_tokens < 1:
            raise ValueError(f"new_num_tokens must be positive, got {new_num_tokens}")
        factory = dict(device=old.weight.device, dtype=old.weight.dtype)
        new = self._with_rows_of(nn.Embedding(new_num_tokens, old.embedding_dim, **factory), old)
        self.set_input_embeddings(new)
        head = self.get_output_embeddings()
        if head is not None and not self.config.tie_word_embeddings:
            self.lm_head = self._with_rows_of(Linear(head.in_features, new_num_tokens, bias=False, **factory), head)
        self.config.vocab_size = new_num_tokens  # the config object the base model shares
        self.config.validate()
        self.tie_weights()
        return new

    def _with_rows_of(self, new: nn.Module, old: nn.Module) -> nn.Module:
        """``new`` initialised, then given the rows it shares with ``old``'s weight."""
        self._init_weights(new)
        kept = min(new.weight.shape[0], old.weight.shape[0])
        with torch.no_grad():
            new.weight[:kept] = old.weight[:kept]
        return new

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        skip = {id(self.get_input_embeddings().weight)} if exclude_embeddings else set()
        unique = {id(p): p for p in self.parameters() if id(p) not in skip}
        return sum(p.numel() for p in unique.values())

    # -- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: PretrainedConfig, *, torch_dtype: Any = None) -> PreTrainedModel:
        """A model with freshly initialised weights (nothing downloaded)."""
        dtype = parse_dtype(torch_dtype)
        dtype = dtype if isinstance(dtype, torch.dtype) else torch.get_default_dtype()
        check_fits_in_memory(config, dtype)
        with skeleton():
            model = cls(config)
        materialize(model, dtype)
        model.init_weights()
        return model.eval()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        config: PretrainedConfig | str | os.PathLike | None = None,
        state_dict: dict[str, Tensor] | None = None,
        torch_dtype: Any = None,
        dtype: Any = None,
        **kwargs: Any,
    ) -> PreTrainedModel:
        """Load a checkpoint: a directory with ``config.json`` and ``model.safetensors`` (or
        ``pytorch_model.bin``), or a weights file with ``config.json`` beside it.

        Keywords: ``config`` (a config or its path, instead of the checkpoint's), ``state_dict``
        (weights to use instead of the checkpoint's), ``torch_dtype``/``dtype`` (``float32``,
        ``bfloat16``, ``float16`` or ``"auto"`` for the checkpoint's own), the download options
        (``cache_dir``, ``revision``, ``force_download``, ``local_files_only``); every other keyword
        overrides a config field (``num_labels=3``).
        """
        fetch_options = download_options(kwargs)
        target = parse_dtype(torch_dtype if torch_dtype is not None else dtype)
        path = pretrained_model_name_or_path
        if is_original_release(path) and config is None and state_dict is None:
            return from_original_release(cls, path, torch_dtype=target, download_options=fetch_options, **kwargs)

        if isinstance(config, PretrainedConfig):
            config = config.replace(**kwargs) if kwargs else config
        else:
            config_source = config if config is not None else path
            config = cls.config_class.from_pretrained(config_source, **fetch_options, **kwargs)

        if state_dict is None:
            given_file = isinstance(path, (str, os.PathLike)) and os.path.isfile(path)
            if given_file and os.path.basename(path) != CONFIG_NAME:
                weights_path = os.fspath(path)
            else:
                weights_path = resolve_file(path, WEIGHTS_NAMES, **fetch_options)
            state_dict = load_weights(weights_path, target if isinstance(target, torch.dtype) else None)
        return cls._from_state_dict(config, state_dict, target, source=str(path))

    @classmethod
    def _from_state_dict(cls, config: PretrainedConfig, state_dict: dict[str, Tensor],
                         dtype: torch.dtype | str | None, source: str) -> PreTrainedModel:
        if dtype == "auto":
            floats = [t.dtype for t in state_dict.values() if t.is_floating_point()]
            dtype = floats[0] if floats else torch.get_default_dtype()
        dtype = dtype or torch.get_default_dtype()
        check_fits_in_memory(config, dtype)
        with skeleton():
            model = cls(config)
        expected = model.state_dict()
        weights = _match_keys(model, state_dict, source)
        for name, tensor in weights.items():
            want = expected[name]
            if tensor.shape != want.shape:
                raise CheckpointError(
                    f"{source}: weight {name!r} has shape {list(tensor.shape)}, the model expects "
                    f"{list(want.shape)} (does the config match the checkpoint?)"
                )
            if tensor.is_floating_point() and tensor.dtype != dtype:
                weights[name] = tensor.to(dtype)
        model.load_state_dict(weights, strict=False, assign=True)
        model.tie_weights()
        _initialise_missing(model, dtype, source)
        return model.eval()

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` as Hugging Face transformers does."""
        os.makedirs(save_directory, exist_ok=True)
        tensors, seen = {}, set()
        for name, tensor in self.state_dict().items():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if tensor.numel() and key in seen:  # a tied weight is stored once, under its first name
                continue
            seen.add(key)
            tensors[name] = tensor
        config = self.config.replace(architectures=[type(self).__name__])
        write_safetensors(tensors, os.path.join(save_directory, SAFETENSORS_NAME))
        config.save_pretrained(save_directory)


def _match_keys(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Rename checkpoint keys to the model's: with or without the ``transformer.`` prefix,
    dropping the legacy attention buffers. Logs what is left over."""
    expected = set(model.state_dict())
    prefix = PreTrainedModel.base_model_prefix + "."
    matched, unexpected = {}, []
    for key, tensor in state_dict.items():
        for candidate in (key, prefix + key, key.removeprefix(prefix)):
            if candidate in expected:
                matched[candidate] = tensor
                break
        else:
            if not key.endswith(_LEGACY_BUFFERS):
                unexpected.append(key)
    if not matched:
        raise CheckpointError(f"{source}: none of its {len(state_dict)} weights belong to {type(model).__name__}")
    if unexpected:
        logger.warning("%s: weights not used by %s: %s", source, type(model).__name__, ", ".join(unexpected))
    return matched


def _initialise_missing(model: PreTrainedModel, dtype: torch.dtype, source: str) -> None:
    """Allocate and initialise what the checkpoint did not provide: a task head may be new, but
    the transformer body must come from the checkpoint."""
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if not missing:
        return
    body = [name for name in missing if name.startswith(model.base_model_prefix + ".") or not hasattr(model, model.base_model_prefix)]
    if body:
        raise CheckpointError(f"{source} lacks weights the model needs: {', '.join(body)}")
    owners = {name.rsplit(".", 1)[0] for name in missing}
    for owner in sorted(owners):
        module = model.get_submodule(owner)
        materialize(module, dtype, recurse=False)
        model._init_weights(module)
    logger.warning("%s: newly initialised, to be trained: %s", source, ", ".join(missing))


def check_fits_in_memory(config: PretrainedConfig, dtype: torch.dtype) -> None:
    """Refuse, naming the field, a config whose weights alone exceed this machine's memory."""
    sizes = config.parameter_sizes()
    itemsize = dtype.itemsize
    need = sum(sizes.values()) * itemsize
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        field = max(sizes, key=sizes.get)
        raise ConfigError(
            f"{type(config).__name__}.{field}={getattr(config, field)} makes the weights need "
            f"{need / 2**30:.1f} GiB, more than this machine's {have / 2**30:.1f} GiB of memory"
        )
