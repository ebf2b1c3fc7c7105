"""The model's matrix products, routed to the fastest kernel measured for inference on CPU.

Decoding reads every weight once per token, so its speed is the speed at which the products
stream weights from memory. On the benchmark machine (2-core AMD EPYC, torch's MKL build) the
stock kernels do not reach the memory bandwidth. Measured by benchmarks/matmul_bench.py, which
gives the numbers (one decode step of GPT-2 small, stock against these routes):

- one float32 row against an ``[in, out]`` weight: split the inner dimension in two and let
  ``bmm`` run both halves at once (the blocks 1.5x faster);
- every other float32 product: oneDNN's linear kernel, the one ``torch.compile`` emits on CPU
  (the LM head 2.1x; 8 rows: blocks 2.1x, head 2.5x);
- bfloat16: oneDNN's kernel on a copy of the weight packed in its blocked layout, made on first
  use and kept while the weight lives and is unchanged (blocks 1.6x, head 1.4x; this costs a second
  copy of the weights, ``GPT_HUB_PACK_BFLOAT16=0`` turns it off). Weights made under
  ``torch.inference_mode`` have no version counter to watch, so they keep the stock kernels.

All give the stock products up to float rounding. None has a backward, so they are used only
where no gradient is asked for, on CPU, outside ``torch.compile``; everything else takes the stock
kernels. ``bind`` makes the same choice once for a weight that a loop of calls will use
(generate's direct forward, models/direct_forward.py).
"""

from __future__ import annotations

import os
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor


def _find_onednn(name: str):
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return getattr(torch.ops.mkldnn, name)
    except (AttributeError, RuntimeError):  # a build without it
        return None


_ONEDNN_LINEAR = _find_onednn("_linear_pointwise")
_ONEDNN_PACK = _find_onednn("_reorder_linear_weight")
PACK_BFLOAT16 = os.environ.get("GPT_HUB_PACK_BFLOAT16", "1") != "0"

# Packed copies, by id of the weight they were made from: (weakref to it, its version, the copy).
_packed: dict[int, tuple[weakref.ref, int, Tensor]] = {}


def _routable(weight: Tensor) -> bool:
    """Whether products with ``weight`` may leave the stock kernels, given no gradient is asked."""
    return weight.is_cpu and not torch.compiler.is_compiling()


def _inference_on_cpu(x: Tensor, weight: Tensor) -> bool:
    if not x.is_cpu or x.dtype != weight.dtype or not _routable(weight):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def _packed_copy(weight: Tensor, stored_in_out: bool) -> Tensor:
    """oneDNN's blocked copy of ``weight`` (as ``[out, in]``), made on first use and remade
    whenever the weight is replaced or changed in place."""
    entry = _packed.get(id(weight))
    if entry is None or entry[0]() is not weight or entry[1] != weight._version:
        if entry is None:
            weakref.finalize(weight, _packed.pop, id(weight), None)
        entry = (weakref.ref(weight), weight._version, _ONEDNN_PACK(weight.t() if stored_in_out else weight, 1))
        _packed[id(weight)] = entry
    return entry[2]


def _onednn_weight(weight: Tensor, stored_in_out: bool) -> Tensor | None:
    """The weight to hand oneDNN's linear kernel where that was measured faster for inference on
    CPU (``[out, in]``, or its packed copy), else None. For weights ``_routable`` accepts."""
    if _ONEDNN_LINEAR is None:
        return None
    if weight.dtype == torch.float32:
        return weight.t() if stored_in_out else weight
    if weight.dtype == torch.bfloat16 and PACK_BFLOAT16 and _ONEDNN_PACK is not None and not weight.is_inference():
        # (an inference tensor has no version counter: a change to it could not be noticed)
        return _packed_copy(weight, stored_in_out)
    return None


def _splits(weight: Tensor) -> bool:
    """Whether one float32 row against this ``[in, out]`` weight takes the split product."""
    return weight.size(0) % 2 == 0 and weight.dtype == torch.float32 and weight.is_contiguous()


def _split_product(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """One row ``[1, in]`` times ``[in, out]``: each half of the inner dimension in its own batch of
    ``bmm``, so that both cores stream the weight, then the halves summed."""
    half = weight.size(0) // 2
    halves = torch.bmm(x.reshape(2, 1, half), weight.view(2, half, -1))  # [2, 1, out]
    return halves.sum(0).add_(bias)  # [1, out]


def linear_in_out(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight + bias`` for x ``[rows, in]`` and a weight stored ``[in, out]`` (Conv1D)."""
    if _inference_on_cpu(x, weight):
        if x.size(0) == 1 and _splits(weight):
            return _split_product(x, weight, bias)
        onednn = _onednn_weight(weight, True)
        if onednn is not None:
            return _ONEDNN_LINEAR(x, onednn, bias, "none", [], "")
    return torch.addmm(bias, x, weight)


def linear_out_in(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``: x ``[..., in]`` and a weight stored ``[out, in]`` (nn.Linear, the LM head)."""
    flat = x.reshape(-1, x.size(-1))  # [rows, in]
    onednn = _onednn_weight(weight, False) if _inference_on_cpu(flat, weight) else None
    if onednn is None:
        return F.linear(x, weight, bias)
    return _ONEDNN_LINEAR(flat, onednn, bias, "none", [], "").view(*x.shape[:-1], -1)  # [..., out]


def bind(weight: Tensor, bias: Tensor | None, stored_in_out: bool):
    """``x -> linear_in_out(x, weight, bias)`` (or ``linear_out_in``) for x ``[rows, in]`` of the
    weight's dtype and device, with the kernel chosen once: for a loop of calls without gradients
    while the weight stays as it is (generate). The per-call checks cost little alone but add up
    over ~50 products a token."""
    inference = _routable(weight)
    onednn = _onednn_weight(weight, stored_in_out) if inference else None
    if onednn is not None:
        product = lambda x: _ONEDNN_LINEAR(x, onednn, bias, "none", [], "")  # noqa: E731
    elif stored_in_out:
        product = lambda x: torch.addmm(bias, x, weight)  # noqa: E731
    else:
        product = lambda x: F.linear(x, weight, bias)  # noqa: E731
    if inference and stored_in_out and _splits(weight):
        return lambda x: _split_product(x, weight, bias) if x.size(0) == 1 else product(x)
    return product


class Linear(torch.nn.Linear):
    """``nn.Linear`` whose product goes through ``linear_out_in``."""

    def forward(self, x: Tensor) -> Tensor:
        return linear_out_in(x, self.weight, self.bias)
