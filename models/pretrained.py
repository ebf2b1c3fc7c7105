"""What every model class shares: initialisation, tied embeddings, resizing, and loading and
saving checkpoints in Hugging Face's layout (the loading itself is models/loading.py)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from ..download import DOWNLOAD_OPTIONS, download_options
from ..errors import ArgumentTypeError, InvalidArgumentError, UnknownArgumentError, flag, take_neutral, unset_or_flag
from .checkpoint import PYTORCH_NAME, SAFETENSORS_NAME, write_safetensors, write_torch_pickle
from .config_base import PretrainedConfig
from .devices import place, resolve_device
from .dtypes import resolve_dtype
from .layers import Conv1D, ConvertedWhole, Linear
from .loading import load_pretrained, materialize, on_meta
from .memory import check_fits_in_memory
from .quantize import DEFAULT_GROUP_SIZE, QuantizedLinear, check_scheme, quantization_config, quantize_model
from .quantized_values import check_quantizable
from .shards import INDEX_SUFFIX, plan_shards, shard_bytes, stale_weights, write_sharded


def check_placement(quantize: str | None, device_map: Any, torch_dtype: Any = None, dtype: Any = None, *,
                    names: tuple[str, str] = ("quantize", "device_map")) -> tuple[torch.device | None, torch.dtype | str]:
    """The scheme, device and dtype a model is asked for, checked together before anything is
    fetched (a quantized model is float32 or bfloat16, on the CPU): the device (``resolve_device``)
    and the dtype (``resolve_dtype``; ``"auto"`` is checked once the checkpoint is read). ``names``
    are the quantize and device arguments' (a command line's options), for the errors."""
    if quantize is not None:
        check_scheme(quantize, argument=names[0])
    device = resolve_device(device_map, quantize, name=names[1])
    resolved = resolve_dtype(torch_dtype, dtype)
    if quantize is not None and resolved != "auto":
        check_quantizable(resolved, torch.device("cpu"), name=names[0])
    return device, resolved


# transformers' loading options that pasted code passes, at values that change nothing here
LOADING_NEUTRAL = {
    "attn_implementation": (lambda value: value is None or value in ("eager", "sdpa"),
                            "has no such choice: attention is PyTorch's fused scaled_dot_product_attention "
                            "('sdpa'), which computes what 'eager' does"),
    "low_cpu_mem_usage": (unset_or_flag, "takes True or False: loading builds on the meta device either way"),
    "use_safetensors": (lambda value: value is None or value is True,
                        "has no such choice: model.safetensors is read first, pytorch_model.bin (weights only, no "
                        "pickled code) where there is none"),
    "trust_remote_code": (unset_or_flag, "takes True or False: no code of a checkpoint ever runs here"),
}


class PreTrainedModel(ConvertedWhole):
    config_class: type[PretrainedConfig] = PretrainedConfig
    base_model_prefix = "transformer"

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            where = type(config).__module__.split(".")[0]
            hint = (f" from {where}: convert it with {self.config_class.__name__}.from_dict(config.to_dict()), or pass "
                    "it as from_pretrained's or an entrypoint's config=" if callable(getattr(config, "to_dict", None))
                    and where != __name__.split(".")[0] else "")
            raise ArgumentTypeError(f"{type(self).__name__} needs this repository's {self.config_class.__name__}, "
                                    f"got a {type(config).__name__}{hint}")
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
        if head is None or not self.config.tie_word_embeddings or isinstance(head, QuantizedLinear):
            return  # a quantized head is a copy; the embedding stays exact
        embedding = self.get_input_embeddings()
        if embedding.weight.is_meta and not head.weight.is_meta:
            embedding.weight = head.weight  # the checkpoint stored the shared weight under the head's name
        else:
            head.weight = embedding.weight

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Give the token embedding ``new_num_tokens`` rows (``len(tokenizer)`` after adding
        tokens; None: as many as now), rounded up to a multiple of ``pad_to_multiple_of``: existing
        rows are kept, the tied head follows, and ``config.vocab_size`` is updated. New rows are the
        mean of the old ones (``mean_resizing``, Hugging Face's default: a new token starts where
        the model's average token is, not at a random point), else initialised as at training."""
        old = self.get_input_embeddings()
        size = old.num_embeddings if new_num_tokens is None else new_num_tokens
        for name, value in (("new_num_tokens", size), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        mean_resizing = flag("mean_resizing", mean_resizing)
        if pad_to_multiple_of is not None:
            size = -(-size // pad_to_multiple_of) * pad_to_multiple_of
        if size == old.num_embeddings:
            return old
        if self.quantization() is not None:
            raise InvalidArgumentError("resize_token_embeddings needs the float model: load it without quantize=")
        factory = dict(device=old.weight.device, dtype=old.weight.dtype)
        new = self._with_rows_of(nn.Embedding(size, old.embedding_dim, **factory), old, mean_resizing)
        self.set_input_embeddings(new)
        head = self.get_output_embeddings()
        if head is not None and not self.config.tie_word_embeddings:
            self.lm_head = self._with_rows_of(Linear(head.in_features, size, bias=False, **factory), head,
                                              mean_resizing)
        self.config.vocab_size = size  # the config object the base model shares
        self.config.validate()
        self.tie_weights()
        return new

    def _with_rows_of(self, new: nn.Module, old: nn.Module, mean_resizing: bool) -> nn.Module:
        """``new`` initialised, then given the rows it shares with ``old``'s weight; rows beyond
        them the mean of ``old``'s (averaged in float32) where ``mean_resizing``."""
        self._init_weights(new)
        kept = min(new.weight.shape[0], old.weight.shape[0])
        with torch.no_grad():
            new.weight[:kept] = old.weight[:kept]
            if mean_resizing and new.weight.shape[0] > kept:
                new.weight[kept:] = old.weight.float().mean(0).to(new.weight.dtype)
        return new

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """Keep only each block's input in training and recompute the rest during backward, as
        transformers' method does: less memory for fine-tuning, at about a third more compute.
        ``gradient_checkpointing_kwargs``: ``{"use_reentrant": bool}`` (default False)."""
        options = dict(gradient_checkpointing_kwargs or {})
        unknown = sorted(set(options) - {"use_reentrant"})
        if unknown:
            raise UnknownArgumentError.naming(unknown, ["use_reentrant"], "gradient_checkpointing_kwargs")
        reentrant = flag("use_reentrant", options.get("use_reentrant", False))
        for body in self._checkpointable():
            body.gradient_checkpointing, body.checkpoint_reentrant = True, reentrant

    def gradient_checkpointing_disable(self) -> None:
        for body in self._checkpointable():
            body.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(body.gradient_checkpointing for body in self._checkpointable())

    def _checkpointable(self) -> list[nn.Module]:
        """The bodies whose blocks the forward can run checkpointed (models/decoder.py)."""
        return [m for m in self.modules() if hasattr(type(m), "gradient_checkpointing")]

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """How many parameters, each counted once (the tied head is the embedding); as in
        transformers, ``exclude_embeddings`` leaves out every embedding (tokens and positions)."""
        skip = ({id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
                if flag("exclude_embeddings", exclude_embeddings) else set())
        only_trainable = flag("only_trainable", only_trainable)
        unique = {id(p): p for p in self.parameters() if id(p) not in skip and (p.requires_grad or not only_trainable)}
        return sum(p.numel() for p in unique.values())

    # -- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: PretrainedConfig, *, torch_dtype: Any = None, dtype: Any = None,
                    **kwargs: Any) -> PreTrainedModel:
        """A model with freshly initialised weights (nothing downloaded); transformers' loading
        options are taken where they change nothing (``LOADING_NEUTRAL``)."""
        if take_neutral(kwargs, LOADING_NEUTRAL, f"{cls.__name__}.from_config"):
            raise UnknownArgumentError.naming(sorted(kwargs), ["torch_dtype", "dtype", *LOADING_NEUTRAL],
                                              f"{cls.__name__}.from_config")
        weights_dtype = resolve_dtype(torch_dtype, dtype)
        weights_dtype = torch.get_default_dtype() if weights_dtype == "auto" else weights_dtype
        check_fits_in_memory(config, weights_dtype)
        model = on_meta(cls, config)
        materialize(model, weights_dtype)
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
        quantize: str | None = None,
        device_map: Any = None,
        **kwargs: Any,
    ) -> PreTrainedModel:
        """Load a checkpoint: a directory with ``config.json`` and ``model.safetensors`` (or
        ``pytorch_model.bin``), or a weights file with ``config.json`` beside it; a checkpoint
        name or hub repository id (downloaded); one of OpenAI's original releases.

        Keywords: ``config`` (a config or its path, instead of the checkpoint's), ``state_dict``
        (weights to use instead of the checkpoint's), ``torch_dtype``/``dtype`` (``float32``,
        ``bfloat16``, ``float16`` or ``"auto"`` for the checkpoint's own), the download options
        (``cache_dir``, ``revision``, ``force_download``, ``local_files_only``, ``token``,
        ``progress``), ``quantize`` (``"int8"`` or ``"int4"``: see ``quantize``; a checkpoint saved
        quantized loads quantized), ``device_map`` (one device for the whole model: ``"cuda"``,
        ``"cuda:1"``, a GPU index, ``"cpu"``, or ``"auto"``, a GPU where there is one); every other
        keyword overrides a config field (``num_labels=3``). transformers' ``attn_implementation``
        (``"eager"``, ``"sdpa"``), ``low_cpu_mem_usage``, ``use_safetensors=True`` and
        ``trust_remote_code`` are taken where they change nothing (``LOADING_NEUTRAL``).
        """
        config = cls.config_class.from_argument(config)
        device, dtype = check_placement(quantize, device_map, torch_dtype, dtype)
        take_neutral(kwargs, LOADING_NEUTRAL, f"{cls.__name__}.from_pretrained")
        fetch_options = download_options(kwargs)
        cls.config_class.check_overrides(kwargs, f"{cls.__name__}.from_pretrained",
                                         also=("config", "state_dict", "torch_dtype", "dtype", "quantize",
                                               "device_map", *DOWNLOAD_OPTIONS))
        model = load_pretrained(cls, pretrained_model_name_or_path, config=config, state_dict=state_dict,
                                dtype=dtype, fetch_options=fetch_options,
                                overrides=kwargs, quantize=quantize)
        return place(model, device, device_map)

    def quantize(self, scheme: str, group_size: int = DEFAULT_GROUP_SIZE) -> PreTrainedModel:
        """Quantize the weights of every block projection and of the language-model head, in
        place, for inference on CPU (models/quantize.py): ``"int8"`` per output channel, or
        ``"int4"`` in groups of ``group_size`` inputs (32, 64, 128 or 256). The token embedding
        stays exact (a tied head becomes a quantized copy). Returns the model, in eval mode; it
        refuses training and gradients from then on."""
        check_scheme(scheme, group_size)
        if self.quantization() is not None:
            raise InvalidArgumentError(f"the model is already quantized ({self.quantization()['scheme']})")
        check_quantizable(self.dtype, self.device)
        quantize_model(self, scheme, group_size)
        config = self.config.replace()  # the config may be another model's too: record it on a copy
        config.extra["quantization_config"] = quantization_config(scheme, group_size)
        for module in self.modules():
            if getattr(module, "config", None) is self.config and module is not self:
                module.config = config
        self.config = config
        return self.eval()

    def quantization(self) -> dict | None:
        """The model's ``quantization_config`` (scheme and group size), or None if not quantized."""
        return self.config.extra.get("quantization_config")

    def save_pretrained(self, save_directory: str | os.PathLike, *, safe_serialization: bool = True,
                        max_shard_size: int | str | None = None, state_dict: dict[str, Tensor] | None = None,
                        is_main_process: bool = True) -> None:
        """Write ``config.json`` and the weights as Hugging Face transformers does:
        ``model.safetensors`` (``pytorch_model.bin`` with ``safe_serialization=False``), or shards
        of at most ``max_shard_size`` (bytes, or ``"5GB"``) and their index where the weights are
        larger (models/shards.py). Weights files an earlier save left there are removed, once
        the new ones are whole. ``state_dict``: these tensors in place of the model's;
        ``is_main_process=False`` (the other ranks of a distributed run) writes nothing."""
        safe, limit = flag("safe_serialization", safe_serialization), shard_bytes(max_shard_size)
        if not flag("is_main_process", is_main_process):
            return
        os.makedirs(save_directory, exist_ok=True)
        tensors, seen = {}, set()
        for name, tensor in (self.state_dict() if state_dict is None else state_dict).items():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if tensor.numel() and key in seen:  # a tied weight is stored once, under its first name
                continue
            seen.add(key)
            tensors[name] = tensor
        config = self.config.replace()
        config.extra["architectures"] = [type(self).__name__]
        weights_name, write = (SAFETENSORS_NAME, write_safetensors) if safe else (PYTORCH_NAME, write_torch_pickle)
        files = plan_shards(tensors, limit, weights_name)
        written = set(files)
        if len(files) == 1:
            [(file, group)] = files.items()
            write(group, os.path.join(save_directory, file))  # atomic on its own
        else:
            write_sharded(os.fspath(save_directory), files, write, weights_name + INDEX_SUFFIX)
            written.add(weights_name + INDEX_SUFFIX)
        config.save_pretrained(save_directory)
        for stale in stale_weights(save_directory, written):
            os.remove(stale)
