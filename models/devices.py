"""The one place where a requested device (``device_map=``, the CLI's ``--device``) becomes a
torch device. A model here lives on one device: Hugging Face's per-layer maps are refused."""

from __future__ import annotations

import numbers
from typing import Any

import torch

from ..errors import ArgumentTypeError, InvalidArgumentError

_EXAMPLES = "give 'cpu', 'cuda', 'cuda:1', 'auto' or a GPU index"


def resolve_device(device_map: Any, quantize: str | None = None, name: str = "device_map") -> torch.device | None:
    """None (stay on the CPU, where checkpoints load); ``"auto"``: the current CUDA GPU where this
    PyTorch sees one (and the model is not quantized), else the CPU; a GPU's index; a device as
    torch names it (``"cuda"``, ``"cuda:1"``, ``torch.device("cpu")``); or Hugging Face's map of the
    whole model to one device, ``{"": 0}`` (any map whose parts all go to one device is read so); a
    string of digits is a GPU's index too (a command line's). Refused with ``quantize`` anywhere but the CPU (the
    quantized kernels are the CPU's). The device must be there now: the error comes before any
    download, not after. ``name`` is the argument's, for the errors."""
    if device_map is None:
        return None
    if isinstance(device_map, dict):
        places = set(device_map.values())
        if len(places) != 1:
            raise InvalidArgumentError(f"{name} places parts of the model on {len(places) or 'no'} devices: a model "
                                       "here lives on one; pass one, e.g. device_map='cuda'")
        return resolve_device(places.pop(), quantize, f"{name}[{next(iter(device_map))!r}]")
    if isinstance(device_map, bool) or not isinstance(device_map, (str, numbers.Integral, torch.device)):
        raise ArgumentTypeError(f"{name} must be a device ({_EXAMPLES}), got {type(device_map).__name__}")
    if isinstance(device_map, str) and device_map.isdigit():  # "1" from a command line: GPU 1
        device_map = int(device_map)
    if device_map == "auto":
        if quantize is None and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        device = (torch.device("cuda", int(device_map)) if isinstance(device_map, numbers.Integral)
                  else torch.device(device_map))
    except (RuntimeError, ValueError):
        raise InvalidArgumentError(f"{name}={device_map!r} is not a device: {_EXAMPLES}") from None
    if quantize is not None and device.type != "cpu":
        raise InvalidArgumentError(f"quantize={quantize!r} is for the CPU; {name}={device_map!r} asks for {device}")
    if device.type == "meta":
        raise InvalidArgumentError(f"{name}={device_map!r} would load no weights: build on the meta device with "
                                   "`with torch.device('meta'):` instead")
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu...
    if device.type != "cpu" and hasattr(backend, "is_available") and hasattr(backend, "device_count"):
        count = backend.device_count() if backend.is_available() else 0
        if count == 0:
            raise InvalidArgumentError(f"{name}={device_map!r}, but this PyTorch sees no {device.type} device")
        if device.index is not None and device.index >= count:
            raise InvalidArgumentError(f"{name}={device_map!r}, but this PyTorch sees {count} {device.type} "
                                       "device(s)")
    return device


def place(model, device: torch.device | None, device_map: Any):
    """``model`` moved to ``device`` (from ``resolve_device``). A checkpoint saved quantized
    (known only once read) stays on the CPU under ``"auto"`` and is refused on another device."""
    if device is None or device == model.device:
        return model
    scheme = model.quantization()
    if scheme is not None and device.type != "cpu":
        if device_map == "auto":
            return model
        raise InvalidArgumentError(f"the checkpoint is quantized ({scheme['scheme']}), which runs on the CPU; "
                                   f"device_map={device_map!r} asks for {device}")
    return model.to(device)
