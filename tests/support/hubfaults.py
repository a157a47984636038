"""Helpers for tests of the Hub mirror and client: the real MiniLM repo, served.

``minilm_catalog`` hashes the real all-MiniLM-L6-v2 files once per session and
serves them as ``sentence-transformers/all-MiniLM-L6-v2`` at the revision they
came from; ``SHA256SUMS`` (ours, not the Hub's) is left out.
"""

from __future__ import annotations

import functools
import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from caxton_models.ops.server import MINILM_COMMIT, MINILM_REPO_ID, Catalog

__all__ = [
    "MINILM_COMMIT",
    "MINILM_REPO_ID",
    "Fault",
    "FaultProxy",
    "Recorded",
    "folder_catalog",
    "make_cache_entry",
    "minilm_catalog",
    "minilm_sha256s",
    "requested_bytes",
]


@functools.lru_cache(maxsize=8)
def folder_catalog(folder: Path, repo_id: str, commit: str) -> Catalog:
    """Hash a folder once per session (the catalog is read-only once built)."""
    return Catalog.from_folder(folder, repo_id, commit=commit)


def minilm_catalog(minilm_dir: Path) -> Catalog:
    return folder_catalog(minilm_dir, MINILM_REPO_ID, MINILM_COMMIT)


def minilm_sha256s(minilm_dir: Path) -> dict[str, str]:
    """The published SHA-256 of every repo file, from the folder's SHA256SUMS."""
    out = {}
    for line in (minilm_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.removeprefix("./")] = digest
    return out


def make_cache_entry(
    cache_dir: Path,
    name: str,
    src: Path,
    repo_id: str,
    commit: str,
    *,
    revision: str = "main",
    status: str = "verified",
    only: list[str] | None = None,
) -> Path:
    """Write a caxton cache entry (INTERFACES.md layout) holding ``src``'s files.

    Files are hard-linked where possible (the real model is 180 MB), else copied.
    """
    import json
    import os
    import shutil

    catalog = folder_catalog(src, repo_id, commit)
    snap = next(iter(catalog.snapshots.values()))
    entry = cache_dir / name
    listed: dict[str, dict[str, Any]] = {}
    for rel, f in sorted(snap.files.items()):
        if only is not None and rel not in only:
            continue
        dest = entry / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        assert f.local is not None  # a folder catalog: every file is local
        try:
            os.link(f.local, dest)
        except OSError:
            shutil.copyfile(f.local, dest)
        listed[rel] = {
            "size": f.size,
            "sha256": f.sha256,
            "git_oid": f.git_oid,
            "lfs": f.lfs,
        }
    meta = {
        "schema_version": 1,
        "name": name,
        "model_id": repo_id,
        "revision": revision,
        "commit": commit,
        "download_date": "2026-11-27T00:00:00Z",
        "last_validated": "2026-11-27T00:00:00Z",
        "download_source": "test",
        "total_size_bytes": sum(v["size"] for v in listed.values()),
        "file_count": len(listed),
        "validation_status": status,
        "access_count": 0,
        "last_access": "2026-11-27T00:00:00Z",
    }
    (entry / ".caxton_metadata").write_text(json.dumps(meta))
    (entry / ".caxton_checksum").write_text(json.dumps({"schema_version": 1, "files": listed}))
    return entry


# -- a fault-injecting proxy in front of the mirror (RELIABILITY.md §3) -------------------------


@dataclass
class Fault:
    """One rule of :class:`FaultProxy`; the first rule whose ``path`` regex matches applies.

    - ``status_seq``: statuses answered (one per matching request) before passing through;
      ``retry_after`` is sent with them, ``error_code`` as ``X-Error-Code``.
    - ``drop_at``: reset the connection after N body bytes; ``stall_after``: send N bytes,
      then stall ``stall_seconds`` and close.
    - ``flip_byte``: flip the byte at this offset of the file; ``zeros``: send zeros.
    - ``ignore_range``: drop the client's Range (answer 200 with the whole file).
    - ``content_length``: ``"none"``, ``"junk"``, or an int added to the real length.
    - ``redirect_to``: answer 302 to this origin + the same path (another origin).
    - ``body``: replace the body (e.g. a hostile tree listing).
    - ``rate``: send the body at about this many bytes per second (per connection).
    - ``times``: how many matching requests get the body faults (None: all).
    """

    path: str
    method: str | None = None
    status_seq: list[int] = field(default_factory=list)
    retry_after: str | None = None
    error_code: str | None = None
    drop_at: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 3.0
    flip_byte: int | None = None
    zeros: bool = False
    ignore_range: bool = False
    content_length: int | str | None = None
    redirect_to: str | None = None
    body: bytes | None = None
    rate: int | None = None
    times: int | None = None


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    at: float


