"""The model's matrix products, each sent to the kernel that streams weights fastest for
inference on CPU, chosen per call (no process-wide setting is read or changed).

Decoding reads every weight once per token, so its speed is the speed at which the products
stream weights from memory, and PyTorch's stock kernels do not always reach it. The routes
(their speeds are measured by benchmarks/decode_parts_bench.py and matmul_bench.py, and recorded in
docs/performance.md):

- one row (batch-1 decoding), float32 or bfloat16: the fastest on this machine of PyTorch's route
  below and the native kernels (models/native: AVX-512 and AVX2 builds, and for ``[in, out]``
  weights the ``[out, in]`` kernel on a transposed copy, which for float32 must be 10% faster to be
  worth its memory), timed at first use by models/route_choice.py;
- PyTorch's route for one float32 row against an ``[in, out]`` weight: the inner dimension split in
  two, both halves in one ``bmm`` (both cores stream the weight), then summed;
- other float32 products: oneDNN's linear operator (the one ``torch.compile`` emits on CPU);
- bfloat16: oneDNN's linear operator on a copy of the weight packed in its blocked layout
  (models/packed_weights.py); on a CPU for which oneDNN has no bfloat16 product (AVX2 only), where
  PyTorch's stock bfloat16 product runs 10 to 100 times slower than float32's, a float32 product
  over the weight widened a block of output rows at a time (``widened_product``), rounded once;
- 2 to ``FEW_ROWS`` rows (a batch's step, a short prompt), float32 or bfloat16: the fastest on
  this machine of the route above and the native few-row kernels (eight rows a pass over the
  weight, streamed once), timed at first use per shape and power of two of rows;
- everything else, and anything that needs a gradient, on another device or under
  ``torch.compile``: the stock product.

Every route gives the stock product up to float rounding. ``bind`` makes the choice once for a
weight that a loop of calls will use (generate).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from . import route_choice
from .native import products as native
from .packed_weights import ONEDNN_BFLOAT16, derived, find_onednn, packed
from .pages import copy_in_huge_pages, empty_in_huge_pages

Product = Callable[[Tensor], Tensor]
_ONEDNN_LINEAR = find_onednn("_linear_pointwise")
# The dtype of products over weights widened from bfloat16 or integers: bfloat16 where oneDNN
# computes it (with AVX-512 or AMX), else float32 (PyTorch's own bfloat16 product is slow there).
WIDENED_DTYPE = torch.bfloat16 if ONEDNN_BFLOAT16 else torch.float32
WIDENED_AT_ONCE = 4096  # output rows widened at a time (a multiple of int4's tiles of 16): a bounded copy
# Up to this many rows (a batch's step, a short prompt) the native few-row kernels are candidates
# beside PyTorch's route, measured per shape and per power of two of rows: they stream the weight
# once at the speed of memory, where oneDNN's float32 GEMM reads GPT-2's block weights at half of
# it for eight rows; more rows are bound by arithmetic, where the GEMM's blocking wins.
FEW_ROWS = 32
# More rows are measured at this many: PyTorch's float32 GEMM and oneDNN's rank differently by
# CPU and layout (oneDNN 1.2x faster for GPT-2's head, 1.3x slower for its [in, out] block weights on
# an Intel Xeon without AMX), and the order at 128 rows held at 1024 there.
MANY_ROWS = 128


def widened_product(flat: Tensor, out_features: int, widen: Callable[[int, int], Tensor], dtype: torch.dtype,
                    scales: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """``flat @ W.T (+ bias)`` ``[rows, out]`` in ``dtype``, through one product per
    ``WIDENED_AT_ONCE`` output rows of W, ``widen(start, end)`` giving those rows ``[end - start,
    in]`` in ``flat``'s dtype, each piece times its ``scales`` (in float32) if given: the copies are
    a piece's at most (GPT-2 XL's head widened whole would be 160 MB, a whole result in float32
    twice its size)."""
    y = torch.empty(flat.size(0), out_features, dtype=dtype)
    for start in range(0, out_features, WIDENED_AT_ONCE):
        end = min(start + WIDENED_AT_ONCE, out_features)
        piece = F.linear(flat, widen(start, end), None if bias is None else bias[start:end])  # [rows, end - start]
        y[:, start:end] = piece if scales is None else piece.float().mul_(scales[start:end])
    return y


def _widens(weight: Tensor) -> bool:
    """Whether several rows against this weight take a float32 product over it widened."""
    return weight.dtype == torch.bfloat16 and WIDENED_DTYPE == torch.float32


def _float32_product(x: Tensor, weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Tensor:
    """bfloat16 ``x @ W + b`` for x ``[..., in]`` computed in float32 over the weight widened a
    block of output rows at a time (exact), rounded once to bfloat16."""
    out_in = weight.t() if stored_in_out else weight  # [out, in]
    flat = x.reshape(-1, x.size(-1)).float()  # [rows, in]
    wide_bias = None if bias is None else bias.float()
    y = widened_product(flat, out_in.size(0), lambda start, end: out_in[start:end].float(), x.dtype, bias=wide_bias)
    return y.view(*x.shape[:-1], out_in.size(0))  # [..., out]


def _few_rows(variant: str, weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Product | None:
    """A build's native product of several rows (decode.c's ``few_*``), or None."""
    if not _natively(weight, bias) or weight.numel() == 0 or not native.available(variant):
        return None
    return native.float_product(variant, weight, bias, stored_in_out, several_rows=True)


def rows_bucket(rows: int) -> int:
    """The number of rows a choice for ``rows`` (at least 2) is measured at: the power of two at
    or above it up to ``FEW_ROWS``, ``MANY_ROWS`` above."""
    return 1 << (rows - 1).bit_length() if rows <= FEW_ROWS else MANY_ROWS


def _several_rows_candidates(weight: Tensor, bias: Tensor | None, stored_in_out: bool,
                             bucket: int) -> dict[str, Product]:
    """The products for ``bucket`` rows: PyTorch's route (``torch``); up to ``FEW_ROWS``, the
    builds' few-row kernels (``wide``, ``narrow``); more, for float32 where the route is oneDNN's,
    PyTorch's own GEMM (``stock``)."""
    route = _torch_route(weight, bias, stored_in_out, False)
    found = {"torch": route}
    if bucket <= FEW_ROWS:
        for variant in ("wide", "narrow"):
            few = _few_rows(variant, weight, bias, stored_in_out)
            if few is not None:
                found[variant] = few
    elif weight.dtype == torch.float32 and isinstance(route, partial) and route.func is _onednn_product:
        found["stock"] = partial(_stock_product, weight=weight, bias=bias, stored_in_out=stored_in_out)
    return found


