"""Fetching one http(s) file into the cache, with the guarantees a user of torch.hub assumes.

- The file is checked before it is used: its size against Content-Length, its sha256 against the
  hub's ``X-Linked-Etag`` (large files) or a hash pinned by the caller. An error page is never
  stored.
- Writes are atomic (process-unique temporary, fsync, rename), so a crash, a full disk or two
  processes at once never leave a half-written file under a final name.
- An interrupted body resumes with ``Range`` + ``If-Range``; a server that ignores the range, or
  whose file changed meanwhile, makes the download restart cleanly.
- Timeouts on connect and read; bounded retries with backoff on 408/429/5xx and dropped
  connections, honouring ``Retry-After`` up to a cap; a redirect limit; a token is sent to the
  hub's own host only.
- Revalidation by ETag; offline (``HF_HUB_OFFLINE=1`` or ``local_files_only``) opens no socket.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from .cache import DownloadCache, Entry

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
ATTEMPTS = 5
MAX_REDIRECTS = 10
RETRY_AFTER_CAP = 30.0
CHUNK = 1 << 20  # for hashing
STREAM_CHUNK = 1 << 16  # for receiving: a connection that breaks loses at most this much
PROGRESS_FROM = 10 * 1024 * 1024  # bytes; smaller files download without a bar
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# A connection that failed, stalled, or ended before the body did: worth another attempt.
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_pause = time.sleep  # the wait between attempts (tests record it instead)
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')


class DownloadError(OSError):
    """A file could not be downloaded (after retries), or what arrived was not the file."""


class EntryNotFoundError(DownloadError, FileNotFoundError):
    """The server says the file does not exist (404)."""


class OfflineError(DownloadError, FileNotFoundError):
    """Offline mode was asked for and the file is not in the cache."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch(url: str, *, cache_dir=None, force_download: bool = False, local_files_only: bool = False,
          token: str | None = None, token_host: str | None = None, sha256: str | None = None,
          progress: bool | None = None, timeout: tuple[float, float] | None = None) -> Path:
    """The local path of ``url``'s file, downloading it into the cache when needed."""
    cache = DownloadCache(cache_dir)
    cached = None if force_download else cache.lookup(url)
    if local_files_only or offline():
        return from_cache_only(cache, url, cached, local_files_only)
    session = _session(url, token, token_host)
    timeout = timeout or (CONNECT_TIMEOUT, READ_TIMEOUT)
    try:
        remote, validator = _metadata(session, url, timeout)
    except EntryNotFoundError:
        raise
    except (*_TRANSIENT, DownloadError) as err:
        if cached is not None:
            logger.warning("could not reach %s (%s); using the cached copy", url, _reason(err))
            return cached[0]
        raise DownloadError(f"could not reach {url}: {_reason(err)}") from None
    if cached is not None and same_file(cached[1], remote):
        return cached[0]
    with cache.lock(url):
        cached = None if force_download else cache.lookup(url)
        if cached is not None and same_file(cached[1], remote):
            return cached[0]  # another process finished it while we waited
        return _download(session, cache, url, remote, validator, sha256, progress, timeout)


def from_cache_only(cache: DownloadCache, url: str, cached, local_files_only: bool) -> Path:
    """Offline: the cached file, or an error naming what is missing (no socket is opened)."""
    if cached is None:
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        raise OfflineError(f"{url} is not in the cache ({cache.folder}) and {why}, so it was not downloaded")
    return cached[0]


def same_file(entry: Entry, remote: Entry) -> bool:
    return entry.etag == remote.etag and entry.size == remote.size


def _session(url: str, token: str | None, token_host: str | None) -> requests.Session:
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = "gpt-hub"
    token = token or os.environ.get("HF_TOKEN")
    if token and urlparse(url).hostname == (token_host or urlparse(url).hostname):
        session.headers["Authorization"] = f"Bearer {token}"  # requests drops it on a redirect to another host
    return session


def _metadata(session: requests.Session, url: str, timeout) -> tuple[Entry, str | None]:
    """What the server says the file is, from a HEAD request (see ``_describe``)."""
    return _describe(_request(session, "HEAD", url, timeout), url)


def _describe(response: requests.Response, url: str) -> tuple[Entry, str | None]:
    """The file a response (and the redirects before it) describes, and the validator for
    ``If-Range``. The hub answers for a large file with a redirect carrying ``X-Linked-Etag`` (the
    sha256 of the content) and ``X-Linked-Size``; the storage it redirects to has its own ETag."""
    chain = [*response.history, response]
    linked = next((r.headers["X-Linked-Etag"] for r in chain if "X-Linked-Etag" in r.headers), None)
    size = next((r.headers["X-Linked-Size"] for r in chain if "X-Linked-Size" in r.headers), None)
    size = size or response.headers.get("Content-Length")
    if response.status_code == 206:  # Content-Range: bytes start-end/total
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        size = total if total.isdigit() else size
    if size is None or not str(size).isdigit():
        raise DownloadError(f"{url} did not say how large it is (no Content-Length)")
    validator = response.headers.get("ETag")
    match = _SHA256.match(linked.strip()) if linked else None
    entry = Entry(url=url, etag=linked or validator, size=int(size), sha256=match.group(1) if match else None)
    return entry, validator


