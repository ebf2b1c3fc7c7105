"""Weights files: safetensors (read zero-copy from a memory map) and PyTorch's ``.bin``.

A ``.bin`` file is opened only with ``torch.load(weights_only=True)``: a file that holds anything
but tensors is refused unread, since unpickling it could run code.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import pickle
import zipfile

import torch
from torch import Tensor

from ..download import atomic_writer

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
WEIGHTS_NAMES = (SAFETENSORS_NAME, PYTORCH_NAME)

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_DTYPE_NAMES = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024
_CONVERT_BLOCK = 16 * 1024 * 1024  # bytes of source converted between page releases
_FIX = "The file is damaged or incomplete; if it was downloaded, load again with force_download=True."


class CheckpointError(ValueError):
    """A weights file cannot be read, or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint holds Python objects besides tensors and was refused unread."""


def load_weights(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Read a weights file on the CPU, memory-mapped where the format allows; floating-point
    tensors are converted to ``dtype`` when one is given."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if path.endswith(".safetensors") or not (magic.startswith(b"PK") or magic[:1] == b"\x80"):
        return read_safetensors(path, dtype)
    tensors = read_torch_pickle(path)
    if dtype is not None:
        tensors = {k: t.to(dtype) if t.is_floating_point() else t for k, t in tensors.items()}
    return tensors


def read_safetensors(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Tensors backed by a private (copy-on-write) map of the file: nothing is copied until used.

    A tensor converted to another ``dtype`` is converted block by block, each block's pages of
    the map released once read, so the peak stays near one copy of the weights, not two.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short for a safetensors file. {_FIX}")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(size - 8, _MAX_HEADER):
            raise CheckpointError(f"{path} is not a safetensors file (its header would be {header_len} bytes). {_FIX}")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path} has an unreadable safetensors header. {_FIX}") from None
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a safetensors header that is not a JSON object. {_FIX}")
    start, data_size = 8 + header_len, size - 8 - header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            stored = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = [int(n) for n in info["shape"]]
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed or unknown entry {info!r}. {_FIX}") from None
        numel = 1
        for n in shape:
            numel *= n
        itemsize = stored.itemsize
        if not 0 <= begin <= end <= data_size or end - begin != numel * itemsize:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({info['dtype']} {shape}) claims bytes {begin}..{end} "
                f"of a {data_size}-byte data section. {_FIX}"
            )
        if numel == 0:
            tensor = torch.empty(shape, dtype=stored)
        elif (start + begin) % itemsize:  # misaligned: copy rather than map
            tensor = torch.frombuffer(bytearray(buffer[start + begin:start + end]), dtype=stored).view(shape)
        else:
            tensor = torch.frombuffer(buffer, dtype=stored, count=numel, offset=start + begin).view(shape)
        if dtype is not None and tensor.is_floating_point() and stored != dtype and numel:
            tensor = _convert_releasing(tensor, dtype, buffer, start + begin)
        tensors[name] = tensor
    return tensors


def _convert_releasing(source: Tensor, dtype: torch.dtype, buffer: mmap.mmap, offset: int) -> Tensor:
    out = torch.empty(source.shape, dtype=dtype)
    flat_in, flat_out = source.reshape(-1), out.view(-1)
    block = max(1, _CONVERT_BLOCK // source.element_size())
    for first in range(0, flat_in.numel(), block):
        last = min(first + block, flat_in.numel())
        flat_out[first:last].copy_(flat_in[first:last])
        # Give back the pages read so far (whole pages only, never the next tensor's).
        lo = -(-(offset + first * source.element_size()) // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = (offset + last * source.element_size()) // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo and hasattr(buffer, "madvise"):
            buffer.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    return out


def write_safetensors(tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` atomically, in the layout every safetensors reader expects."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPE_NAMES:
            raise CheckpointError(f"cannot store tensor {name!r} of dtype {tensor.dtype} in safetensors")
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep every tensor 8-byte aligned
    with atomic_writer(path) as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for tensor in tensors.values():
            if tensor.numel():
                raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
                f.write((ctypes.c_char * raw.numel()).from_address(raw.data_ptr()))  # no copy


def read_torch_pickle(path: str | os.PathLike) -> dict[str, Tensor]:
    """A ``torch.save`` file, through the weights-only unpickler only."""
    path = os.fspath(path)
    try:
        mmap_ok = zipfile.is_zipfile(path)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap_ok)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise UnsafeCheckpointError(
                f"{path} holds Python objects besides tensors, and loading them could run code, so it "
                "was refused unread. Use a checkpoint in safetensors format, or one saved as a plain "
                "state dict of tensors."
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch weights file. {_FIX}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} could not be read as a PyTorch weights file ({type(err).__name__}). {_FIX}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state
