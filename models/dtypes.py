"""The one place where a requested dtype (``torch_dtype=``/``dtype=``) becomes a torch dtype."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidArgumentError

_NAMES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
          "bfloat16": torch.bfloat16}


def _default() -> torch.dtype:
    default = torch.get_default_dtype()
    return default if default in _NAMES.values() else torch.float32


def resolve_dtype(torch_dtype: Any = None, dtype: Any = None, *,
                  weights: Mapping[str, Tensor] | None = None) -> torch.dtype | str:
    """The dtype the model's weights get. ``torch_dtype`` and ``dtype`` are two names for one
    argument (Hugging Face's old and new); each may be a torch dtype, its name, ``"auto"`` (the
    checkpoint's own) or None (torch's default dtype, as a module's parameters get; float32 where
    that is one a model cannot have, such as float64). ``"auto"`` is returned as such until
    ``weights`` are given, then it is the dtype of their first floating-point tensor."""
    if torch_dtype is not None and dtype is not None and resolve_dtype(torch_dtype) != resolve_dtype(dtype):
        raise InvalidArgumentError(f"torch_dtype={torch_dtype!r} and dtype={dtype!r} disagree; give one of them")
    value = torch_dtype if torch_dtype is not None else dtype
    if value is None:
        return _default()
    if value == "auto":
        if weights is None:
            return "auto"
        floats = (t.dtype for t in weights.values() if t.is_floating_point())
        return next(floats, _default())
    if isinstance(value, torch.dtype):
        if value not in _NAMES.values():
            raise InvalidArgumentError(f"torch_dtype must be float32, float16 or bfloat16, got {value}")
        return value
    name = str(value).removeprefix("torch.")
    if name not in _NAMES:
        raise InvalidArgumentError(f"torch_dtype must be 'float32', 'float16', 'bfloat16' or 'auto', got {value!r}")
    return _NAMES[name]