def _request(session: requests.Session, method: str, url: str, timeout, **kwargs) -> requests.Response:
    """One request with retries on 408/429/5xx and dropped connections; raises for 404 and other errors."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = session.request(method, url, timeout=timeout, allow_redirects=True, **kwargs)
        except requests.TooManyRedirects:
            raise DownloadError(f"{url} redirects more than {MAX_REDIRECTS} times") from None
        except _TRANSIENT:
            if attempt == ATTEMPTS:
                raise
            _sleep(attempt, None)
            continue
        if response.status_code in _RETRY_STATUS and attempt < ATTEMPTS:
            response.close()
            _sleep(attempt, response.headers.get("Retry-After"))
            continue
        if response.status_code == 404:
            raise EntryNotFoundError(f"{url} does not exist (404)")
        if response.status_code >= 400:
            raise DownloadError(f"{url} answered {response.status_code} {response.reason}")
        return response
    raise AssertionError("unreachable")


def _sleep(attempt: int, retry_after: str | None) -> None:
    delay = min(0.5 * 2 ** (attempt - 1), 8.0)
    if retry_after:
        try:
            delay = float(retry_after)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(retry_after)
            delay = parsed.timestamp() - time.time() if parsed else delay
        delay = max(0.0, min(delay, RETRY_AFTER_CAP))
    _pause(delay)


def _download(session, cache: DownloadCache, url: str, remote: Entry, validator: str | None, pinned: str | None,
              progress, timeout) -> Path:
    temporary = cache.temporary(url)
    if remote.size > shutil.disk_usage(cache.folder).free:
        temporary.unlink(missing_ok=True)
        raise DownloadError(f"{url} is {remote.size} bytes, more than the free space in {cache.folder}")
    bar = _progress_bar(url, remote.size, progress)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            have = temporary.stat().st_size
            headers = {"Range": f"bytes={have}-", "If-Range": validator} if 0 < have < remote.size and validator else {}
            try:
                with _request(session, "GET", url, timeout, headers=headers, stream=True) as response:
                    start = _range_start(response, have if headers else 0)
                    if start == 0:  # a whole body: the file may have changed since we asked
                        remote, validator = _describe(response, url)
                    _write_body(response, temporary, start, remote.size, bar)
            except _TRANSIENT as err:
                if attempt == ATTEMPTS:
                    raise DownloadError(f"{url} kept failing after {ATTEMPTS} attempts: {_reason(err)}") from None
                _sleep(attempt, None)
                continue
            got = temporary.stat().st_size
            if got == remote.size:
                break
            if attempt == ATTEMPTS:
                raise DownloadError(f"{url} ended after {got} of {remote.size} bytes, {ATTEMPTS} times")
        _verify(temporary, url, remote.size, pinned or remote.sha256)
        return cache.store(temporary, Entry(url=url, etag=remote.etag, size=remote.size, sha256=pinned or remote.sha256))
    except KeyboardInterrupt:
        raise  # the partial file stays, for a later run to resume
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()


def _write_body(response: requests.Response, path: Path, start: int, size: int, bar) -> None:
    with open(path, "r+b") as f:
        f.truncate(start)
        f.seek(start)
        if bar is not None:
            bar.reset(total=size)
            bar.update(start)
        for chunk in response.iter_content(STREAM_CHUNK):
            f.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
            if f.tell() > size:
                raise DownloadError(f"{response.url} sent more than the {size} bytes it announced")
        f.flush()
        os.fsync(f.fileno())


def _range_start(response: requests.Response, have: int) -> int:
    """Where the body starts: ``have`` for a 206 that resumes there, else 0 (a fresh 200)."""
    if response.status_code != 206:
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != have:
        raise DownloadError(f"{response.url} resumed at the wrong place ({response.headers.get('Content-Range')!r}, wanted {have})")
    return have


def _verify(path: Path, url: str, size: int, sha256: str | None) -> None:
    got = path.stat().st_size
    if got != size:
        raise DownloadError(f"{url} arrived with {got} bytes, not the {size} it announced")
    if sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
        if digest.hexdigest() != sha256:
            raise DownloadError(f"{url} arrived with sha256 {digest.hexdigest()}, not {sha256}: it was not stored")


def _progress_bar(url: str, size: int, progress: bool | None):
    if progress is False or size < PROGRESS_FROM or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1],
                file=sys.stderr, leave=False)


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err)[:200]}"
