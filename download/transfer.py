"""Receiving one file's body into a partial file, resumably, and checking it before anyone uses it.

- The partial keeps the validator it was started with (see ``partial``); a resumed request sends
  that validator in ``If-Range``, and a 206 carrying another one restarts the body from zero, so
  two versions are never stitched together.
- Attempts are counted only when they bring no progress (under ``PROGRESS_BYTES``); a partial
  that made progress is never discarded: when attempts run out, it stays for the next fetch.
- The result is checked against its size, and against the sha256 (LFS ``X-Linked-Etag``, or a
  pinned hash) or the git blob SHA-1 (a small hub file's ETag) when known.
- A full disk is a ``DiskFullError`` naming the folder and the bytes needed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from . import http
from .http import DownloadError, Stalled
from .names import is_hex
from .partial import claim, rebind, release

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # for hashing
STREAM_CHUNK = 1 << 16  # the most one read returns
PROGRESS_BYTES = 1 << 16  # an attempt that adds less than this (and does not finish) made no progress
PROGRESS_FROM = 10 * 1024 * 1024  # bytes; smaller files download without a bar


class DiskFullError(DownloadError):
    """The cache's disk has no room for the file."""


class _Rejected(DownloadError):
    """What arrived is not the file (wrong size, hash or encoding): it is never kept."""


@dataclass(frozen=True)
class Remote:
    """What the server says a file is."""
    url: str
    etag: str | None  # X-Linked-Etag (LFS: the sha256) or ETag, without quotes
    size: int
    validator: str | None  # the ETag of the response that carries the bytes, for If-Range
    commit: str | None = None  # X-Repo-Commit (the hub)
    linked: bool = False  # an LFS file: etag is the sha256 of the content

    def sha256(self) -> str | None:
        return self.etag if self.linked and is_hex(self.etag, 64) else None

    def git_sha1(self) -> str | None:
        return self.etag if not self.linked and is_hex(self.etag, 40) else None


def normalize_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    return (value[2:] if value.startswith("W/") else value).strip('"') or None


def describe(response: requests.Response, url: str) -> Remote:
    """The file a response (and the redirects before it) describes. The hub answers for a large
    file with a redirect carrying ``X-Linked-Etag`` and ``X-Linked-Size``; the storage it
    redirects to has its own ETag (the validator)."""
    chain = [*response.history, response]

    def first(name: str) -> str | None:
        return next((r.headers[name] for r in chain if name in r.headers), None)

    linked = first("X-Linked-Etag")
    size = first("X-Linked-Size") or response.headers.get("Content-Length")
    if response.status_code == 206:  # Content-Range: bytes start-end/total
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        size = total if total.isdigit() else None
    if size is None or not str(size).isdigit():
        raise DownloadError(f"{url} did not say how large it is (no Content-Length)")
    validator = response.headers.get("ETag")
    return Remote(url=url, etag=normalize_etag(linked or validator), size=int(size), validator=validator,
                  commit=first("X-Repo-Commit"), linked=linked is not None)


