"""Hugging Face's own cache layout for hub repositories, so that what transformers or
huggingface_hub downloaded is found here, and what we download they find (facts from
huggingface_hub's cache documentation; huggingface_hub itself is never imported).

    <hub cache>/models--{org}--{name}/
        blobs/{etag}                    the file (an LFS file's etag is its sha256, a small
                                        file's its git blob SHA-1), moved in whole and verified
        snapshots/{commit}/{filename}   a relative symlink to ../../blobs/{etag} (a copy where
                                        symlinks cannot be made)
        refs/{revision}                 the commit the revision pointed at, no newline
        .no_exist/{commit}/{filename}   an empty file: the commit has no such file
    <hub cache>/.locks/models--{org}--{name}/{etag}.lock

Order of writes: blob, then snapshot link, then ref, so a reader following a ref always lands
on a whole file, and a failed update leaves the previous snapshot as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

from .atomic import atomic_write, atomic_writer, fsync_folder
from .names import InvalidNameError, is_hex

logger = logging.getLogger(__name__)

_BLOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def is_commit(value: object) -> bool:
    """Whether ``value`` is a full git commit id, as the hub sends and the cache's folders use."""
    return is_hex(value, 40)


def hf_home() -> Path:
    """``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface`` (``~/.cache/huggingface``), read at call
    time, as huggingface_hub reads them."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface"


def hub_cache_dir() -> Path:
    """``HF_HUB_CACHE``, else ``HF_HOME/hub`` (``hf_home``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return hf_home() / "hub"


def stored_token() -> str | None:
    """The user's hub token as huggingface_hub finds it: ``HF_TOKEN``, else the file
    ``huggingface-cli login`` writes (``HF_TOKEN_PATH``, else ``HF_HOME/token``); None where neither."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    path = Path(os.environ["HF_TOKEN_PATH"]).expanduser() if os.environ.get("HF_TOKEN_PATH") else hf_home() / "token"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def safe_parts(value: str, what: str) -> list[str]:
    """The ``/``-separated parts of a file name or revision, refusing any that could leave its folder."""
    parts = value.split("/")
    if not value or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise InvalidNameError(f"{what} {value!r} cannot name a file in the cache")
    return parts


class RepoCache:
    """One repository's folder in the hub cache."""

    def __init__(self, repo: str, cache_dir: str | os.PathLike | None = None):
        self.root = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
        self.name = "models--" + "--".join(repo.split("/"))
        self.folder = self.root / self.name
        self.blobs = self.folder / "blobs"

    def commit(self, revision: str) -> str | None:
        """The commit ``revision`` stands for: itself if it is one, else what ``refs/`` recorded."""
        if is_commit(revision):
            return revision
        try:
            commit = self.folder.joinpath("refs", *safe_parts(revision, "revision")).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return commit if is_commit(commit) else None

    def snapshot(self, commit: str, filename: str) -> Path:
        return self.folder.joinpath("snapshots", commit, *safe_parts(filename, "file name"))

    def absent(self, commit: str, filename: str) -> Path:
        return self.folder.joinpath(".no_exist", commit, *safe_parts(filename, "file name"))

    def cached(self, revision: str, filename: str) -> tuple[str | None, Path | None, bool]:
        """(commit, the snapshot file if it is there, whether the file is known to be absent)."""
        commit = self.commit(revision)
        if commit is None:
            return None, None, False
        path = self.snapshot(commit, filename)
        if path.is_file():
            return commit, path, False
        return commit, None, self.absent(commit, filename).is_file()

    def blob(self, etag: str) -> Path:
        """The blob for an etag; an etag that could not be a file name is hashed into one."""
        name = etag if _BLOB_NAME.fullmatch(etag) else hashlib.sha256(etag.encode("utf-8")).hexdigest()
        return self.blobs / name

    def lock_path(self, blob: Path) -> Path:
        return self.root / ".locks" / self.name / f"{blob.name}.lock"  # huggingface_hub's own lock file

    def link(self, commit: str, filename: str, blob: Path) -> Path:
        """Point ``snapshots/{commit}/{filename}`` at ``blob`` (atomically replacing what was there)."""
        path = self.snapshot(commit, filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(blob, path.parent)
        with contextlib.suppress(OSError):
            if os.readlink(path) == target:
                return path
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.link")
        try:
            os.symlink(target, temporary)
        except OSError:  # no symlinks here (some Windows and network filesystems): a copy
            with atomic_writer(path) as f, open(blob, "rb") as source:
                shutil.copyfileobj(source, f)
            return path
        try:
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_folder(path.parent)
        return path

    def set_ref(self, revision: str, commit: str) -> None:
        if revision == commit or not is_commit(commit) or self.commit(revision) == commit:
            return
        path = self.folder.joinpath("refs", *safe_parts(revision, "revision"))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, commit.encode("ascii"))

    def mark_absent(self, revision: str, commit: str, filename: str) -> None:
        """Remember that ``commit`` has no ``filename``, so offline lookups answer at once."""
        if not is_commit(commit):
            return
        try:
            path = self.absent(commit, filename)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            self.set_ref(revision, commit)
        except OSError as err:  # only a shortcut: never worth failing for
            logger.debug("could not record that %s is absent: %s", filename, err)
