"""The download cache: one data file per URL, named by a hash, and its metadata beside it.

    <cache>/<sha256(url)>          the file, only ever written by an atomic rename
    <cache>/<sha256(url)>.json     {"url", "etag", "size", "sha256"} of that file, likewise

Names never come from a URL, a header or a user string, so nothing can escape the folder. A
download goes to a temporary file named after the entry, the host and the process; a later
process may adopt the temporary of a dead one and resume it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import atomic_write

logger = logging.getLogger(__name__)


class CacheCorruptedError(OSError):
    """A cached file does not match what its metadata says it is."""


@dataclass
class Entry:
    url: str
    etag: str | None
    size: int
    sha256: str | None


def default_cache_dir() -> Path:
    """``$TORCH_HOME/hub/gpt_hub`` by default (``torch.hub.get_dir()``), read at call time."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "gpt_hub"


class DownloadCache:
    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()

    def key(self, url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()

    def data_path(self, url: str) -> Path:
        return self.folder / self.key(url)

    def lookup(self, url: str) -> tuple[Path, Entry] | None:
        """The cached file and its entry, if both are there and the size agrees."""
        path, meta = self.data_path(url), self.data_path(url).with_suffix(".json")
        try:
            entry = Entry(**json.loads(meta.read_text(encoding="utf-8")))
            size = path.stat().st_size
        except (OSError, ValueError, TypeError):
            return None
        if entry.url != url:
            return None  # a hash collision, in theory
        if size != entry.size:
            raise CacheCorruptedError(
                f"the cached copy of {url} ({path}) is {size} bytes, not {entry.size}: it was changed "
                "after download. Load again with force_download=True."
            )
        return path, entry

    def store(self, temporary: Path, entry: Entry) -> Path:
        """Move a verified download into place, then record its entry."""
        path = self.data_path(entry.url)
        os.replace(temporary, path)
        atomic_write(path.with_suffix(".json"), json.dumps(asdict(entry)).encode("utf-8"))
        return path

    def temporary(self, url: str) -> Path:
        """A new process-unique temporary file for ``url``, or one adopted from a dead process."""
        self.folder.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.key(url)}."
        own = self.folder / f"{prefix}{socket.gethostname()}.{os.getpid()}.{os.urandom(4).hex()}.partial"
        for leftover in self.folder.glob(prefix + "*.partial"):
            if _owner_is_gone(leftover.name[len(prefix):]):
                with contextlib.suppress(OSError):
                    os.rename(leftover, own)  # atomic: only one adopter wins
                    logger.info("resuming an interrupted download of %s (%d bytes so far)", url, own.stat().st_size)
                    return own
        own.touch()
        return own

    @contextlib.contextmanager
    def lock(self, url: str) -> Iterator[None]:
        """An advisory lock, so that processes do not download the same file twice. Correctness
        never rests on it (network filesystems may ignore it); GPT_HUB_DISABLE_LOCK=1 turns it off."""
        if os.environ.get("GPT_HUB_DISABLE_LOCK") == "1":
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f".{self.key(url)}.lock", "a+b") as handle:
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


def _owner_is_gone(owner: str) -> bool:
    """``host.pid.random.partial``: the owner is gone if it ran on this host and is not running."""
    try:
        host, pid, _ = owner.rsplit(".", 3)[:3]
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