class FaultProxy:
    """An HTTP proxy on 127.0.0.1:0 in front of ``upstream`` that injects :class:`Fault`\\ s.

    Records every request (method, path, headers with lower-case names, time). Use it as a
    context manager; ``url`` is its origin. ``host`` may be "localhost" to make a second
    origin whose *host name* differs from 127.0.0.1.
    """

    def __init__(self, upstream: str, faults: list[Fault] | None = None, host: str = "127.0.0.1"):
        self.upstream = urlsplit(upstream)
        self.faults = list(faults or [])
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def seen(self, path_regex: str, method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if re.search(path_regex, r.path) and (method is None or r.method == method)
            ]

    def _match(self, method: str, path: str) -> Fault | None:
        for f in self.faults:
            exhausted = f.times is not None and f.times <= 0 and not f.status_seq
            if exhausted:
                continue  # a used-up rule lets later rules (or plain relaying) apply
            if re.search(f.path, path) and (f.method is None or f.method == method):
                return f
        return None


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

        def _handle(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            with proxy._lock:
                proxy.requests.append(Recorded(self.command, self.path, headers, time.monotonic()))
                fault = proxy._match(self.command, self.path)
                injected = fault.status_seq.pop(0) if fault and fault.status_seq else None
                body_fault = fault is not None and (fault.times is None or fault.times > 0)
                counted = injected is None and fault is not None and fault.redirect_to is None
                if counted and body_fault and fault is not None and fault.times is not None:
                    fault.times -= 1
            if injected is not None:
                self._send_status(injected, fault)
                return
            if fault is not None and fault.redirect_to:
                self.send_response(302)
                self.send_header("Location", fault.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            self._relay(fault if body_fault else None, headers)

        def _send_status(self, status: int, fault: Fault | None) -> None:
            body = b'{"error": "injected"}'
            self.send_response(status)
            if fault is not None and fault.retry_after is not None:
                self.send_header("Retry-After", fault.retry_after)
            if fault is not None and fault.error_code:
                self.send_header("X-Error-Code", fault.error_code)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _relay(self, fault: Fault | None, headers: dict[str, str]) -> None:
            up = proxy.upstream
            conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=30)
            fwd = {k: v for k, v in headers.items() if k not in ("host", "connection")}
            if fault is not None and fault.ignore_range:
                fwd.pop("range", None)
                fwd.pop("if-range", None)
            conn.request(self.command, self.path, headers=fwd)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if fault is not None and fault.body is not None:
                body = fault.body
            start = 0
            crange = resp.getheader("Content-Range")
            if crange:
                m = re.match(r"bytes (\d+)-", crange)
                start = int(m.group(1)) if m else 0
            if fault is not None and fault.zeros:
                body = bytes(len(body))
            if fault is not None and fault.flip_byte is not None:
                at = fault.flip_byte - start
                if 0 <= at < len(body):
                    body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
            self.send_response(resp.status)
            length: str | None = str(len(body))
            if self.command == "HEAD":
                length = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in (
                    "content-length",
                    "connection",
                    "transfer-encoding",
                    "date",
                    "server",
                ):
                    self.send_header(k, v)
            if fault is not None and fault.content_length is not None:
                cl = fault.content_length
                length = (
                    None if cl == "none" else "junk" if cl == "junk" else str(len(body) + int(cl))
                )
            if length is not None:
                self.send_header("Content-Length", length)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault is not None and fault.drop_at is not None:
                self.wfile.write(body[: fault.drop_at])
                self.wfile.flush()
                # RST, not FIN: the client sees a reset mid-body (SO_LINGER 0).
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                return
            if fault is not None and fault.stall_after is not None:
                self.wfile.write(body[: fault.stall_after])
                self.wfile.flush()
                time.sleep(fault.stall_seconds)
                self.connection.close()
                return
            if fault is not None and fault.rate is not None:
                step = max(1, fault.rate // 20)
                for i in range(0, len(body), step):
                    self.wfile.write(body[i : i + step])
                    time.sleep(0.05)
                return
            self.wfile.write(body)

    return Handler


def requested_bytes(requests: list[Recorded], size: int) -> int:
    """Bytes a client asked for in these GETs of one file of ``size`` bytes:
    each Range request's span, the whole file for a GET without one."""
    total = 0
    for r in requests:
        rng = r.headers.get("range", "")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
        if m is None:
            total += size
        else:
            end = int(m.group(2)) if m.group(2) else size - 1
            total += end - int(m.group(1)) + 1
    return total
