"""HTTP requests as the download layer makes them: one session per fetch, the token to the hub's
host only, no compression, bounded retries, and a minimum-rate watchdog no server can outwait.

- ``Accept-Encoding: identity``: sizes and hashes are those of the file, never of a gzip stream.
- Timeouts on connect and read, plus the watchdog (``GPT_HUB_MIN_RATE`` bytes/s over
  ``GPT_HUB_RATE_WINDOW`` seconds): a request whose headers, or whose body, arrive slower than
  that is cut, so a server trickling a byte at a time cannot keep it alive.
- Retries with backoff on 408/429/5xx and dropped connections, honouring ``Retry-After`` (read
  defensively, capped); none after a DNS failure; a redirect limit.
"""

from __future__ import annotations

import email.utils
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..errors import GPTHubError
from .hf_cache import stored_token

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
ATTEMPTS = 5
MAX_REDIRECTS = 10
RETRY_AFTER_CAP = 30.0
MIN_RATE = 1024.0  # bytes per second, over...
RATE_WINDOW = 60.0  # ...this many seconds (GPT_HUB_MIN_RATE, GPT_HUB_RATE_WINDOW)
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# A connection that failed, stalled, or ended before the body did: worth another attempt.
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
             urllib3.exceptions.HTTPError, ConnectionError, socket.timeout)
_NAME_RESOLUTION = getattr(urllib3.exceptions, "NameResolutionError", socket.gaierror)  # urllib3 >= 2
_pause = time.sleep  # the wait between attempts (tests record it instead)


class DownloadError(GPTHubError, OSError):
    """A file could not be downloaded (after retries), or what arrived was not the file."""


class EntryNotFoundError(DownloadError, FileNotFoundError):
    """The server says the file does not exist (404), or the cache knows it is absent."""

    def __init__(self, message: str, commit: str | None = None):
        super().__init__(message)
        self.commit = commit  # the hub's X-Repo-Commit, when it said which commit lacks the file


class OfflineError(DownloadError, FileNotFoundError):
    """The file is not in the cache and the network may not be used (offline) or cannot be reached."""


class UnreachableError(DownloadError):
    """No answer from the server: connection refused, DNS failure or timeout."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def rate_limits() -> tuple[float, float]:
    """(minimum bytes per second, window in seconds), from the environment at call time."""
    def number(name: str, default: float) -> float:
        try:
            value = float(os.environ.get(name, default))
        except ValueError:
            raise ValueError(f"{name}={os.environ[name]!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={os.environ[name]!r} must be a finite number >= 0")
        return value
    return number("GPT_HUB_MIN_RATE", MIN_RATE), number("GPT_HUB_RATE_WINDOW", RATE_WINDOW) or RATE_WINDOW


def session_for(url: str, token: str | bool | None) -> requests.Session:
    """A session for ``url``: the token (None or True: the user's stored one, ``HF_TOKEN`` or the
    login's file; False: none) only if ``url`` is on the hub's own host."""
    from .names import endpoint

    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    session.headers.update({"User-Agent": "gpt-hub", "Accept-Encoding": "identity"})
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if not isinstance(token, str):  # None, or a flag (a NumPy bool or 1 as well): never sent as text
        token = stored_token() if token is None or token else None
    if token and _origin(url) == _origin(endpoint()):
        session.headers["Authorization"] = f"Bearer {token}"  # requests drops it on a redirect to another host
    return session


def request(session: requests.Session, method: str, url: str, *, fail_fast: bool = False,
            **kwargs) -> requests.Response:
    """One request with retries on 408/429/5xx and dropped connections (none after a DNS failure,
    nor when ``fail_fast``: the caller has a cached copy to fall back on).

    Raises EntryNotFoundError for a 404, UnreachableError when no connection could be made,
    DownloadError for other failures; a stream that is dropped later is the caller's to retry.
    """
    for attempt in range(1, ATTEMPTS + 1):
        watch = None
        try:
            with watchdog() as watch:
                response = session.request(method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                                           allow_redirects=True, **kwargs)
                response.gpt_hub_watch = watch  # the body, read later, is watched too
        except requests.TooManyRedirects:
            raise DownloadError(f"{url} redirects more than {MAX_REDIRECTS} times") from None
        except TRANSIENT as err:
            if attempt == ATTEMPTS or fail_fast or is_dns_failure(err):
                slow = " (it answered slower than GPT_HUB_MIN_RATE)" if watch is not None and watch.stalled else ""
                raise UnreachableError(f"could not reach {url}{slow}: {reason(err)}") from None
            sleep(attempt, None)
            continue
        if not kwargs.get("stream") or response.status_code >= 400:
            finish(response)
        if response.status_code in _RETRY_STATUS and attempt < ATTEMPTS:
            sleep(attempt, response.headers.get("Retry-After"))
            continue
        if response.status_code == 404:
            raise EntryNotFoundError(f"{url} does not exist (404)", response.headers.get("X-Repo-Commit"))
        if response.status_code >= 400:
            raise DownloadError(f"{url} answered {response.status_code} {response.reason}")
        return response
    raise AssertionError("unreachable")


def sleep(attempt: int, retry_after: str | None) -> None:
    """Back off before attempt ``attempt + 1``; a ``Retry-After`` (seconds or a date) wins when it parses."""
    delay = min(0.5 * 2 ** (attempt - 1), 8.0)
    wanted = _retry_after(retry_after) if retry_after else None
    if wanted is not None:
        delay = max(0.0, min(wanted, RETRY_AFTER_CAP))
    _pause(delay)


def _retry_after(value: str) -> float | None:
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return when.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _causes(err: BaseException):
    """``err`` and every exception it was raised from, wraps or carries (requests and urllib3 nest
    the socket's error three deep)."""
    pending, seen = [err], set()
    while pending:
        cause = pending.pop()
        if not isinstance(cause, BaseException) or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        pending += [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args]


def is_dns_failure(err: BaseException) -> bool:
    """Whether a name could not be resolved: worth no retry (it will not resolve in a second)."""
    return any(isinstance(cause, (socket.gaierror, _NAME_RESOLUTION)) for cause in _causes(err))


def reason(err: BaseException) -> str:
    """What went wrong, in a line: a name that does not resolve says so (the exception's text is
    the connection pool's innards), anything else is the exception as it is."""
    if is_dns_failure(err):
        socket_error = next((c for c in _causes(err) if isinstance(c, socket.gaierror) and c.strerror), None)
        detail = socket_error.strerror if socket_error is not None else "no address"
        return f"its host name does not resolve ({detail}): no network, or no such host"
    return f"{type(err).__name__}: {err}"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parsed = urlparse(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.hostname, port


# -- the minimum-rate watchdog --------------------------------------------------------------------

class Stalled(DownloadError):
    """The server sent less than the minimum rate over the window."""


class _Watch:
    """Cuts the sockets of a request when less than ``rate`` bytes per second arrive over a window."""

    def __init__(self, rate: float, window: float):
        self.rate, self.window = rate, window
        self.received, self.stalled = 0, False
        self._sockets: list[socket.socket] = []
        self._done = threading.Event()
        self._lock = threading.Lock()

    def add(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.append(sock)
                if self.stalled:
                    _cut(sock)

    def count(self, n: int) -> None:
        self.received += n

    def stop(self) -> None:
        self._done.set()

    def run(self) -> None:
        last = 0
        while not self._done.wait(self.window):
            if self.received - last < self.rate * self.window:
                with self._lock:
                    self.stalled = True
                    for sock in self._sockets:
                        _cut(sock)
                return
            last = self.received


_current = threading.local()


@contextmanager
def watchdog() -> Iterator[_Watch]:
    """Watch the requests made inside; the watch goes on (for a streamed body) until ``finish``."""
    watch = _Watch(*rate_limits())
    threading.Thread(target=watch.run, daemon=True, name="gpt-hub-watchdog").start()
    _current.watch = watch
    try:
        yield watch
    except BaseException:
        watch.stop()
        raise
    finally:
        _current.watch = None


def watch_of(response: requests.Response) -> _Watch | None:
    return getattr(response, "gpt_hub_watch", None)


def finish(response: requests.Response) -> None:
    """Stop watching ``response`` (its body was read, or given up) and close it."""
    watch = watch_of(response)
    if watch is not None:
        watch.stop()
    response.close()


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread
    except OSError:
        pass


def _register(connection) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.add(getattr(connection, "sock", None))


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args, **kwargs):
        super().request(*args, **kwargs)
        _register(self)  # the request is sent: from here the watchdog may cut the socket


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args, **kwargs):
        super().request(*args, **kwargs)
        _register(self)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
