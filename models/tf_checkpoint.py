"""Read a TensorFlow V2 checkpoint (what ``tf.train.Saver`` writes) without TensorFlow.

``PREFIX.index`` is a LevelDB table: blocks of prefix-compressed ``key -> value`` entries, each
block followed by a compression byte and a masked CRC-32C, an index block pointing at the data
blocks, and a 48-byte footer ending in a magic number. Under the empty key is a
``BundleHeaderProto`` (number of data shards, endianness); under each tensor name a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC-32C of the bytes).
``PREFIX.data-0000S-of-0000N`` holds the tensors' raw bytes. The two protobuf messages are
decoded here by hand: they are a few varints.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import GPTHubError
from .crc32c import crc32c, unmask

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
# TensorFlow's DataType enum: the numeric types a checkpoint of weights holds.
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
BFLOAT16 = 14
DTYPE_NAMES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant"}


class TFCheckpointError(GPTHubError, ValueError):
    """A TensorFlow checkpoint that cannot be read, and why (naming the tensor where one is to blame)."""


@dataclass(frozen=True)
class Entry:
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise TFCheckpointError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TFCheckpointError("varint longer than 64 bits")


def _fields(message: bytes):
    """(field number, wire type, value) of a protobuf message; value is an int or bytes."""
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value, pos = int.from_bytes(message[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(message[pos:pos + 4], "little"), pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
        if pos > len(message):
            raise TFCheckpointError("truncated protobuf message")
        yield number, wire, value


def _entry(message: bytes) -> Entry:
    dtype, shape, shard, offset, size, crc, sliced = 0, [], 0, 0, 0, None, False
    for number, _, value in _fields(message):
        if number == 1:
            dtype = value
        elif number == 2:  # TensorShapeProto: repeated dim (2) {size (1)}
            for dim_number, _, dim in _fields(value):
                if dim_number == 2:
                    shape.append(next((v for n, _, v in _fields(dim) if n == 1), 0))
        elif number == 3:
            shard = value
        elif number == 4:
            offset = value
        elif number == 5:
            size = value
        elif number == 6:
            crc = value
        elif number == 7:
            sliced = True
    return Entry(dtype, tuple(shape), shard, offset, size, crc, sliced)


def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data):
        raise TFCheckpointError(f"{what} runs past the end of the index file (truncated?)")
    contents, kind = data[offset:offset + size], data[offset + size]
    stored = int.from_bytes(data[offset + size + 1:end], "little")
    if crc32c(contents + bytes([kind])) != unmask(stored):
        raise TFCheckpointError(f"{what} fails its CRC-32C check (the index file is damaged)")
    if kind != 0:
        raise TFCheckpointError(f"{what} is compressed (type {kind}); TensorFlow's checkpoints are not")
    return contents


def _block_entries(block: bytes, what: str):
    """The ``(key, value)`` entries of a table block."""
    if len(block) < 4:
        raise TFCheckpointError(f"{what} is too short")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise TFCheckpointError(f"{what} is malformed")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        fresh, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + fresh]
        pos += fresh
        yield key, block[pos:pos + length]
        pos += length


def read_index(path: str | os.PathLike) -> tuple[int, dict[str, Entry]]:
    """The number of data shards and every tensor's entry, from a ``PREFIX.index`` file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise TFCheckpointError(f"cannot read {path}: {err.strerror}") from None
    if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise TFCheckpointError(f"{path} is not a TensorFlow checkpoint index (no table footer)")
    footer = data[-FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # the metaindex block's handle: unused
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    shards, entries = 1, {}
    for _, handle in _block_entries(_block(data, index_offset, index_size, f"{path}: index block"), path):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        for key, value in _block_entries(_block(data, offset, size, f"{path}: data block at {offset}"), path):
            if key == b"":  # BundleHeaderProto
                for number, _, field in _fields(value):
                    if number == 1:
                        shards = field
                    elif number == 2 and field != 0:
                        raise TFCheckpointError(f"{path} stores big-endian tensors; only little-endian is read")
            else:
                try:
                    entries[key.decode("utf-8")] = _entry(value)
                except UnicodeDecodeError:
                    raise TFCheckpointError(f"{path}: a tensor name is not UTF-8 ({key[:40]!r})") from None
    return shards, entries


def data_file_name(prefix: str, shard: int, shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{shards:05d}"


class TFCheckpoint:
    """``read(name)`` gives a tensor as a numpy array, verified against its CRC-32C.

    ``index`` is the ``PREFIX.index`` file; ``data_file(shard, shards)`` gives the path of a data
    file (by default ``PREFIX.data-0000S-of-0000N`` beside the index; downloaded files live
    elsewhere)."""

    def __init__(self, index: str | os.PathLike, data_file: Callable[[int, int], str] | None = None):
        self.index = os.fspath(index)
        prefix = self.index.removesuffix(".index")
        self.data_file = data_file or (lambda shard, shards: data_file_name(prefix, shard, shards))
        self.shards, self.entries = read_index(self.index)
        self._data: dict[int, np.memmap] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def _entry(self, name: str) -> Entry:
        if name not in self.entries:
            raise TFCheckpointError(f"{self.index}: the checkpoint has no variable {name!r}")
        return self.entries[name]

    def _shard(self, shard: int, name: str) -> np.memmap:
        if shard not in self._data:
            path = self.data_file(shard, self.shards)
            try:
                self._data[shard] = np.memmap(path, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as err:
                raise TFCheckpointError(f"{name}: cannot read its data file {path}: {err}") from None
        return self._data[shard]

    def read(self, name: str) -> np.ndarray:
        entry = self._entry(name)
        if entry.sliced:
            raise TFCheckpointError(f"{name} is saved in slices (a partitioned variable); not supported")
        if entry.dtype == BFLOAT16:
            dtype, width = np.uint16, 2
        elif entry.dtype in DTYPES:
            dtype = DTYPES[entry.dtype]
            width = np.dtype(dtype).itemsize
        else:
            kind = DTYPE_NAMES.get(entry.dtype, f"number {entry.dtype}")
            raise TFCheckpointError(f"{name} has TensorFlow dtype {kind}, which is not a numeric tensor type read here")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * width != entry.size:
            raise TFCheckpointError(f"{name}: {entry.size} bytes do not hold a {list(entry.shape)} tensor of {np.dtype(dtype).name}")
        data = self._shard(entry.shard, name)
        if entry.offset + entry.size > len(data):
            raise TFCheckpointError(f"{name}: its bytes run past the end of the data file (truncated download?)")
        raw = data[entry.offset:entry.offset + entry.size]
        if entry.crc32c is not None and crc32c(raw) != unmask(entry.crc32c):
            raise TFCheckpointError(f"{name} fails its CRC-32C check: the data file is damaged")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape)  # bfloat16 as its uint16 bits

    def read_tensor(self, name: str) -> torch.Tensor:
        """``read`` as a torch tensor of its own memory (bfloat16 included)."""
        array = self.read(name)
        tensor = torch.from_numpy(array.copy())
        return tensor.view(torch.bfloat16) if self._entry(name).dtype == BFLOAT16 else tensor
