"""Checkpoints split into shards, as transformers writes them past ``max_shard_size``: files
``model-00001-of-00003.safetensors`` ... and an index, ``model.safetensors.index.json``
(``pytorch_model.bin.index.json`` for ``.bin`` shards), that maps each weight's name to its
file: ``{"metadata": {"total_size": bytes}, "weight_map": {name: file}}``."""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import re
from collections.abc import Callable

from torch import Tensor

from ..download.atomic import atomic_write, fsync_folder
from .checkpoint import PYTORCH_NAME, SAFETENSORS_NAME, CheckpointError

INDEX_SUFFIX = ".index.json"
INDEX_NAMES = tuple(name + INDEX_SUFFIX for name in (SAFETENSORS_NAME, PYTORCH_NAME))
# What a loader looks for, in transformers' order: safetensors (one file, then shards) before any pickle.
SEARCH_ORDER = (SAFETENSORS_NAME, INDEX_NAMES[0], PYTORCH_NAME, INDEX_NAMES[1])
PENDING = ".pending"  # a shard written whole, not yet under its name (write_sharded)
_SHARD = re.compile(r"(model|pytorch_model)-[0-9]{5}-of-[0-9]{5}\.(safetensors|bin)(\.pending)?")  # \d: any script's digits
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def is_index(path: str | os.PathLike) -> bool:
    return os.path.basename(os.fspath(path)) in INDEX_NAMES


def read_index(path: str | os.PathLike) -> dict[str, list[str]]:
    """The shard files an index names, each with the weights it says the file holds; refused
    unless it is the shape above with plain file names of its own kind (no folders: a crafted
    index must not reach files elsewhere)."""
    path = os.fspath(path)
    kind = os.path.basename(path).removesuffix(INDEX_SUFFIX).rsplit(".", 1)[-1]  # safetensors or bin
    try:
        with open(path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} is not a JSON shard index ({err})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f'{path} is not a shard index: expected {{"weight_map": {{weight name: file name}}}}')
    shards: dict[str, list[str]] = {}
    for name, file in weight_map.items():
        if not isinstance(file, str) or os.path.basename(file) != file or file in ("", ".", "..") \
                or not file.endswith("." + kind):
            raise CheckpointError(f"{path}: weight {name!r} is mapped to {file!r}, not a .{kind} file beside the index")
        shards.setdefault(file, []).append(name)
    return shards


def check_shard(path: str, tensors: dict[str, Tensor], names: list[str]) -> None:
    """Refuse a shard that lacks a weight its index puts there."""
    missing = [name for name in names if name not in tensors]
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} weights its index puts there (first: {missing[0]!r}). "
                              "The file is damaged or incomplete; load again with force_download=True.")


def shard_bytes(value: int | str | None) -> int | None:
    """``max_shard_size`` in bytes: an int, or a string as transformers takes it (``"5GB"``,
    ``"500MiB"``, ``"1TB"``); None: no limit, one file."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0:
        return int(value)  # a NumPy integer too
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None or float(match[1]) <= 0:
        raise CheckpointError(f"max_shard_size must be a positive number of bytes or a size such as '5GB', got {value!r}")
    return int(float(match[1]) * _UNITS[match[2] and match[2].lower()])


def plan_shards(tensors: dict[str, Tensor], limit: int | None, weights_name: str) -> dict[str, dict[str, Tensor]]:
    """The files to write, in order, each with its tensors: one file when all fit under ``limit``
    bytes (or there is none); else shards filled in order, a tensor past the limit alone in its own."""
    groups: list[dict[str, Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if limit is not None and groups[-1] and size + nbytes > limit:
            groups.append({})
            size = 0
        groups[-1][name] = tensor
        size += nbytes
    if len(groups) == 1:
        return {weights_name: groups[0]}
    stem, extension = weights_name.rsplit(".", 1)
    return {f"{stem}-{i:05d}-of-{len(groups):05d}.{extension}": group for i, group in enumerate(groups, 1)}


def index_json(files: dict[str, dict[str, Tensor]]) -> str:
    total = sum(t.numel() * t.element_size() for group in files.values() for t in group.values())
    weight_map = {name: file for file, group in files.items() for name in group}
    return json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"


def write_sharded(folder: str, files: dict[str, dict[str, Tensor]], write: Callable[[dict, str], None],
                  index_name: str) -> None:
    """The shards ``files`` and their index ``index_name`` in ``folder``, so that a save cut short
    never leaves an index over two saves' shards (a re-save reuses the shards' names): each shard
    is written whole under a pending name, then the earlier index is removed (until the new one is
    in place a loader finds none and says so), the shards take their names, the index comes last."""
    pending: list[str] = []
    try:
        for file, group in files.items():
            pending.append(os.path.join(folder, file + PENDING))
            write(group, pending[-1])
    except BaseException:
        for path in pending:
            with contextlib.suppress(OSError):
                os.remove(path)
        raise
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(folder, index_name))
    fsync_folder(folder)
    for path in pending:
        os.replace(path, path.removesuffix(PENDING))
    fsync_folder(folder)
    atomic_write(os.path.join(folder, index_name), index_json(files).encode())


def stale_weights(folder: str | os.PathLike, written: set[str]) -> list[str]:
    """Weights files an earlier save left in ``folder`` that this one did not write: a loader
    would find the old single file before the new shards, or the old shards beside the new one
    (and pending shards of a save cut short)."""
    names = {SAFETENSORS_NAME, PYTORCH_NAME, *INDEX_NAMES}
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if (name in names or _SHARD.fullmatch(name)) and name not in written)
