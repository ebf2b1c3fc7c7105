"""The numbers of weight-only quantization: the schemes, their checks, quantizing a float weight
to integer values and scales, and int4's nibble packing in checkpoints (models/quantize.py
builds the layers on them)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidArgumentError
from .pages import copy_in_huge_pages

SCHEMES = ("int8", "int4")
GROUP_SIZES = (32, 64, 128, 256)
DEFAULT_GROUP_SIZE = 32
QUANT_METHOD = "gpt_hub"
SCALE_DTYPE = torch.bfloat16  # the kernels' activations and scales


def check_scheme(quantize: object, group_size: object = DEFAULT_GROUP_SIZE, argument: str = "quantize") -> None:
    """Refuse a scheme other than ``"int8"``/``"int4"`` or an int4 group size the kernel lacks."""
    if quantize not in SCHEMES:
        raise InvalidArgumentError(f"{argument} must be one of {', '.join(map(repr, SCHEMES))}, got {quantize!r}")
    if quantize == "int4" and group_size not in GROUP_SIZES:
        raise InvalidArgumentError(f"group_size must be one of {', '.join(map(str, GROUP_SIZES))}, got {group_size!r}")


def check_quantizable(dtype: torch.dtype, device: torch.device, name: str = "quantize") -> None:
    """Refuse quantizing a model of another dtype than the kernels' activations, or off the CPU
    (``name`` is the argument's, for the error)."""
    if dtype not in (torch.float32, torch.bfloat16) or device.type != "cpu":
        raise InvalidArgumentError(f"{name} needs a float32 or bfloat16 model on the CPU, not {dtype} on {device}")


def quantize_weight(weight: Tensor, scheme: str, group_size: int) -> tuple[Tensor, Tensor]:
    """``weight`` ``[out, in]`` as ``(q, scales)``: int8 ``q`` (``[-127, 127]`` or ``[-8, 7]``) of
    the same shape and bfloat16 scales ``[out]`` (int8) or ``[out, in / g]`` (int4).

    int8: ``scale = max |w| / 127`` per output. int4, as llama.cpp's q4_0 does: the group's value
    of largest magnitude becomes -8 (``scale = that value / -8``, so negative for a positive one),
    which uses all 16 levels where ``max |w| / 7`` would use 15; values beyond +7.5 steps (of the
    other sign, near the largest magnitude) are clamped to 7, within one step."""
    w = weight.detach().float()
    groups = w.view(w.size(0), -1, w.size(1) if scheme == "int8" else group_size)  # [out, groups, g]
    if scheme == "int8":
        scales = (groups.abs().amax(-1) / 127).clamp_min(1e-30).to(SCALE_DTYPE)  # [out, 1]
        low, high = -127, 127
    else:
        extreme = groups.gather(-1, groups.abs().argmax(-1, keepdim=True)).squeeze(-1)  # [out, groups]
        scales = (extreme / -8).to(SCALE_DTYPE)
        scales = torch.where(scales == 0, torch.full_like(scales, 1e-30), scales)  # an all-zero group
        low, high = -8, 7
    q = (groups / scales.float()[..., None]).round().clamp(low, high)
    return copy_in_huge_pages(q, torch.int8).view_as(w), (scales.squeeze(-1) if scheme == "int8" else scales)


def pack_nibbles(q: Tensor) -> Tensor:
    """int4 values ``[out, in]`` in ``[-8, 7]`` as the checkpoint's uint8 ``[out, in / 2]``."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_nibbles(packed: Tensor) -> Tensor:
    """The inverse of ``pack_nibbles``: int8 ``[out, in]``."""
    values = torch.stack((packed & 15, packed >> 4), -1).view(packed.size(0), -1)  # [out, in]
    return values.to(torch.int8) - 8
