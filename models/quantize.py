"""Weight-only quantization for inference on CPU: int8 per output channel, or int4 in groups
along the inner dimension, both symmetric, through PyTorch's own CPU kernels
(``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``) for a few rows, and for many through
one product over the weight widened (``kernels.widened_product``: in bfloat16, or in float32 on a
CPU for which oneDNN has no bfloat16 product). The kernels take activations and
scales of one dtype, and only their bfloat16 paths are fast (float32 activations run 5 to 70
times slower: docs/performance.md), so the product runs in bfloat16 whatever the model's dtype,
and its result comes back in the model's dtype (float32 or bfloat16). A single row (batch-1
decoding) takes the fastest here of those and the native kernels (models/native), chosen by
models/route_choice.py; the native int4 kernel quantizes the row to int8 per block of 32.

Every ``Conv1D`` projection of the blocks and the language-model head are replaced by a
``QuantizedLinear``; the token embedding stays exact, so a tied head becomes a quantized copy.

Checkpoint format (``save_pretrained``): each quantized layer stores ``qweight`` and ``scales``
(and ``bias``) instead of ``weight``; ``config.json`` holds ``quantization_config``
``{"quant_method": "gpt_hub", "scheme": "int8" | "int4", "group_size": g}``. Scales are
bfloat16 (a float32 load widens them exactly, and they are narrowed back exactly).

- int8: ``qweight`` int8 ``[out, in]``, ``scales`` ``[out]``; ``W = qweight * scales[:, None]``.
- int4: ``qweight`` uint8 ``[out, in / 2]``, two values of ``q + 8`` per byte (column ``2j`` in
  the low nibble, ``2j + 1`` in the high one), ``q`` in ``[-8, 7]``; ``scales`` ``[out, in / g]``;
  ``W[o, i] = q[o, i] * scales[o, i // g]``. The kernel's own packed layout is made on loading.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ..errors import GPTHubError, InvalidArgumentError
from . import route_choice
from .kernels import FEW_ROWS, WIDENED_DTYPE, by_rows, widened_product
from .layers import Conv1D, Linear
from .native import products as native
from .pages import copy_in_huge_pages, empty_in_huge_pages
from .quantized_values import (DEFAULT_GROUP_SIZE, QUANT_METHOD, SCALE_DTYPE, check_scheme, pack_nibbles,
                               quantize_weight, unpack_nibbles)

_INT4_ROWS = 16  # the int4 kernel packs output rows in multiples of this
# From this many rows (a prompt, a batch of 16), int8 runs as a product over its values widened
# (exactly, to kernels.WIDENED_DTYPE) and is scaled after: 2-3x faster there than PyTorch's int8 kernel, which reads
# better for fewer rows (docs/performance.md).
_WIDENED_INT8_ROWS = 16
# int4's values are widened from the native kernel's tiles (decode.c, about 2 ms a GPT-2 block):
# from this many rows that pays (2.5x PyTorch's int4 kernel at 1024 rows).
_WIDENED_INT4_ROWS = 48


class QuantizedUseError(GPTHubError, RuntimeError):
    """A quantized model was asked to train or to give gradients: it is for inference only."""


def _int8_product(x: Tensor, qweight: Tensor, scales: Tensor, bias: Tensor | None, out_features: int) -> Tensor:
    flat = x.reshape(-1, x.size(-1)).to(SCALE_DTYPE).contiguous()  # [rows, in]: the kernels take 2-D,
    # contiguous inputs
    if flat.size(0) >= _WIDENED_INT8_ROWS:
        y = widened_product(flat.to(WIDENED_DTYPE), out_features, lambda start, end: qweight[start:end].to(WIDENED_DTYPE),
                            x.dtype, scales)  # [rows, out]
    else:
        y = torch.ops.aten._weight_int8pack_mm(flat, qweight, scales).to(x.dtype)  # [rows, out]
    return (y if bias is None else y.add_(bias)).view(*x.shape[:-1], out_features)


def _int4_product(x: Tensor, packed: Tensor, scales_zeros: Tensor, group_size: int, bias: Tensor | None,
                  out_features: int, tiles: tuple[Tensor, Tensor] | None = None) -> Tensor:
    flat = x.reshape(-1, x.size(-1)).to(SCALE_DTYPE).contiguous()  # [rows, in]
    if tiles is not None and flat.size(0) >= _WIDENED_INT4_ROWS:
        values, scales = tiles

        def widen(start: int, end: int) -> Tensor:
            return native.int4_widened(values, scales, start, end - start, group_size).to(WIDENED_DTYPE)

        y = widened_product(flat.to(WIDENED_DTYPE), out_features, widen, x.dtype)
    else:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, group_size, scales_zeros).to(x.dtype)
        y = y[:, :out_features]  # [rows, out]: the kernel's rows are padded to 16s
    return (y if bias is None else y + bias).reshape(*x.shape[:-1], out_features)


class QuantizedLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored quantized (see the module docstring), for inference:
    no gradients, no training mode."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scheme: str, group_size: int,
                 dtype: torch.dtype):
        super().__init__()
        check_scheme(scheme, group_size, "scheme")
        if scheme == "int4" and in_features % group_size:
            raise InvalidArgumentError(f"group_size={group_size} does not divide the layer's {in_features} inputs")
        self.in_features, self.out_features = in_features, out_features
        self.scheme, self.group_size, self.dtype = scheme, group_size, dtype
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None
        # int8: the kernel's operands are the checkpoint's. int4: the kernel's packing, made by ``load``.
        # Plain attributes, not buffers: ``model.float()`` must not widen the bfloat16 scales the kernels need.
        self.qweight: Tensor = torch.empty(0, dtype=torch.int8)
        self.scales: Tensor = torch.empty(0, dtype=dtype)
        # The native one-row kernels' operands (models/native): int8 shares ``qweight`` and takes
        # float32 scales; int4 has its own copy of the values, in blocks. None without a build.
        self.native: tuple[Tensor, Tensor] | None = None

    def _apply(self, fn, recurse: bool = True):
        self.check_conversion(fn)
        return super()._apply(fn, recurse)

    def check_conversion(self, fn) -> None:
        """Raise if ``fn`` (what ``to``, ``half()``, ``cuda()``... apply to each tensor) would take
        the layer off the CPU or change its activations' dtype: its kernels are the CPU's, and its
        values and scales are attributes that ``to`` does not convert."""
        probe = fn(torch.empty(0, dtype=self.dtype))
        if probe.device.type != "cpu" or probe.dtype != self.dtype:
            raise InvalidArgumentError(f"a quantized model runs on the CPU with {self.dtype} activations and cannot "
                                       f"be converted to {probe.dtype} on {probe.device}; load the float checkpoint "
                                       f"to convert it (and quantize it after, on the CPU)")

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor | None, scheme: str, group_size: int) -> QuantizedLinear:
        """The quantized layer of a float ``weight`` ``[out, in]``."""
        layer = cls(weight.size(1), weight.size(0), bias is not None, scheme, group_size, weight.dtype)
        q, scales = quantize_weight(weight, scheme, group_size)
        layer.load(q, scales)
        if bias is not None:
            layer.bias.data = bias.detach().clone()
        return layer

    def load(self, q: Tensor, scales: Tensor) -> None:
        """Take int8 values ``q`` ``[out, in]`` and their scales (the checkpoint's shapes)."""
        native_ready = native.available("wide") or native.available("narrow")
        if self.scheme == "int8":
            self.qweight, self.scales = q.contiguous(), scales.to(SCALE_DTYPE).contiguous()
            self.native = (self.qweight, native.int8_scales(self.scales)) if native_ready else None
            return
        natively = native_ready and native.int4_fits(self.in_features, self.group_size)
        self.native = native.int4_tiles(q, scales.to(SCALE_DTYPE)) if natively else None
        pad = -self.out_features % _INT4_ROWS
        unsigned = nn.functional.pad(q.to(torch.int32) + 8, (0, 0, 0, pad), value=8)  # [out padded, in]
        self.qweight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned, 1)
        scales = nn.functional.pad(scales.to(SCALE_DTYPE), (0, 0, 0, pad), value=1)  # [out padded, groups]
        self.scales = torch.stack((scales.t(), torch.zeros_like(scales.t())), -1).contiguous()  # [groups, out, 2]

    def values(self) -> tuple[Tensor, Tensor]:
        """``(q, scales)`` in the checkpoint's shapes; int4 reads its values back through the
        kernel (an exact identity product: each result is a small integer)."""
        if self.scheme == "int8":
            return self.qweight, self.scales
        eye = torch.eye(self.in_features, dtype=SCALE_DTYPE)
        ones = torch.stack((torch.ones_like(self.scales[..., 0]), torch.zeros_like(self.scales[..., 0])), -1)
        q = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.qweight, self.group_size, ones)  # [in, out]
        return q.t()[:self.out_features].round().to(torch.int8), self.scales[..., 0].t()[:self.out_features]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.qweight.numel() == 0:  # built on the meta device for a load: the checkpoint's shapes
            int8 = self.scheme == "int8"
            q = torch.empty(self.out_features, self.in_features // (1 if int8 else 2),
                            dtype=torch.int8 if int8 else torch.uint8, device="meta")
            s = torch.empty((self.out_features,) if int8 else (self.out_features, self.in_features // self.group_size),
                            dtype=SCALE_DTYPE, device="meta")
        else:
            q, s = self.values()
            q = q if self.scheme == "int8" else pack_nibbles(q)
        destination[prefix + "qweight"], destination[prefix + "scales"] = q, s
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        names = ["qweight", "scales"] + (["bias"] if self.bias is not None else [])
        missing = [prefix + name for name in names if prefix + name not in state_dict]
        if missing:
            missing_keys.extend(missing)
            return
        q = state_dict[prefix + "qweight"]
        self.load(q if self.scheme == "int8" else unpack_nibbles(q), state_dict[prefix + "scales"])
        if self.bias is not None:
            bias = state_dict[prefix + "bias"].to(self.dtype)
            self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.training or (torch.is_grad_enabled() and x.requires_grad):
            raise QuantizedUseError("a quantized model is for inference: it cannot train or give gradients "
                                    "(load it without quantize= to fine-tune)")
        return self.bind()(x)

    def _torch_product(self):
        """``x -> x @ W.T + b`` through PyTorch's kernel for the scheme (in bfloat16)."""
        if self.scheme == "int8":
            return partial(_int8_product, qweight=self.qweight, scales=self.scales, bias=self.bias,
                           out_features=self.out_features)
        return partial(_int4_product, packed=self.qweight, scales_zeros=self.scales, group_size=self.group_size,
                       bias=self.bias, out_features=self.out_features, tiles=self.native)

    def _candidate(self, name: str, several_rows: bool = False):
        """One named product for one row (or with ``several_rows``, for any number): ``torch``, or
        a native build (``wide``, ``narrow``; for several rows, int8's only); None where it cannot
        run here."""
        if name == "torch":
            return self._torch_product()
        if self.native is None or not native.available(name):
            return None
        values, scales = self.native
        if self.scheme == "int8":
            return native.int8_product(name, values, scales, self.bias, self.dtype, several_rows)
        if several_rows:
            return None
        return native.int4_product(name, values, scales, self.group_size, self.bias, self.dtype, self.out_features)

    def _candidates(self, several_rows: bool = False) -> dict:
        found = {name: self._candidate(name, several_rows) for name in ("torch", "wide", "narrow")}
        return {name: product for name, product in found.items() if product is not None}

    def _zeros(self) -> QuantizedLinear:
        """A layer of this one's shape and scheme whose values are all zero."""
        layer = QuantizedLinear(self.in_features, self.out_features, False, self.scheme, self.group_size, self.dtype)
        scales = (torch.ones(self.out_features) if self.scheme == "int8"
                  else torch.ones(self.out_features, self.in_features // self.group_size))
        zeros = empty_in_huge_pages((self.out_features, self.in_features), torch.int8).zero_()  # as real ones are
        layer.load(zeros, scales)
        return layer

    def native_route(self):
        """The product ``bind`` runs for one row, where that is a native one, else None."""
        route = self._one_row_product()
        return route if isinstance(route, native.NativeProduct) else None

    def _one_row_product(self):
        """The fastest product for one row on this machine (models/route_choice.py)."""
        if self.native is None:
            return self._torch_product()
        return route_choice.first_built(self._ranking(), self._candidate) or self._torch_product()

    def native_one_row(self):
        """The fastest native one-row product (models/native/block.py calls it from C), or None."""
        if self.native is None:
            return None
        return route_choice.fastest_native(self._ranking(), self._candidate)

    def _ranking(self, rows: int = 1) -> tuple[str, ...]:
        """The candidates for ``rows`` rows (1, or a bucket of several: ``kernels.by_rows``) for this
        layer's shape and scheme, fastest first (measured once)."""
        key = (self.scheme, self.group_size if self.scheme == "int4" else 0, self.in_features, self.out_features,
               self.dtype)
        if rows > 1:
            key = ("rows", *key, rows)

        made: list[QuantizedLinear] = []

        def synthetic() -> dict:  # a layer of this one's shape: copies of one of zeros (packing is slow)
            if not made:
                made.append(self._zeros())
            prototype = made[0]
            layer = QuantizedLinear(self.in_features, self.out_features, self.bias is not None, self.scheme,
                                    self.group_size, self.dtype)
            layer.qweight, layer.scales = copy_in_huge_pages(prototype.qweight), prototype.scales.clone()
            if prototype.native is not None:  # int8's native operands share qweight
                values, scales = prototype.native
                values = layer.qweight if values is prototype.qweight else copy_in_huge_pages(values)
                layer.native = (values, scales.clone())
            if layer.bias is not None:
                layer.bias.data.zero_()
            return layer._candidates(rows > 1)

        weight_bytes = self.out_features * self.in_features // (1 if self.scheme == "int8" else 2)
        return route_choice.ranking(key, synthetic, weight_bytes,
                                    lambda: torch.zeros(rows, self.in_features, dtype=self.dtype))

    def bind(self):
        """``x -> x @ W.T + b`` for x of the layer's dtype: one row through the fastest kernel here,
        up to ``kernels.FEW_ROWS`` through the fastest for their bucket of rows (each chosen on
        first use), more through PyTorch's kernel for the scheme or widened (in bfloat16)."""
        many = self._torch_product()
        one = []

        def choose(rows: int):
            if self.native is None or rows > FEW_ROWS:
                return many
            return route_choice.first_built(self._ranking(rows), lambda name: self._candidate(name, True)) or many

        several = by_rows(many, choose)

        def product(x: Tensor) -> Tensor:
            if x.numel() != x.size(-1):
                return several(x)
            if not one:
                one.append(self._one_row_product())
            return one[0](x)

        return product

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}"
                + (f", group_size={self.group_size}" if self.scheme == "int4" else ""))


def _layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(owner, name, layer)`` of every layer to quantize: the blocks' ``Conv1D`` projections and
    the language-model head."""
    found = []
    for owner in model.modules():
        for name, child in owner.named_children():
            if type(child) is Conv1D or (type(child) is Linear and name == "lm_head"):
                found.append((owner, name, child))
    return found


def quantize_model(model: nn.Module, scheme: str, group_size: int, dtype: torch.dtype | None = None) -> None:
    """Replace ``model``'s layers (see ``_layers``) by quantized ones, in place. On the meta
    device, by empty ones of the same shapes and of ``dtype``, for a checkpoint to be loaded into. The
    other parameters stop asking for gradients: the model is for inference."""
    layers = _layers(model)
    widths = {layer.weight.size(0 if type(layer) is Conv1D else 1) for _, _, layer in layers}
    if scheme == "int4" and any(width % group_size for width in widths):
        raise InvalidArgumentError(f"group_size={group_size} must divide every layer's inputs ({sorted(widths)})")
    model.requires_grad_(False)
    for owner, name, layer in layers:
        weight = layer.weight.t() if type(layer) is Conv1D else layer.weight  # [out, in]
        if weight.is_meta:
            new = QuantizedLinear(weight.size(1), weight.size(0), layer.bias is not None, scheme, group_size, dtype)
            if layer.bias is not None:
                new.bias = nn.Parameter(torch.empty_like(layer.bias, dtype=dtype), requires_grad=False)
        else:
            new = QuantizedLinear.of(weight, layer.bias, scheme, group_size)
        setattr(owner, name, new.train(layer.training))


def quantization_config(scheme: str, group_size: int) -> dict:
    """What ``config.json`` records of a quantized model."""
    return {"quant_method": QUANT_METHOD, "scheme": scheme, "group_size": group_size}


def read_quantization_config(config) -> tuple[str, int] | None:
    """``(scheme, group_size)`` of a config's ``quantization_config``, or None if it has none."""
    found = getattr(config, "extra", {}).get("quantization_config")
    if found is None:
        return None
    if not isinstance(found, dict) or found.get("quant_method") != QUANT_METHOD:
        raise InvalidArgumentError(f"config.json's quantization_config {found!r} is not this library's "
                                   f"(quant_method {QUANT_METHOD!r})")
    scheme, group_size = found.get("scheme"), found.get("group_size", DEFAULT_GROUP_SIZE)
    check_scheme(scheme, group_size, "quantization_config's scheme")
    return scheme, group_size
