"""The mirror's edges under hostile input: huge and odd ranges, control characters in
paths, tokens in reprs, slow clients and too many connections."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from caxton_models.ops.server import Catalog, ServeOptions, ServerThread, Upstream
from caxton_models.ops.server.sendfile import parse_range
from tests.support.rawhttp import request

REPO = "org/edges"
HUGE = "9" * 4300
T = TypeVar("T")  # int() refuses more than 4,300 digits by default


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("edges")
    (root / "empty.txt").write_bytes(b"")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    with ServerThread(Catalog.from_folder(root, REPO)) as srv:
        yield srv


@pytest.mark.parametrize(
    ("rng", "status", "span"),
    [
        (f"bytes={HUGE}-", 416, None),  # starts past the end
        (f"bytes=0-{HUGE}", 206, (0, 1024)),  # last past the end: the remainder
        (f"bytes=-{HUGE}", 206, (0, 1024)),  # a suffix longer than the file: all of it
        ("bytes=00000000000000000000000010-19", 206, (10, 20)),  # leading zeros
        ("bytes=20-10", 200, (0, 1024)),  # last < first: not a range, ignored
    ],
)
def test_range_numbers_of_any_length(
    server: ServerThread, rng: str, status: int, span: tuple[int, int] | None
) -> None:
    data = bytes(range(256)) * 4
    st, h, body = request(server.url, "GET", f"/{REPO}/resolve/main/data.bin", {"Range": rng})
    assert st == status, rng
    if span is None:
        assert h["content-range"] == "bytes */1024"
    else:
        assert body == data[span[0] : span[1]]


@pytest.mark.parametrize("rng", ["bytes=-5", "bytes=0-", "bytes=0-0"])
def test_ranges_of_an_empty_file_are_unsatisfiable(server: ServerThread, rng: str) -> None:
    st, h, body = request(server.url, "GET", f"/{REPO}/resolve/main/empty.txt", {"Range": rng})
    assert (st, h["content-range"], body) == (416, "bytes */0", b"")
    st, h, body = request(server.url, "GET", f"/{REPO}/resolve/main/empty.txt")
    assert (st, h["content-length"], body) == (200, "0", b"")


def test_parse_range_never_builds_an_empty_span() -> None:
    assert parse_range("bytes=-1", 0) is False
    assert parse_range(f"bytes=-{HUGE}", 3) == (0, 3)


@pytest.mark.parametrize("raw", ["%0A", "%0D%0A", "%00", "%1B", "%7F"])
def test_control_characters_in_a_path_are_400_and_cannot_forge_a_log_line(
    server: ServerThread, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    forged = f'{raw}127.0.0.1%20"GET%20/forged%20HTTP/1.1"%20200'
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        st, h, _ = request(server.url, "GET", f"/{REPO}/resolve/main/data.bin{forged}")
        st2, _, _ = request(server.url, "HEAD", f"/api/models/{REPO}/revision/ma{raw}in")
        # The server logs after the client has its answer, so an earlier test's
        # request may be logged here too: only this test's two requests count.
        lines = _eventually(
            lambda: [
                m
                for r in caplog.records
                if r.name == "aiohttp.access"
                and ("/forged" in (m := r.getMessage()) or "revision/ma" in m)
            ],
            lambda got: len(got) >= 2,
        )
    assert (st, st2) == (400, 400)
    assert "control character" in h["x-error-message"]
    assert len(lines) == 2
    for line in lines:
        assert line.isprintable(), line  # one record, one line: nothing unescaped
        assert "\\x" in line or "\\n" in line or "\\r" in line


def _eventually(get: Callable[[], T], done: Callable[[T], bool]) -> T:
    for _ in range(200):
        got = get()
        if done(got):
            return got
        time.sleep(0.05)
    return got


def test_tokens_stay_out_of_reprs(tmp_path: Path) -> None:
    up = Upstream(["http://127.0.0.1:1"], tmp_path, token="hf_UpstreamSecret123")
    opts = ServeOptions(tokens=frozenset({"client-secret-456"}), upstream=up)
    for text in (repr(up), repr(opts), str(opts)):
        assert "UpstreamSecret" not in text and "client-secret" not in text


def _connect(url: str) -> socket.socket:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=20)


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_slow_request_head_is_cut_off(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    opts = ServeOptions(header_timeout=0.5)
    with ServerThread(Catalog.from_folder(tmp_path, REPO), options=opts) as srv:
        with _connect(srv.url) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
            # Closed by the server (recv returns b""), not left open until our own timeout.
            assert _read_all(s) == b""
        # A client that finishes its request in time is answered as usual.
        assert request(srv.url, "GET", f"/{REPO}/resolve/main/a.txt")[0] == 200


def test_connections_past_the_cap_get_503(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    opts = ServeOptions(max_connections=2)
    with ServerThread(Catalog.from_folder(tmp_path, REPO), options=opts) as srv:
        held = [_connect(srv.url) for _ in range(2)]
        try:
            for s in held:  # both accepted and answered, kept alive
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
            with _connect(srv.url) as extra:
                assert _read_all(extra).startswith(b"HTTP/1.1 503")
        finally:
            for s in held:
                s.close()
        # Once they are gone (the server notices at once or a moment later), new clients
        # are served again.
        st = _eventually(
            lambda: request(srv.url, "GET", f"/{REPO}/resolve/main/a.txt")[0], lambda s: s == 200
        )
        assert st == 200
