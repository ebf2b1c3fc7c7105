"""CRC-32C (Castagnoli), the checksum TensorFlow's checkpoints carry, with numpy only.

A byte-at-a-time CRC in Python runs at a few MB/s; a checkpoint is gigabytes. The CRC register is
an affine function of its start value, so the data is cut into ``LANES`` equal pieces whose CRCs
(each started from zero) are computed side by side, one numpy operation per byte position for all
pieces at once, then chained: ``register = advance(register) ^ piece_crc``, where ``advance`` is
what running over a piece of zeros does to a register (linear over GF(2), tabulated per byte).
"""

from __future__ import annotations

import numpy as np

POLY = 0x82F63B78  # reflected Castagnoli polynomial
LANES = 1 << 16  # fastest of 2^14, 2^16, 2^18 here: 200 MB/s
MASK_DELTA = 0xA282EAD8
COLUMNS = 256  # byte positions transposed at once: LANES x 256 bytes = 16 MB


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLY), table >> 1).astype(np.uint32)
    return table


TABLE = _byte_table()


def _registers(pieces: np.ndarray) -> np.ndarray:
    """Registers after running each row of ``pieces`` ([n, length] uint8) from zero."""
    register = np.zeros(pieces.shape[0], dtype=np.uint32)
    for first in range(0, pieces.shape[1], COLUMNS):  # transposed a few columns at a time: bounded memory
        for column in np.ascontiguousarray(pieces[:, first:first + COLUMNS].T):  # one byte of every piece
            register = (register >> 8) ^ TABLE[(register ^ column) & 0xFF]
    return register


def _advance_tables(length: int) -> list[np.ndarray]:
    """For each byte of a register, what ``length`` zero bytes turn it into (4 tables of 256)."""
    starts = np.array([[b << (8 * k) for b in range(256)] for k in range(4)], dtype=np.uint32).ravel()
    register = starts
    for _ in range(length):
        register = (register >> 8) ^ TABLE[register & 0xFF]
    return list(register.reshape(4, 256))


def _advance(register: int, tables: list[np.ndarray]) -> int:
    return int(tables[0][register & 0xFF] ^ tables[1][(register >> 8) & 0xFF]
               ^ tables[2][(register >> 16) & 0xFF] ^ tables[3][register >> 24])


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The CRC-32C of ``data`` (initial value and final xor 0xFFFFFFFF, as everyone uses it)."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    register = 0xFFFFFFFF
    piece = len(raw) // LANES
    if piece >= 64:  # worth going side by side
        body = raw[: piece * LANES].reshape(LANES, piece)
        tables = _advance_tables(piece)
        for value in _registers(body).tolist():
            register = _advance(register, tables) ^ value
        raw = raw[piece * LANES:]
    for byte in raw.tolist():
        register = (register >> 8) ^ int(TABLE[(register ^ byte) & 0xFF])
    return register ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """LevelDB's and TensorFlow's stored form of a CRC (so a CRC of CRCs is not itself a CRC)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def unmask(stored: int) -> int:
    rotated = (stored - MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
