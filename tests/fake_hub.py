"""An HTTP server on 127.0.0.1 that imitates the Hugging Face hub, with faults on demand.

    GET|HEAD /{org}/{repo}/resolve/{revision}/{file}
        small files: 200 with the bytes and an ETag;
        large ("LFS") files: 302 to /blobs/{sha256} with X-Linked-Etag (the sha256) and X-Linked-Size;
        missing: 404 with an HTML page.
    GET|HEAD /blobs/{sha256}: the bytes, with its own ETag, Range and If-Range.

Faults are set per file name in ``hub.faults[name]`` (see ``Fault``); every request is logged.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
    replace_after_first_get: bytes | None = None  # the file changes once it was first served


class FakeHub:
    LFS_FROM = 1024  # files this large or larger are served as LFS blobs

    def __init__(self):
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.log: list[tuple[str, str, dict]] = []
        self.redirect_host = "127.0.0.1"
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo: str, filename: str, data: bytes, revision: str = "main") -> None:
        self.files[(repo, revision, filename)] = data

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
                if fault.statuses:
                    status = fault.statuses.pop(0)
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return self.send(status, b"<html>busy</html>", body, headers)
                if fault.redirect_loop:
                    return self.send(302, b"", body, {"Location": self.path})
                data = hub.files.get((repo, revision, name))
                if data is None:
                    return self.send(404, b"<!DOCTYPE html><html><body>Entry not found</body></html>", body,
                                     {"X-Error-Code": "EntryNotFound", "Content-Type": "text/html"})
                sha = hashlib.sha256(data).hexdigest()
                if len(data) >= hub.LFS_FROM:
                    size = fault.announce_size if fault.announce_size is not None else len(data)
                    return self.send(302, b"", body, {
                        "Location": f"http://{hub.redirect_host}:{hub.port}/blobs/{sha}",
                        "X-Linked-Etag": f'"{fault.linked_sha256 or sha}"', "X-Linked-Size": str(size),
                        "ETag": f'"{fault.linked_sha256 or sha}"'})
                self.stream(name, data, body, f'"{hashlib.sha1(data).hexdigest()}"', fault)

            def blob(self, sha, body):
                found = hub._blob(sha)
                if found is None:
                    return self.send(404, b"<html>no such blob</html>", body)
                name, data = found
                self.stream(name, data, body, f'"blob-{sha[:16]}"', self.fault(name))

            def stream(self, name, data, body, etag, fault):
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and not fault.ignore_range and self.headers.get("If-Range", etag) == etag:
                    start, status = int(wanted.split("=")[1].split("-")[0]), 206
                payload = data[start:] + b"x" * fault.extra_bytes if body else b""
                headers = {"ETag": etag, "Accept-Ranges": "bytes"}
                if status == 206:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                length = len(data) - start + fault.extra_bytes
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
                self.wfile.write(payload)

            def send(self, status, data, body, headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler
