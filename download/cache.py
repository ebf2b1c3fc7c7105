"""The cache for plain URLs (http(s), ``s3://``): content-addressed blobs, a record per URL written last.

    <root>/blobs/<sha256 of the content>     the file, moved in whole and verified
    <root>/urls/<sha256 of the URL>.json     {"url", "etag", "size", "sha256"}, written after the blob
    <root>/.locks/<sha256 of the URL>.lock   so that processes do not fetch a URL twice at once

``root`` is ``torch.hub.get_dir()/gpt_hub`` (or ``cache_dir/gpt_hub``). A blob never changes once
written, and a record only ever points at a whole blob: a reader sees the old version or the new
one, and a failure between the two steps leaves the old version loadable. Names never come from a
URL, a header or a user string, so nothing can escape the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import GPTHubError
from .atomic import atomic_write, fsync_folder
from .names import is_hex


class CacheCorruptedError(GPTHubError, OSError):
    """A cached file does not match what its record says it is."""


@dataclass(frozen=True)
class Record:
    url: str
    etag: str | None
    size: int
    sha256: str


def default_cache_dir() -> Path:
    """``$TORCH_HOME/hub/gpt_hub`` by default (``torch.hub.get_dir()``), read at call time."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "gpt_hub"


def url_cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) / "gpt_hub" if cache_dir is not None else default_cache_dir()


def move_into_place(temporary: Path, final: Path) -> Path:
    """Rename a verified file to its final name, durably."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary, final)
    fsync_folder(final.parent)
    return final


class UrlCache:
    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.folder = url_cache_root(cache_dir)
        self.blobs = self.folder / "blobs"

    def key(self, url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()

    def record_path(self, url: str) -> Path:
        return self.folder / "urls" / f"{self.key(url)}.json"

    def lock_path(self, url: str) -> Path:
        return self.folder / ".locks" / f"{self.key(url)}.lock"

    def lookup(self, url: str) -> tuple[Path, Record] | None:
        """The cached file and its record, if both are there and the size agrees."""
        try:
            record = Record(**json.loads(self.record_path(url).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        if record.url != url or not is_hex(record.sha256, 64):
            return None  # a hash collision, in theory, or a record from elsewhere
        path = self.blobs / record.sha256
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if size != record.size:
            raise CacheCorruptedError(
                f"the cached copy of {url} ({path}) is {size} bytes, not {record.size}: it was changed "
                "after download. Load again with force_download=True."
            )
        return path, record

    def store(self, temporary: Path, record: Record) -> Path:
        """Move a verified download into place, then point the URL's record at it."""
        path = move_into_place(temporary, self.blobs / record.sha256)
        self.record_path(record.url).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.record_path(record.url), json.dumps(asdict(record)).encode("utf-8"))
        return path