def download(session: requests.Session, remote: Remote, folder: Path, key: str, *, pinned: str | None = None,
             progress: bool | None = None) -> tuple[Path, Remote, str]:
    """Receive ``remote`` into a verified partial file in ``folder``: (its path, the Remote it
    turned out to be, its sha256). The caller moves it into place."""
    url = remote.url
    partial = claim(folder, key, remote.validator)
    bar = progress_bar(url, remote.size, progress)
    try:
        _check_space(folder, remote.size - partial.stat().st_size, url)
        fruitless, last = 0, None
        while True:
            have = partial.stat().st_size
            resume = 0 < have < remote.size and remote.validator is not None
            headers = {"Range": f"bytes={have}-", "If-Range": remote.validator} if resume else {}
            try:
                response = http.request(session, "GET", url, headers=headers, stream=True, fail_fast=True)
                try:
                    if response.status_code == 206 and response.headers.get("ETag") != remote.validator:
                        logger.warning("%s sent another version of the file while resuming; starting again", url)
                        partial.write_bytes(b"")
                        raise Stalled("a resumed body came with another validator")
                    start = _range_start(response, have) if resume else 0
                    if start == 0 and response.status_code != 206:  # a whole body: maybe a newer version
                        new = describe(response, url)
                        if new.validator != remote.validator:
                            partial = rebind(partial, key, new.validator)
                        remote = replace(new, commit=new.commit or remote.commit)
                    _write_body(response, partial, start, remote.size, bar)
                finally:
                    http.finish(response)
                last = None
            except (*http.TRANSIENT, Stalled, http.UnreachableError) as err:
                last = err
            except (_Rejected, http.EntryNotFoundError):
                raise
            except DownloadError as err:  # a resume the server refused (416, a wrong range): from zero
                if not resume:
                    raise
                logger.warning("%s refused to resume (%s); starting again", url, err)
                partial.write_bytes(b"")
                last = err
            got = partial.stat().st_size
            if got == remote.size:
                break
            fruitless = 0 if got - have >= PROGRESS_BYTES else fruitless + 1
            if fruitless >= http.ATTEMPTS:
                why = http.reason(last) if last else f"ended after {got} of {remote.size} bytes"
                raise DownloadError(f"{url} kept failing after {http.ATTEMPTS} attempts without progress ({why}); "
                                    f"the {got} bytes received are kept for the next try")
            http.sleep(fruitless, None)
        digest = _verify(partial, remote, pinned)
        return partial, remote, digest
    except BaseException as err:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            partial.unlink(missing_ok=True)
            raise DiskFullError(f"no space left in {folder} for {url}: it needs {remote.size} bytes") from None
        if isinstance(err, _Rejected):
            partial.unlink(missing_ok=True)  # a wrong body is never kept
        else:
            release(partial, key)  # Ctrl-C, attempts spent: the bytes stay for a later fetch
        raise
    finally:
        if bar is not None:
            bar.close()


def _check_space(folder: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskFullError(f"{url} needs {needed} more bytes in {folder}, which has {free} free")


def _write_body(response: requests.Response, path: Path, start: int, size: int, bar) -> None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise _Rejected(f"{response.url} was sent with Content-Encoding {encoding} although identity was asked for")
    watch = http.watch_of(response)
    # read1 returns whatever has arrived (urllib3 >= 2.3), so the watchdog counts every byte
    read = getattr(response.raw, "read1", response.raw.read)
    with open(path, "r+b") as f:
        f.truncate(start)
        f.seek(start)
        if bar is not None:
            bar.reset(total=size)
            bar.update(start)
        while True:
            try:
                chunk = read(STREAM_CHUNK, decode_content=False)
            except http.TRANSIENT as err:
                if watch is not None and watch.stalled:
                    raise Stalled(f"{response.url} sent less than the minimum rate") from None
                raise err
            if not chunk:
                break
            f.write(chunk)
            if watch is not None:
                watch.count(len(chunk))
            if bar is not None:
                bar.update(len(chunk))
            if f.tell() > size:
                raise _Rejected(f"{response.url} sent more than the {size} bytes it announced")
        f.flush()
        os.fsync(f.fileno())
    if watch is not None and watch.stalled:
        raise Stalled(f"{response.url} sent less than the minimum rate")


def _range_start(response: requests.Response, have: int) -> int:
    """Where the body starts: ``have`` for a 206 that resumes there, else 0 (a fresh 200)."""
    if response.status_code != 206:
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != have:
        raise DownloadError(f"{response.url} resumed at the wrong place ({response.headers.get('Content-Range')!r}, wanted {have})")
    return have


def _verify(path: Path, remote: Remote, pinned: str | None) -> str:
    """The file's sha256, after checking its size and every hash known for it."""
    got = path.stat().st_size
    if got != remote.size:
        raise _Rejected(f"{remote.url} arrived with {got} bytes, not the {remote.size} it announced")
    sha256, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % got, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha256.update(block)
            git.update(block)
    for name, want, have in (("sha256", pinned or remote.sha256(), sha256.hexdigest()),
                             ("git blob SHA-1", remote.git_sha1(), git.hexdigest())):
        if want and have != want:
            raise _Rejected(f"{remote.url} arrived with {name} {have}, not {want}: it was not stored")
    return sha256.hexdigest()


def progress_bar(url: str, size: int, progress: bool | None):
    """A tqdm bar on stderr for a download of ``size`` bytes, or None: ``progress`` False, a small
    file, or (``progress`` None) stderr not a terminal."""
    if progress is False or size < PROGRESS_FROM or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1],
                file=sys.stderr, leave=False)
