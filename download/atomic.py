"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The bytes go to a process-unique temporary file in the destination's own folder (so the final
rename never crosses a filesystem), are fsynced, and only then renamed over the final name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A new temporary file's path beside ``path``, for a writer that wants a name (safetensors):
    once the block ends without error the file is fsynced and replaces ``path``; on error it is
    removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_beside(path)
    mode = os.fstat(fd).st_mode & 0o7777  # what the umask made of 0o666
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
            if os.fstat(f.fileno()).st_mode & 0o7777 != mode:  # a writer that made its own file (0600)
                os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it is removed."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def _create_beside(path: str) -> tuple[int, str]:
    """A new, exclusive temporary file next to ``path``, with the mode a plain ``open()`` gives.

    ``tempfile.mkstemp`` always creates 0600 files, so saved checkpoints would be unreadable to
    the group whatever the umask. Reading the umask is no better: ``os.umask()`` can only read it
    by setting it, which is process-wide and races with other threads, and /proc/self/status is
    Linux-only. Creating the file with mode 0o666 lets the kernel apply the umask (and any default
    ACL) itself, exactly as ``open(path, "wb")`` would, with nothing read or changed.
    """
    folder, base = os.path.split(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
