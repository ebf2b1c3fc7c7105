"""The model's matrix products, routed to the fastest kernel measured for inference on CPU.

Decoding reads every weight once per token, so its speed is the speed at which the products
stream weights from memory. On the benchmark machine (2-core AMD EPYC, torch's MKL build) the
stock kernels do not reach the memory bandwidth. Measured by benchmarks/matmul_bench.py, which
gives the numbers (one decode step of GPT-2 small, stock against these routes):

- one float32 row against an ``[in, out]`` weight: split the inner dimension in two and let
  ``bmm`` run both halves at once (the blocks 1.5x faster);
- every other float32 product: oneDNN's linear kernel, the one ``torch.compile`` emits on CPU
  (the LM head 2.1x; 8 rows: blocks 2.1x, head 2.5x);
- one bfloat16 row: ATen's own matrix-vector kernel, one float32-accumulated dot product per
  output over an ``[out, in]`` matrix (the weight itself, or a copy with the bias as a last
  column, which the input meets as a trailing 1: one rounding, as in oneDNN's). It streams
  bfloat16 weights about as fast as summing them does (blocks 2.2x, head 2.6x; 1.1-1.5x faster
  than oneDNN's packed kernel). With oneDNN enabled PyTorch hands ``mv`` to oneDNN, so the switch
  is turned off while such a product runs; it is process-wide, so other threads see it off
  meanwhile (restored when the last of these products in flight returns);
- other bfloat16 products: oneDNN's kernel on a copy of the weight packed in its blocked layout
  (blocks 1.6x, head 1.4x).

The bfloat16 copies are made on first use and kept while the weight lives and is unchanged (at
most two per weight; ``GPT_HUB_PACK_BFLOAT16=0`` keeps bfloat16 on the stock kernels and makes
none). Weights made under ``torch.inference_mode`` have no version counter to watch, so they get
no copies. All routes give the stock products up to float rounding. None has a backward, so they
are used only where no gradient is asked for, on CPU, outside ``torch.compile``; everything else
takes the stock kernels. ``bind`` makes the same choice once for a weight that a loop of calls will
use (generate's direct forward, models/direct_forward.py).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from functools import partial

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

# Copies made from weights, by (kind, id of the weight): the copy, and for each tensor it was made
# from (the weight, and the bias where the copy holds it) a weakref and the version it had then.
_copies: dict[tuple[str, int], tuple[Tensor, tuple[tuple[weakref.ref, int], ...]]] = {}


def _routable(weight: Tensor) -> bool:
    """Whether products with ``weight`` may leave the stock kernels, given no gradient is asked."""
    return weight.is_cpu and not torch.compiler.is_compiling()


def _inference_on_cpu(x: Tensor, weight: Tensor) -> bool:
    if not x.is_cpu or x.dtype != weight.dtype or not _routable(weight):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def _copy(kind: str, make: Callable[[], Tensor], weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``make()``, made on first use and remade whenever the weight (or bias) is replaced or
    changed in place; dropped with the weight."""
    sources = (weight,) if bias is None else (weight, bias)
    key = (kind, id(weight))
    entry = _copies.get(key)
    if entry is None or len(entry[1]) != len(sources) or any(
            ref() is not tensor or version != tensor._version for (ref, version), tensor in zip(entry[1], sources)):
        if entry is None:
            weakref.finalize(weight, _copies.pop, key, None)
        entry = (make(), tuple((weakref.ref(tensor), tensor._version) for tensor in sources))
        _copies[key] = entry
    return entry[0]


def _versioned(*tensors: Tensor | None) -> bool:
    """Whether a copy made from these could follow them: an inference tensor has no version
    counter, so a change to it could not be noticed."""
    return not any(t is not None and t.is_inference() for t in tensors)


def _onednn_weight(weight: Tensor, stored_in_out: bool) -> Tensor | None:
    """The weight to hand oneDNN's linear kernel where that was measured faster for inference on
    CPU (``[out, in]``, or its packed copy), else None. For weights ``_routable`` accepts."""
    if _ONEDNN_LINEAR is None:
        return None
    out_in = weight.t() if stored_in_out else weight
    if weight.dtype == torch.float32:
        return out_in
    if weight.dtype == torch.bfloat16 and PACK_BFLOAT16 and _ONEDNN_PACK is not None and _versioned(weight):
        return _copy("packed", lambda: _ONEDNN_PACK(out_in, 1), weight)
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


