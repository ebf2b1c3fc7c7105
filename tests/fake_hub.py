"""An HTTP server on 127.0.0.1 that imitates the Hugging Face hub, with faults on demand.

    GET|HEAD /{org}/{repo}/resolve/{revision}/{file}
        small files: 200 with the bytes and an ETag (the git blob SHA-1, as the hub's);
        large ("LFS") files: 302 to /blobs/{sha256} with X-Linked-Etag (the sha256) and X-Linked-Size;
        missing: 404 with an HTML page and X-Error-Code: EntryNotFound.
        Every answer for a known repository carries X-Repo-Commit, a commit made of the
        revision's files (it changes when a file does); a revision may also be that commit.
    GET|HEAD /blobs/{sha256}: the bytes, with its own ETag, Range and If-Range.

Faults are set per file name in ``hub.faults[name]`` (see ``Fault``); every request is logged.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Fault:
    drop_after: int | None = None  # close the connection after this many body bytes...
    drop_times: int | None = None  # ...this many times (None: every time)
    ignore_range: bool = False
    statuses: list[int] = field(default_factory=list)  # answered first, one per request
    retry_after: str | None = None
    redirect_loop: bool = False
    stall: float | None = None  # after drop_after bytes (or at once), wait this long
    announce_size: int | None = None  # X-Linked-Size / Content-Length on HEAD that lie
    extra_bytes: int = 0  # GET sends this many more bytes than the file has
    linked_sha256: str | None = None  # a wrong X-Linked-Etag
    etag: str | None = None  # a wrong ETag for a small file
    replace_after_first_get: bytes | None = None  # the file changes once it was first served
    gzip: bool = False  # compress the body when the client accepts gzip
    gzip_always: bool = False  # compress it whatever the client accepts
    range_ignores_if_range: bool = False  # answer every Range with 206, whatever If-Range says
    range_status: int | None = None  # answer a request with a Range with this status instead
    trickle: float | None = None  # send the body one byte per this many seconds
    trickle_head: float | None = None  # send a HEAD's headers one byte per this many seconds


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    LFS_FROM = 1024  # files this large or larger are served as LFS blobs

    def __init__(self):
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.log: list[tuple[str, str, dict]] = []
        self.redirect_host = "localhost"  # LFS storage is another host, as on the hub (same address)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo: str, filename: str, data: bytes, revision: str = "main") -> None:
        self.files[(repo, revision, filename)] = data

    def commit(self, repo: str, revision: str = "main") -> str | None:
        """The commit of a repository's revision: a hash of its files (None: no such repository)."""
        files = sorted((name, hashlib.sha256(data).hexdigest()) for (r, rev, name), data in self.files.items()
                       if r == repo and rev == revision)
        return hashlib.sha1(repr(files).encode()).hexdigest() if files else None

    def requests(self) -> int:
        return len(self.log)

    def gets(self, filename: str) -> list[dict]:
        return [headers for method, path, headers in self.log if method == "GET" and path.endswith("/" + filename)]

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _blob(self, sha: str) -> tuple[str, bytes] | None:
        for key, data in self.files.items():
            if hashlib.sha256(data).hexdigest() == sha:
                return key[2], data
        return None

    def _handler(hub):  # noqa: N805 - the handler closes over the hub
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                hub.log.append((self.command, self.path, dict(self.headers)))
                parts = self.path.split("/")
                if len(parts) >= 6 and parts[3] == "resolve":
                    self.resolve("/".join(parts[1:3]), parts[4], "/".join(parts[5:]), body)
                elif len(parts) == 3 and parts[1] == "blobs":
                    self.blob(parts[2], body)
                else:
                    self.send(404, b"<html>not found</html>", body)

            def fault(self, name: str) -> Fault:
                return hub.faults.get(name, Fault())

            def resolve(self, repo, revision, name, body):
                fault = self.fault(name)
                if fault.trickle_head and not body:
                    return self.trickle(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000, fault.trickle_head)
                for rev in {rev for r, rev, _ in hub.files if r == repo}:
                    if revision == hub.commit(repo, rev):
                        revision = rev
                commit = hub.commit(repo, revision)
                commit_header = {"X-Repo-Commit": commit} if commit else {}
                if fault.statuses:
                    status = fault.statuses.pop(0)
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return self.send(status, b"<html>busy</html>", body, headers)
                name = unquote(name)
                if fault.redirect_loop:
                    return self.send(302, b"", body, {"Location": self.path})
                data = hub.files.get((repo, revision, name))
                if data is None:
                    return self.send(404, b"<!DOCTYPE html><html><body>Entry not found</body></html>", body,
                                     {"X-Error-Code": "EntryNotFound", "Content-Type": "text/html", **commit_header})
                sha = hashlib.sha256(data).hexdigest()
                if len(data) >= hub.LFS_FROM:
                    size = fault.announce_size if fault.announce_size is not None else len(data)
                    return self.send(302, b"", body, {
                        "Location": f"http://{hub.redirect_host}:{hub.port}/blobs/{sha}",
                        "X-Linked-Etag": f'"{fault.linked_sha256 or sha}"', "X-Linked-Size": str(size),
                        "ETag": f'"{fault.linked_sha256 or sha}"', **commit_header})
                self.stream(name, data, body, f'"{fault.etag or git_blob_sha1(data)}"', fault, commit_header)

            def blob(self, sha, body):
                found = hub._blob(sha)
                if found is None:
                    return self.send(404, b"<html>no such blob</html>", body)
                name, data = found
                self.stream(name, data, body, f'"blob-{sha[:16]}"', self.fault(name))

            def stream(self, name, data, body, etag, fault, extra=None):
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and fault.range_status:
                    return self.send(fault.range_status, b"", body)
                matches = fault.range_ignores_if_range or self.headers.get("If-Range", etag) == etag
                if wanted and not fault.ignore_range and matches:
                    start, status = int(wanted.split("=")[1].split("-")[0]), 206
                headers = {"ETag": etag, "Accept-Ranges": "bytes", **(extra or {})}
                if status == 206:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                payload = data[start:] + b"x" * fault.extra_bytes
                if fault.gzip_always or (fault.gzip and "gzip" in self.headers.get("Accept-Encoding", "")):
                    payload, headers["Content-Encoding"] = gzip.compress(payload), "gzip"
                length = len(payload)
                payload = payload if body else b""
                if not body and fault.announce_size is not None:
                    length = fault.announce_size
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if not body:
                    return
                if fault.replace_after_first_get is not None:
                    hub.files = {k: (fault.replace_after_first_get if k[2] == name else v) for k, v in hub.files.items()}
                    fault.replace_after_first_get = None
                cut = fault.drop_after if fault.drop_after is not None and fault.drop_times != 0 else None
                if cut is not None:
                    if fault.drop_times is not None:
                        fault.drop_times -= 1
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    if fault.stall:
                        time.sleep(fault.stall)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault.stall:
                    time.sleep(fault.stall)
                if fault.trickle:
                    return self.trickle(payload, fault.trickle, headers_sent=True)
                self.wfile.write(payload)

            def trickle(self, data, interval, headers_sent=False):
                """Send ``data`` a byte at a time until the client hangs up."""
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(interval)
                except OSError:
                    pass
                self.close_connection = True

            def send(self, status, data, body, headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler


def blob(size: int = 5000, seed: int = 0) -> bytes:
    """``size`` bytes that differ with ``seed``: a file to serve."""
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"!" * (size % 32)
