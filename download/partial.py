"""Downloads in progress: hidden partial files bound to their validator, and advisory locks.

    .{key}.{validator hash}.{host}.{pid}.{random}.partial   owned by a running process
    .{key}.{validator hash}.orphan.{random}.partial         given up (Ctrl-C, attempts spent)

A partial keeps the validator (ETag) its first byte came with, in its name: it is resumed only
while the server still has that version (``If-Range``). When its file is next fetched, partials
whose owner is gone are adopted (the largest with the current validator) or removed, so none leak.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def validator_tag(validator: str | None) -> str:
    return hashlib.sha256(validator.encode("utf-8")).hexdigest()[:16] if validator else "none"


def claim(folder: Path, key: str, validator: str | None) -> Path:
    """A partial for ``key`` owned by this process: adopted from a gone owner, or new and empty."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = validator_tag(validator)
    own = folder / f".{key}.{tag}.{socket.gethostname()}.{os.getpid()}.{os.urandom(4).hex()}.partial"
    adopted = False
    for leftover in sorted(_leftovers(folder, key), key=_size, reverse=True):
        rest = leftover.name[len(key) + 2:-len(".partial")]
        if not _owner_is_gone(rest):
            continue
        with contextlib.suppress(OSError):  # another process may take or remove it first
            if not adopted and rest.split(".")[0] == tag and tag != "none":
                os.rename(leftover, own)  # atomic: only one adopter wins
                adopted = True
                logger.info("resuming an interrupted download (%d bytes so far)", own.stat().st_size)
            else:
                leftover.unlink()
                logger.info("removed a stale partial download %s", leftover.name)
    if not adopted:
        own.touch()
    return own


def rebind(path: Path, key: str, validator: str | None) -> Path:
    """The partial renamed for a new validator (the server sent another version of the file)."""
    owner = path.name[len(key) + 2:].split(".", 1)[1]
    new = path.with_name(f".{key}.{validator_tag(validator)}.{owner}")
    os.rename(path, new)
    return new


def release(path: Path, key: str) -> None:
    """Give up ownership: the bytes stay for a later fetch to resume (any process may adopt them)."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
            return
        tag = path.name[len(key) + 2:].split(".", 1)[0]
        os.rename(path, path.with_name(f".{key}.{tag}.orphan.{os.urandom(4).hex()}.partial"))
    except OSError:
        pass


@contextlib.contextmanager
def lock(path: Path) -> Iterator[None]:
    """An advisory lock, so that processes do not download the same file twice. Correctness
    never rests on it (network filesystems may ignore it); GPT_HUB_DISABLE_LOCK=1 turns it off."""
    if os.environ.get("GPT_HUB_DISABLE_LOCK") == "1":
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


def _leftovers(folder: Path, key: str) -> list[Path]:
    return list(folder.glob(f".{key}.*.partial"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _owner_is_gone(rest: str) -> bool:
    """``tag.host.pid.random`` or ``tag.orphan.random``: gone if orphaned, or on this host and not running."""
    parts = rest.split(".")
    if len(parts) == 3 and parts[1] == "orphan":
        return True
    if len(parts) < 4 or not parts[-2].isdigit():
        return False
    if ".".join(parts[1:-2]) != socket.gethostname():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