def _several_rows_ranking(weight: Tensor, bias: Tensor | None, stored_in_out: bool, bucket: int) -> tuple[str, ...]:
    """The candidates for ``bucket`` rows against this weight's shape and dtype, fastest first
    (measured once; many rows, bound by arithmetic, on one weight in cache)."""
    in_features, out_features = weight.shape if stored_in_out else weight.shape[::-1]
    key = ("rows", weight.dtype, stored_in_out, in_features, out_features, bucket)

    def synthetic() -> dict[str, Product]:
        zeros = empty_in_huge_pages(weight.shape, weight.dtype).zero_()  # in memory as the weights' (models/pages.py)
        return _several_rows_candidates(zeros, None if bias is None else torch.zeros_like(bias), stored_in_out, bucket)

    return route_choice.ranking(key, synthetic, weight.numel() * weight.element_size(),
                                lambda: torch.zeros(bucket, in_features, dtype=weight.dtype),
                                streamed=bucket <= FEW_ROWS)


def _several_rows(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Product:
    """The product of several rows, by the fastest measured for their bucket of rows
    (``rows_bucket``) of PyTorch's routes and the few-row kernels."""
    route = _torch_route(weight, bias, stored_in_out, False)
    if not _natively(weight, bias) or weight.numel() == 0:
        return route

    def choose(bucket: int) -> Product:
        candidates = _several_rows_candidates(weight, bias, stored_in_out, bucket)  # makes no copy
        if len(candidates) == 1:
            return route
        names = _several_rows_ranking(weight, bias, stored_in_out, bucket)
        return route_choice.first_built(names, candidates.get) or route

    return by_rows(route, choose)


def by_rows(route: Product, choose: Callable[[int], Product]) -> Product:
    """``x -> `` the product ``choose(bucket)`` gives for x's rows (chosen once per bucket,
    ``rows_bucket``) from 2 rows on, ``route`` for one or none."""
    chosen: dict[int, Product] = {}

    def product(x: Tensor) -> Tensor:
        rows = x.numel() // max(x.size(-1), 1)
        if rows < 2:
            return route(x)
        bucket = rows_bucket(rows)
        found = chosen.get(bucket)
        if found is None:
            found = chosen[bucket] = choose(bucket)
        return found(x)

    return product


def _routable(weight: Tensor) -> bool:
    """Whether products with ``weight`` may leave the stock kernels, given no gradient is asked."""
    return weight.is_cpu and not torch.compiler.is_compiling()


def _inference_on_cpu(x: Tensor, weight: Tensor) -> bool:
    if not x.is_cpu or x.dtype != weight.dtype or not _routable(weight):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def _onednn_weight(weight: Tensor, stored_in_out: bool) -> Tensor | None:
    """The weight to hand oneDNN's linear operator (``[out, in]``, or its packed copy), or None
    where the stock product is the better choice."""
    if _ONEDNN_LINEAR is None:
        return None
    out_in = weight.t() if stored_in_out else weight
    if weight.dtype == torch.float32:
        return out_in
    if weight.dtype == torch.bfloat16:
        return packed(out_in, weight)
    return None


def _splits(weight: Tensor) -> bool:
    """Whether one float32 row against this ``[in, out]`` weight takes the split product."""
    return weight.size(0) % 2 == 0 and weight.dtype == torch.float32 and weight.is_contiguous()


def _split_product(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """One row ``[..., in]`` times ``[in, out]``: each half of the inner dimension in its own batch
    of ``bmm``, then the halves summed."""
    half = weight.size(0) // 2
    halves = torch.bmm(x.reshape(2, 1, half), weight.view(2, half, -1))  # [2, 1, out]
    return halves.sum(0).add_(bias).view(*x.shape[:-1], -1)  # [..., out]


def _onednn_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """oneDNN's linear operator takes ``[..., in]`` as it is."""
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


def _stock_product(x: Tensor, weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Tensor:
    """PyTorch's own product for x ``[..., in]``: ``addmm`` for an ``[in, out]`` weight,
    ``F.linear`` for ``[out, in]``."""
    if not stored_in_out:
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.size(-1))  # [rows, in]
    y = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
    return y.view(*x.shape[:-1], weight.size(1))  # [..., out]


def _torch_route(weight: Tensor, bias: Tensor | None, stored_in_out: bool, one_row: bool) -> Product:
    """PyTorch's fastest product ``x -> x @ W + b`` for x ``[..., in]`` (a single row, or not)."""
    if one_row and stored_in_out and bias is not None and _splits(weight):
        return partial(_split_product, weight=weight, bias=bias)
    onednn = _onednn_weight(weight, stored_in_out)
    if onednn is not None:
        return partial(_onednn_product, weight=onednn, bias=bias)
    if not one_row and _widens(weight):
        return partial(_float32_product, weight=weight, bias=bias, stored_in_out=stored_in_out)
    return partial(_stock_product, weight=weight, bias=bias, stored_in_out=stored_in_out)


def _candidate(name: str, weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Product | None:
    """One named one-row product on ``weight``: ``torch``, a native build (``wide``, ``narrow``),
    or for an ``[in, out]`` weight a build's ``[out, in]`` kernel on a transposed copy
    (``wide-rows``, ``narrow-rows``); None where it cannot run here."""
    if name == "torch":
        return _torch_route(weight, bias, stored_in_out, True)
    variant, _, rows = name.partition("-")
    if not native.available(variant):
        return None
    if not rows:
        return native.float_product(variant, weight, bias, stored_in_out)
    if not stored_in_out:
        return None
    out_in = derived(weight, "out_in", lambda: copy_in_huge_pages(weight.t()))
    return None if out_in is None else native.float_product(variant, out_in, bias, False)


def _candidates(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> dict[str, Product]:
    found = {name: _candidate(name, weight, bias, stored_in_out)
             for name in ("torch", "wide", "narrow", "wide-rows", "narrow-rows")}
    return {name: product for name, product in found.items() if product is not None}


# The candidates that keep a transposed copy. For float32 the copy buys only a layout, which must be
# clearly faster to be worth the memory; for bfloat16 it buys the CPU's bfloat16 dot products
# (AVX512_BF16), which the [in, out] kernel cannot use, and it is taken whenever it is faster.
_COPYING = frozenset({"wide-rows", "narrow-rows"})


def _natively(weight: Tensor, bias: Tensor | None) -> bool:
    """Whether the native kernels could take this weight (and bias) for one row."""
    return (weight.dtype in native.ACTIVATIONS and weight.dim() == 2 and weight.is_contiguous()
            and (bias is None or (bias.dtype == weight.dtype and bias.is_contiguous() and bias.dim() == 1)))


def _ranking(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> tuple[str, ...]:
    """The one-row candidates for this weight's shape and dtype, fastest first (measured once)."""
    in_features, out_features = weight.shape if stored_in_out else weight.shape[::-1]
    key = ("float", weight.dtype, stored_in_out, in_features, out_features)

    def synthetic() -> dict[str, Product]:
        zeros = empty_in_huge_pages(weight.shape, weight.dtype).zero_()  # in memory as the weights' (models/pages.py)
        return _candidates(zeros, None if bias is None else torch.zeros_like(bias), stored_in_out)

    return route_choice.ranking(key, synthetic, weight.numel() * weight.element_size(),
                                lambda: torch.zeros(1, in_features, dtype=weight.dtype),
                                copying=_COPYING if weight.dtype == torch.float32 else frozenset())


def _route(weight: Tensor, bias: Tensor | None, stored_in_out: bool, one_row: bool) -> Product:
    """The product ``x -> x @ W + b`` for x ``[..., in]`` (a single row, or not) by the fastest
    route, for a weight ``_routable`` accepts and no gradient asked."""
    if one_row and _natively(weight, bias):
        return _one_row(weight, bias, stored_in_out)
    return _torch_route(weight, bias, stored_in_out, True) if one_row else _several_rows(weight, bias, stored_in_out)


def _one_row(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Product:
    """The first of the weight's ranking that can be built for it, else PyTorch's route."""
    return (route_choice.first_built(_ranking(weight, bias, stored_in_out),
                                     lambda name: _candidate(name, weight, bias, stored_in_out))
            or _torch_route(weight, bias, stored_in_out, True))


def native_one_row(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> native.NativeProduct | None:
    """The fastest native one-row product for this weight (models/native/block.py calls it from
    C), or None where no native kernel takes it or PyTorch's kernels are forced."""
    if not (_routable(weight) and _natively(weight, bias)):
        return None
    return route_choice.fastest_native(_ranking(weight, bias, stored_in_out),
                                       lambda name: _candidate(name, weight, bias, stored_in_out))


def native_route(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> native.NativeProduct | None:
    """The product a bound layer runs for one row, where that is a native one (so that C may run
    it in the layer's place and compute the same), else None."""
    if not (_routable(weight) and _natively(weight, bias)):
        return None
    route = _one_row(weight, bias, stored_in_out)
    return route if isinstance(route, native.NativeProduct) else None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Tensor:
    """``x @ W + b`` for x ``[..., in]`` and a weight stored ``[in, out]`` (Conv1D) or ``[out, in]``
    (nn.Linear), by the route for this call."""
    if _inference_on_cpu(x, weight):
        return _route(weight, bias, stored_in_out, x.numel() == x.size(-1))(x)
    return _stock_product(x, weight, bias, stored_in_out)


def bind(weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Product:
    """``x -> linear(x, weight, bias, stored_in_out)`` for inputs of the weight's dtype and device,
    for a loop of calls without gradients while the weight stays as it is (generate): the routes
    for single rows and for several are each chosen once, on first use."""
    if not _routable(weight):
        return partial(linear, weight=weight, bias=bias, stored_in_out=stored_in_out)
    routes: dict[bool, Product] = {}

    def product(x: Tensor) -> Tensor:
        one_row = x.numel() == x.size(-1)
        route = routes.get(one_row)
        if route is None:
            route = routes[one_row] = _route(weight, bias, stored_in_out, one_row)
        return route(x)

    return product
