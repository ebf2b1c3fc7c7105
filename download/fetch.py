"""Fetching one file of a hub repository, or one plain URL, through its cache.

Online, the server is asked what the file is now (one HEAD) and the cached copy is used when it
is that file. Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only``) no socket is opened. When
the server cannot be reached (refused, DNS failure, timeout) and the cache has the file, or the
snapshot of the revision, that is used at once, with one warning per host; without a cache the
error gives the whole cause and what to do.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlparse

from ..locks import ForkSafeLock
from . import http
from .cache import CacheCorruptedError, Record, UrlCache, move_into_place
from .hf_cache import RepoCache, is_commit
from .http import DownloadError, EntryNotFoundError, OfflineError, UnreachableError
from .names import hub_url
from .partial import lock
from .transfer import Remote, describe, download

logger = logging.getLogger(__name__)

HINT = ("To load what is already cached without asking the server, set HF_HUB_OFFLINE=1; "
        "or pass a local directory that holds the files.")
UNREACHABLE_FOR = 60.0  # seconds during which a host that could not be reached is not asked again
_unreachable: dict[str, float] = {}
_unreachable_lock = ForkSafeLock()


def fetch_hub(repo: str, filename: str, *, revision: str | None = None, cache_dir=None, force_download: bool = False,
              local_files_only: bool = False, token: str | bool | None = None, progress: bool | None = None) -> Path:
    """The local path of ``filename`` in hub repository ``repo`` at ``revision``, in the hub cache."""
    revision = revision or "main"
    url = hub_url(repo, filename, revision)
    cache = RepoCache(repo, cache_dir)
    commit, path, absent = cache.cached(revision, filename)
    if local_files_only or http.offline():
        return cached_or_raise(url, cache.root, path, absent, why_offline(local_files_only))
    if path is not None and revision == commit and not force_download:
        return path  # a commit never changes
    fallback = commit is not None and not force_download  # a snapshot of the revision to go on with
    if fallback and _known_unreachable(url):
        return cached_or_raise(url, cache.root, path, absent, "the hub could not be reached")
    session = http.session_for(url, token)
    try:
        remote = describe(http.request(session, "HEAD", url, fail_fast=fallback), url)
    except EntryNotFoundError as err:
        if err.commit:
            cache.mark_absent(revision, err.commit, filename)
        raise
    except DownloadError as err:
        if fallback:
            _fell_back(url, err)
            return cached_or_raise(url, cache.root, path, absent, f"the hub failed ({err})")
        if isinstance(err, UnreachableError):
            raise UnreachableError(f"{err}. Nothing for {repo} at revision {revision!r} is cached in {cache.root}. {HINT}") from None
        raise
    _mark_reached(url)
    commit = remote.commit or (revision if is_commit(revision) else None)
    if commit is None or remote.etag is None:
        raise DownloadError(f"{url} did not send {'X-Repo-Commit' if commit is None else 'an ETag'}, so it cannot be cached")
    blob = cache.blob(remote.etag)
    with lock(cache.lock_path(blob)):
        if force_download or not _whole(blob, remote):
            temporary, remote, _ = download(session, remote, cache.blobs, blob.name, progress=progress)
            commit = remote.commit or commit
            blob = move_into_place(temporary, cache.blob(remote.etag))
    path = cache.link(commit, filename, blob)
    cache.set_ref(revision, commit)
    return path


def fetch_url(url: str, *, cache_dir=None, force_download: bool = False, local_files_only: bool = False,
              token: str | bool | None = None, sha256: str | None = None, progress: bool | None = None) -> Path:
    """The local path of an http(s) URL's file, in the URL cache (``sha256``: a pinned hash)."""
    cache = UrlCache(cache_dir)
    cached = None if force_download else cache.lookup(url)
    path = cached[0] if cached else None
    if local_files_only or http.offline():
        return cached_or_raise(url, cache.folder, path, False, why_offline(local_files_only))
    if path is not None and _known_unreachable(url):
        return path
    session = http.session_for(url, token)
    try:
        remote = describe(http.request(session, "HEAD", url, fail_fast=path is not None), url)
    except EntryNotFoundError:
        raise
    except DownloadError as err:
        if path is not None:
            _fell_back(url, err)
            return path
        if isinstance(err, UnreachableError):
            raise UnreachableError(f"{err}. {HINT}") from None
        raise
    _mark_reached(url)
    if cached is not None and same_file(cached[1], remote):
        return cached[0]
    with lock(cache.lock_path(url)):
        cached = None if force_download else cache.lookup(url)
        if cached is not None and same_file(cached[1], remote):
            return cached[0]  # another process finished it while we waited
        temporary, remote, digest = download(session, remote, cache.blobs, cache.key(url), pinned=sha256,
                                             progress=progress)
        return cache.store(temporary, Record(url=url, etag=remote.etag, size=remote.size, sha256=digest))


def same_file(record: Record, remote: Remote | Record) -> bool:
    return record.etag == remote.etag and record.size == remote.size


def _whole(blob: Path, remote: Remote) -> bool:
    """Whether the blob is there; one of another size was changed after download."""
    try:
        size = blob.stat().st_size
    except OSError:
        return False
    if size != remote.size:
        raise CacheCorruptedError(f"the cached file {blob} is {size} bytes, not {remote.size}: it was changed "
                                  "after download. Load again with force_download=True.")
    return True


def cached_or_raise(url: str, folder: Path, path: Path | None, absent: bool, why: str) -> Path:
    """The cached file; or, without one, the error that says why nothing was downloaded."""
    if path is not None:
        return path
    if absent:
        raise EntryNotFoundError(f"{url} does not exist (the cache in {folder} recorded its absence)")
    raise OfflineError(f"{url} is not in the cache ({folder}) and {why}, so it was not downloaded")


def why_offline(local_files_only: bool) -> str:
    return "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"


def _host(url: str) -> str:
    return urlparse(url).netloc


def _known_unreachable(url: str) -> bool:
    with _unreachable_lock:
        since = _unreachable.get(_host(url))
        return since is not None and time.monotonic() - since < UNREACHABLE_FOR


def _fell_back(url: str, err: DownloadError) -> None:
    """Say (once per host) that the cache is used because the server failed; an unreachable host
    is not asked again for a while."""
    if not isinstance(err, UnreachableError):
        logger.warning("%s; using the cached files", err)
        return
    with _unreachable_lock:
        first = _host(url) not in _unreachable
        _unreachable[_host(url)] = time.monotonic()
    if first:
        logger.warning("%s; using the cached files, without asking %s again for %d s. %s",
                       err, _host(url), UNREACHABLE_FOR, HINT)


def _mark_reached(url: str) -> None:
    with _unreachable_lock:
        _unreachable.pop(_host(url), None)

