"""A fault-injecting HTTP file server on 127.0.0.1, for tests.

Usage::

    with FaultServer() as srv:
        srv.add("/blob", data)                      # serve bytes at a path
        srv.add("/flaky", data, Faults(status_seq=[500, 503], retry_after=1))
        url = srv.url("/blob")
        ...
        assert srv.gets("/blob") == 1               # GET requests seen for a path
        srv.requests                                # every request: method, path, headers

Each path has its own :class:`Faults` (the knobs of RELIABILITY.md §3). A
second server is another origin (another port), for cross-origin redirects::

    with FaultServer() as hub, FaultServer() as cdn:
        cdn.add("/x", data)
        hub.add("/x", b"", Faults(redirect_to=cdn.url("/x")))

Every knob applies per request as documented on :class:`Faults`; counters
are per path. The server is a ``ThreadingHTTPServer`` with HTTP/1.1
keep-alive and real ``Range`` support (single ranges).
"""

from __future__ import annotations

import contextlib
import gzip as gzip_mod
import hashlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["FaultServer", "Faults", "Request"]


@dataclass
class Faults:
    """What to do wrong, per path. Counters (``n``) count GETs to the path, from 1.

    - ``status_seq``: statuses for the first GETs, in order (e.g. ``[500, 429]``);
      after the list runs out, requests are served normally. Also ``status_always``.
    - ``retry_after``: value of ``Retry-After`` sent with every 408/429/5xx from ``status_seq``.
    - ``drop_at``: close the connection abruptly (RST) after sending this many body
      bytes of a response; ``drop_times`` limits how many responses are cut (default 1).
    - ``ignore_range``: answer 200 with the whole body to Range requests.
    - ``bad_content_range``: answer 206 with a Content-Range whose start is off by 1 KiB
      (and the bytes from that wrong offset); ``bad_content_range_times`` limits it.
    - ``etag_change``: send a new ETag on every response (and the body changes too
      when ``etag_change_body`` is set: last byte xor the request number).
    - ``content_length``: ``"+k"``/``"-k"`` (declare k more/fewer bytes than sent),
      ``"none"`` (no header, close-delimited), ``"-1"`` or ``"junk"`` (bad header).
    - ``long_body``: send this many extra garbage bytes after the body.
    - ``flip_byte``: xor 0xFF into the byte at this offset (every response).
    - ``flip_times``: how many responses carry the flipped byte (default: all).
    - ``zeros``: serve zeros instead of the data (same length).
    - ``html_200``: answer every request 200 with an HTML error page.
    - ``stall_after``: after this many body bytes, stop sending (keep the socket open)
      for ``stall_seconds`` (default 60); ``stall_times`` limits how many responses stall.
    - ``slow_bps``: cap each response at this many bytes per second; ``slow_times``
      limits how many responses (the first ones) are capped.
    - ``gzip``: gzip the body and send ``Content-Encoding: gzip`` even when the client
      asked for identity.
    - ``redirect_to``: answer 302 with this ``Location`` (any origin); ``redirect_status``.
    - ``outage_until``: refuse (close at once) every request until this ``time.monotonic()``.
    - ``status_always``: answer every request with this status.
    """

    status_seq: list[int] = field(default_factory=list)
    status_always: int | None = None
    retry_after: str | None = None
    drop_at: int | None = None
    drop_times: int = 1
    ignore_range: bool = False
    bad_content_range: bool = False
    bad_content_range_times: int = 1_000_000
    etag_change: bool = False
    etag_change_body: bool = False
    content_length: str | None = None
    long_body: int = 0
    flip_byte: int | None = None
    flip_times: int = 1_000_000
    zeros: bool = False
    html_200: bool = False
    stall_after: int | None = None
    stall_seconds: float = 60.0
    stall_times: int = 1
    slow_bps: int | None = None
    slow_times: int = 1_000_000
    gzip: bool = False
    redirect_to: str | None = None
    redirect_status: int = 302
    outage_until: float | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    """One request as the server saw it (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    range: str | None


@dataclass
class _Entry:
    data: bytes
    faults: Faults
    gets: int = 0
    drops: int = 0
    stalls: int = 0
    bad_ranges: int = 0
    flips: int = 0
    slowed: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _abort(self) -> None:
        # SO_LINGER 0: close with RST, as a dropped connection looks.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _simple(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        srv = self.server.owner
        path = self.path.split("?", 1)[0]
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        srv._record(Request(self.command, self.path, hdrs, hdrs.get("range")))
        entry = srv._entries.get(path)
        if entry is None:
            self._simple(404, b"not found", {"X-Error-Code": "EntryNotFound"})
            return
        f = entry.faults
        with entry.lock:
            if not head:
                entry.gets += 1
            n = entry.gets
        if f.outage_until is not None and time.monotonic() < f.outage_until:
            self._abort()
            return
        if f.redirect_to is not None:
            self._simple(f.redirect_status, b"", {"Location": f.redirect_to})
            return
        status = f.status_always
        if status is None and not head and n <= len(f.status_seq):
            status = f.status_seq[n - 1]
        if status is not None and status != 200:
            extra = {}
            if f.retry_after is not None and (status in (408, 429) or status >= 500):
                extra["Retry-After"] = f.retry_after
            self._simple(status, b"error %d" % status, extra)
            return
        if f.html_200:
            self._simple(
                200, b"<html><body>Service unavailable</body></html>", {"Content-Type": "text/html"}
            )
            return

        data = entry.data
        if f.zeros:
            data = bytes(len(data))
        if f.etag_change_body and data:
            data = data[:-1] + bytes([data[-1] ^ (n & 0xFF)])
        if f.flip_byte is not None and f.flip_byte < len(data):
            with entry.lock:
                entry.flips += 1
                flip = entry.flips <= f.flip_times
            if flip:
                b = bytearray(data)
                b[f.flip_byte] ^= 0xFF
                data = bytes(b)
        etag = f'"v{n}"' if f.etag_change else '"' + hashlib.sha1(entry.data).hexdigest() + '"'
        size = len(data)
        start, end = 0, size  # [start, end)
        status = 200
        rng = hdrs.get("range")
        if_range = hdrs.get("if-range")
        if rng and not f.ignore_range and (if_range is None or if_range == etag):
            m = _RANGE.match(rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:  # suffix range
                    start = max(0, size - int(m.group(2)))
                if start >= size or start >= end:
                    self._simple(416, b"", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
        body = data[start:end]
        cr_start = start
        if status == 206 and f.bad_content_range:
            with entry.lock:
                entry.bad_ranges += 1
                bad = entry.bad_ranges <= f.bad_content_range_times
            if bad:
                cr_start = start + 1024 if start + 1024 < size else max(0, start - 1024)
                body = data[cr_start : cr_start + (end - start)]
        encoding = None
        if f.gzip:
            body = gzip_mod.compress(body)
            encoding = "gzip"
        declared: str | None = str(len(body))
        if f.long_body:
            declared = None  # close-delimited, so the extra bytes reach the client
        if f.content_length is not None:
            cl = f.content_length
            if cl == "none":
                declared = None
            elif cl in ("-1", "junk"):
                declared = cl
            elif cl.startswith(("+", "-")):
                declared = str(len(body) + int(cl))
        self.send_response(status)
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in f.extra_headers.items():
            self.send_header(k, v)
        if status == 206:
            last = cr_start + (end - start) - 1
            self.send_header("Content-Range", f"bytes {cr_start}-{last}/{size}")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if declared is not None:
            self.send_header("Content-Length", declared)
        if declared is None or f.content_length is not None:
            # Anything but an exact length: the body ends when we close.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head:
            return
        self._send_body(entry, body + bytes(f.long_body))

    def _send_body(self, entry: _Entry, body: bytes) -> None:
        f = entry.faults
        limit = len(body)
        drop = False
        stall = False
        slow = None
        with entry.lock:
            if f.slow_bps and entry.slowed < f.slow_times:
                entry.slowed += 1
                slow = f.slow_bps
            if f.drop_at is not None and entry.drops < f.drop_times and f.drop_at < limit:
                entry.drops += 1
                limit = f.drop_at
                drop = True
            elif (
                f.stall_after is not None and entry.stalls < f.stall_times and f.stall_after < limit
            ):
                entry.stalls += 1
                stall = True
        sent = 0
        # Small writes when throttled, so the cap holds within each 100 ms.
        block = min(64 * 1024, max(1, slow // 10)) if slow else 64 * 1024
        t0 = time.monotonic()
        try:
            while sent < limit:
                if stall and sent >= (f.stall_after or 0):
                    time.sleep(f.stall_seconds)
                    self.close_connection = True
                    return
                n = min(block, limit - sent)
                if stall:
                    n = min(n, (f.stall_after or 0) - sent) or n
                self.wfile.write(body[sent : sent + n])
                sent += n
                with entry.lock:
                    entry.bytes_sent += n
                if slow:
                    ahead = sent / slow - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return
        if drop:
            self._abort()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultServer


class FaultServer:
    """A ThreadingHTTPServer on 127.0.0.1:<free port>; use as a context manager."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None
        self.on_request: Callable[[Request], None] | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- content ---------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def add(self, path: str, data: bytes, faults: Faults | None = None) -> str:
        """Serves `data` at `path` with `faults`; returns the URL."""
        self._entries[path] = _Entry(data, faults or Faults())
        return self.url(path)

    def faults(self, path: str) -> Faults:
        """The live Faults of a path (change knobs between requests)."""
        return self._entries[path].faults

    # -- observations ----------------------------------------------------
    def _record(self, r: Request) -> None:
        with self._lock:
            self._requests.append(r)
        if self.on_request is not None:
            self.on_request(r)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def gets(self, path: str) -> int:
        """GET requests seen for `path`."""
        e = self._entries.get(path)
        return e.gets if e else 0

    def bytes_sent(self, path: str) -> int:
        """Body bytes written to sockets for `path`."""
        e = self._entries.get(path)
        return e.bytes_sent if e else 0
