"""Weights files: safetensors, through the safetensors package (a well-kept, fuzzed parser), and
PyTorch's ``.bin``, through ``torch.load(weights_only=True)`` only: a file that holds anything but
tensors is refused unread, since unpickling it could run code.

The format comes from the file's name (``*.safetensors``; ``*.bin``, ``*.pt``, ``*.pth``), and for
a file without one from a check that cannot mistake one for the other (see ``weights_format``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from collections.abc import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..download import atomic_path
from . import pages
from .pages import copy_in_huge_pages, empty_in_huge_pages, release_pages
from ..errors import GPTHubError

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"

_CONVERT_BYTES = 16 * 1024 * 1024  # source bytes converted between page releases
# Buffers that old checkpoints carry and today's code derives (the causal mask, -1e4): never read.
LEGACY_BUFFERS = (".attn.bias", ".attn.masked_bias", "position_ids")
_FIX = "The file is damaged or incomplete; if it was downloaded, load again with force_download=True."


class CheckpointError(GPTHubError, ValueError):
    """A weights file cannot be read, or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint holds Python objects besides tensors and was refused unread."""


def weights_format(path: str) -> str:
    """``"safetensors"`` or ``"pickle"``: by the file's name, else by its first bytes. A
    safetensors file starts with its header's length (8 bytes, little-endian), which must fit
    the file, then the header's ``{``; a zip (``torch.save``) starts with ``PK\\x03\\x04`` and has
    no ``{`` there, a pickle starts with its protocol (``\\x80``) and carries a fixed magic number
    there in torch's legacy format."""
    name = path.lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith((".bin", ".pt", ".pth")):
        return "pickle"
    with open(path, "rb") as f:
        head = f.read(9)
    size = os.path.getsize(path)
    if len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(f"{path} ({size} bytes) is neither a safetensors file nor a PyTorch weights file. {_FIX}")


def load_weights(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Read a weights file on the CPU, into memory of 2 MB pages where large (models/pages.py);
    floating-point tensors are converted to ``dtype`` when one is given."""
    path = os.fspath(path)
    if weights_format(path) == "safetensors":
        return read_safetensors(path, dtype)
    return read_torch_pickle(path, dtype)


@contextlib.contextmanager
def _opened(path: str) -> Iterator:
    """``safe_open``, its errors reported as the file's."""
    try:
        with safe_open(path, framework="pt") as f:
            yield f
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({err}). {_FIX}") from None


def read_safetensors(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """The file's tensors, copied out of a private map of it into memory of 2 MB pages where large
    (models/pages.py), floating-point ones converted to ``dtype`` if given (``_into_huge_pages``
    says which stay mapped).

    They are copied a few megabytes at a time, and the map's pages read so far are given back
    after each piece, so the peak stays near one copy of the weights, not two.
    """
    path = os.fspath(path)
    with _opened(path) as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return _into_huge_pages(tensors, dtype, mapped=True)


def _into_huge_pages(tensors: dict[str, Tensor], dtype: torch.dtype | None, mapped: bool) -> dict[str, Tensor]:
    """Each tensor copied into memory of 2 MB pages where large, floating-point ones converted to
    ``dtype`` if given; the pages of a ``mapped`` source given back as they are copied. Tensors
    that share memory (a tied embedding in a ``torch.save`` file) are copied once. Left as they
    are: ``LEGACY_BUFFERS`` (the model derives them), and where the system gives no huge pages
    (models/pages.py), tensors that need no conversion (a map's then stay mapped: no copy, and
    processes that load one file share its pages)."""
    copies: dict[tuple, Tensor] = {}
    for name, source in tensors.items():
        target = dtype if dtype is not None and source.is_floating_point() else source.dtype
        if name.endswith(LEGACY_BUFFERS) or (target == source.dtype and not pages.HUGE_PAGES):
            continue
        key = (source.data_ptr(), source.dtype, source.shape, source.stride(), target)
        if key not in copies:
            copies[key] = _copy(source, target, mapped)
        tensors[name] = copies[key]
    return tensors


def _copy(source: Tensor, dtype: torch.dtype, mapped: bool) -> Tensor:
    if not (mapped and source.is_contiguous()):  # pages are given back only of the map itself
        return copy_in_huge_pages(source, dtype)
    out = empty_in_huge_pages(source.shape, dtype)
    flat_in, flat_out = source.reshape(-1), out.view(-1)
    step = max(1, _CONVERT_BYTES // source.element_size())
    for first in range(0, flat_in.numel(), step):
        piece = flat_in[first:first + step]
        flat_out[first:first + step].copy_(piece)
        release_pages(piece)
    return out


def write_safetensors(tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` atomically: to a temporary file beside ``path``, renamed over it once
    complete and on disk."""
    contiguous = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, tmp, metadata=metadata or {"format": "pt"})


def write_torch_pickle(tensors: dict[str, Tensor], path: str | os.PathLike) -> None:
    """``write_safetensors``'s twin for ``pytorch_model.bin``: a ``torch.save`` of the tensors, atomically."""
    contiguous = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        torch.save(contiguous, tmp)


def read_torch_pickle(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """A ``torch.save`` file, through the weights-only unpickler only, its tensors copied as
    ``read_safetensors``'s are (out of a map of the file where its format allows one)."""
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
    except Exception as err:  # noqa: BLE001 (a damaged file can fail anywhere in torch.load: say so, naming it)
        raise CheckpointError(f"{path} could not be read as a PyTorch weights file ({type(err).__name__}). {_FIX}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return _into_huge_pages(state, dtype, mapped=mmap_ok)