def _dot_matrix(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Tensor | None:
    """For bfloat16: ``[out, in]`` contiguous, with the bias as one more column where there is
    one (``[out, in + 1]``): the weight itself where it is that already, else a kept copy. None
    where this route is off."""
    if weight.dtype != torch.bfloat16 or not PACK_BFLOAT16:
        return None
    if bias is None and not stored_in_out and weight.is_contiguous():
        return weight
    if not _versioned(weight, bias):
        return None
    out_in = weight.t() if stored_in_out else weight

    def make() -> Tensor:
        return out_in.contiguous() if bias is None else torch.cat((out_in, bias[:, None]), 1)  # [out, in (+1)]

    return _copy("dot", make, weight, bias)


# The input's trailing 1 for a bias column (only bfloat16 takes this route).
_ONE = torch.ones(1, dtype=torch.bfloat16)
# torch.backends.mkldnn.enabled is process-wide: it stays off while any dot product is in flight.
_onednn_switch = threading.Lock()
_dot_products_in_flight = 0
_onednn_was_enabled = True


def _dot_product(x: Tensor, matrix: Tensor, biased: bool) -> Tensor:
    """One row ``[1, in]`` against ``_dot_matrix``'s ``[out, in (+1)]``: ``[1, out]``."""
    global _dot_products_in_flight, _onednn_was_enabled
    vector = x.reshape(-1)  # [in]
    if biased:  # the bias column: the input gets a trailing 1
        vector = torch.cat((vector, _ONE))  # [in + 1]
    with _onednn_switch:
        if _dot_products_in_flight == 0:
            _onednn_was_enabled = torch._C._get_mkldnn_enabled()  # what torch.backends.mkldnn.enabled reads
            torch._C._set_mkldnn_enabled(False)
        _dot_products_in_flight += 1
    try:
        return torch.mv(matrix, vector)[None]  # [1, out]
    finally:
        with _onednn_switch:
            _dot_products_in_flight -= 1
            if _dot_products_in_flight == 0:
                torch._C._set_mkldnn_enabled(_onednn_was_enabled)


def _onednn_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


def _stock_product(x: Tensor, weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Tensor:
    """PyTorch's own product: ``addmm`` for an ``[in, out]`` weight (x ``[rows, in]``), ``F.linear``
    for ``[out, in]`` (x ``[..., in]``)."""
    return torch.addmm(bias, x, weight) if stored_in_out else F.linear(x, weight, bias)


def _route(weight: Tensor, bias: Tensor | None, stored_in_out: bool, one_row: bool) -> Callable[[Tensor], Tensor]:
    """The product ``x -> x @ W + b`` for x ``[rows, in]`` (of a single row, or not) by the
    fastest kernel measured, for a weight ``_routable`` accepts and no gradient asked."""
    if one_row:
        if stored_in_out and _splits(weight):
            return partial(_split_product, weight=weight, bias=bias)
        matrix = _dot_matrix(weight, bias, stored_in_out)
        if matrix is not None:
            return partial(_dot_product, matrix=matrix, biased=bias is not None)
    onednn = _onednn_weight(weight, stored_in_out)
    if onednn is not None:
        return partial(_onednn_product, weight=onednn, bias=bias)
    return partial(_stock_product, weight=weight, bias=bias, stored_in_out=stored_in_out)


def linear_in_out(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight + bias`` for x ``[rows, in]`` and a weight stored ``[in, out]`` (Conv1D)."""
    if not _inference_on_cpu(x, weight):
        return _stock_product(x, weight, bias, stored_in_out=True)
    return _route(weight, bias, True, x.size(0) == 1)(x)


def linear_out_in(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``: x ``[..., in]`` and a weight stored ``[out, in]`` (nn.Linear, the LM head)."""
    flat = x.reshape(-1, x.size(-1))  # [rows, in]
    if not _inference_on_cpu(flat, weight):
        return _stock_product(x, weight, bias, stored_in_out=False)
    return _route(weight, bias, False, flat.size(0) == 1)(flat).view(*x.shape[:-1], -1)  # [..., out]


def bind(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Callable[[Tensor], Tensor]:
    """``x -> linear_in_out(x, weight, bias)`` (or ``linear_out_in``) for x ``[rows, in]`` of the
    weight's dtype and device, for a loop of calls without gradients while the weight stays as it
    is (generate): the route for single rows and the one for several are each chosen once, on
    first use. The per-call checks cost little alone but add up over ~50 products a token."""
    if not _routable(weight):
        return partial(_stock_product, weight=weight, bias=bias, stored_in_out=stored_in_out)
    routes: dict[bool, Callable[[Tensor], Tensor]] = {}

    def product(x: Tensor) -> Tensor:
        one_row = x.size(0) == 1
        route = routes.get(one_row)
        if route is None:
            route = routes[one_row] = _route(weight, bias, stored_in_out, one_row)
        return route(x)

    return product


class Linear(torch.nn.Linear):
    """``nn.Linear`` whose product goes through ``linear_out_in``."""

    def forward(self, x: Tensor) -> Tensor:
        return linear_out_in(x, self.weight, self.bias)
