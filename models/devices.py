"""The one place where a requested device (``device_map=``, the CLI's ``--device``) becomes a
torch device. A model here lives on one device: Hugging Face's per-layer maps are refused."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ArgumentTypeError, InvalidArgumentError


def resolve_device(device_map: Any, quantize: str | None = None) -> torch.device | None:
    """None (stay on the CPU, where checkpoints load); ``"auto"``: the first CUDA GPU where this
    PyTorch sees one, else the CPU; a GPU's index; or a device as torch names it (``"cuda"``,
    ``"cuda:1"``, ``torch.device("cpu")``). Refused with ``quantize`` anywhere but the CPU (the
    quantized kernels are the CPU's). A GPU must be there now: the error comes before any
    download, not after."""
    if device_map is None:
        return None
    if isinstance(device_map, dict):
        raise InvalidArgumentError("device_map as a dict (layers over several devices) is not supported: a model "
                                   "here lives on one device; pass one, e.g. device_map='cuda'")
    if isinstance(device_map, bool) or not isinstance(device_map, (str, int, torch.device)):
        raise ArgumentTypeError(f"device_map must be a device ('cpu', 'cuda', 'cuda:1', 'auto', a GPU index), got "
                                f"{type(device_map).__name__}")
    if device_map == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() and quantize is None else torch.device("cpu")
    try:
        device = torch.device("cuda", device_map) if isinstance(device_map, int) else torch.device(device_map)
    except (RuntimeError, ValueError):
        raise InvalidArgumentError(f"device_map={device_map!r} is not a device: give 'cpu', 'cuda', 'cuda:1', "
                                   "'auto' or a GPU index") from None
    if quantize is not None and device.type != "cpu":
        raise InvalidArgumentError(f"quantize={quantize!r} is for the CPU; device_map={device_map!r} asks for {device}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidArgumentError(f"device_map={device_map!r}, but this PyTorch sees no CUDA GPU")
        if device.index is not None and device.index >= count:
            raise InvalidArgumentError(f"device_map={device_map!r}, but this PyTorch sees {count} CUDA GPU(s)")
    return device
