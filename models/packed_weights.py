"""Copies of weights in the layout a kernel reads fastest, for inference on CPU: oneDNN's blocked
layout for its bfloat16 product, ``[out, in]`` for the native one-row kernels. A copy is made on
first use and kept beside the weight:

- bounded: one copy per live weight and kind, dropped with the weight (a ``weakref.finalize``);
- current: remade when the weight is changed in place (its version counter moved) or given other
  memory (``param.data = ...``, its data pointer moved);
- never made for weights created under ``torch.inference_mode`` (no version counter to watch),
  nor oneDNN's when ``GPT_HUB_PACK_BFLOAT16=0`` or where oneDNN has no bfloat16 product for this
  CPU (AVX2 only: it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT); bfloat16 products then take the
  stock kernels.

It is a cache of this library's own, in this module; nothing outside it changes.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ..locks import ForkSafeLock
from .native.build import cpu_flags


def find_onednn(name: str):
    """One of oneDNN's operators in this build of torch, or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return getattr(torch.ops.mkldnn, name)
    except (AttributeError, RuntimeError):  # a build without it
        return None


def onednn_has_bfloat16() -> bool:
    """Whether oneDNN computes bfloat16 products on this CPU (its packing refuses otherwise)."""
    supported = find_onednn("_is_mkldnn_bf16_supported")
    try:
        return supported is not None and bool(supported())
    except RuntimeError:
        return False


def bfloat16_arithmetic(flags: frozenset[str] | None) -> bool:
    """Whether a CPU with these flags (None: unknown) multiplies bfloat16 itself (AVX512_BF16 or
    AMX): without it oneDNN emulates bfloat16 from AVX-512, and 1024 rows of GPT-2 ran 4x slower
    than float32 over the weights widened (an Intel Xeon whose AMX its hypervisor hides)."""
    return flags is None or not {"avx512_bf16", "amx_bf16"}.isdisjoint(flags)


_PACK = find_onednn("_reorder_linear_weight")
CAN_PACK = onednn_has_bfloat16()
# oneDNN's bfloat16 products are the route for several bfloat16 rows only where they run at
# bfloat16's speed; elsewhere (AVX2 only, or AVX-512 without BF16) several rows widen to float32.
ONEDNN_BFLOAT16 = CAN_PACK and bfloat16_arithmetic(cpu_flags())
ENABLED = os.environ.get("GPT_HUB_PACK_BFLOAT16", "1") != "0" and _PACK is not None and ONEDNN_BFLOAT16

# (id(weight), kind) -> (the copy, a weakref to the weight, (its data pointer, its version) when copied)
_copies: dict[tuple[int, str], tuple[Tensor, weakref.ref, tuple[int, int]]] = {}
_lock = ForkSafeLock()


def derived(weight: Tensor, kind: str, make: Callable[[], Tensor]) -> Tensor | None:
    """The copy of ``weight`` that ``make`` gives (one per ``kind``), made on first use and kept
    while the weight lives and stays unchanged (its memory and version counter as they were: an
    in-place change moves the counter, ``param.data = ...`` the memory); None for weights made
    under inference mode."""
    if weight.is_inference():
        return None
    key = (id(weight), kind)
    state = (weight.data_ptr(), weight._version)  # read before copying: a change meanwhile remakes it
    entry = _copies.get(key)
    if entry is not None and entry[1]() is weight and entry[2] == state:
        return entry[0]
    copy = make()
    with _lock:
        if key not in _copies:
            weakref.finalize(weight, _copies.pop, key, None)
        _copies[key] = (copy, weakref.ref(weight), state)
    return copy


def drop_stale(weights: Iterable[Tensor]) -> None:
    """Drop the copies of ``weights`` that no longer match them: ``model.to('cuda')`` or
    ``model.half()`` keep each Parameter and give it other memory, and its copy would otherwise
    hold host memory for as long as the weight lives."""
    by_id = {id(weight): weight for weight in weights}
    with _lock:
        # A snapshot in one step: a collection while listing could free a dead weight, whose
        # finalizer (which takes no lock: it may run in this very thread) drops its entry.
        for key, (_, ref, state) in _copies.copy().items():
            weight = by_id.get(key[0])
            if weight is not None and ref() is weight and (weight.is_inference() or
                                                           (weight.data_ptr(), weight._version) != state):
                _copies.pop(key, None)


def packed(out_in: Tensor, weight: Tensor) -> Tensor | None:
    """``out_in`` (the ``[out, in]`` view of ``weight``) reordered for oneDNN, or None where no
    copy can be kept."""
    if not ENABLED:
        return None
    return derived(weight, "onednn", lambda: _PACK(out_in, 1))
