"""Headers a Hub endpoint sends that are not what they claim: a typed error
naming the endpoint, never a bare ValueError."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from caxton_models.acquire.hub import HubClient
from caxton_models.errors import ServerError

COMMIT = "c" * 40


def _serve(size: bytes) -> tuple[str, threading.Thread, socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def run() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nX-Repo-Commit: " + COMMIT.encode() + b"\r\n"
                    b'ETag: "abc"\r\nX-Linked-Size: ' + size + b"\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", t, sock


def _stop(sock: socket.socket, t: threading.Thread) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
    sock.close()
    t.join(5)


@pytest.fixture(params=["²".encode(), "²".encode("latin-1"), "٣".encode(), b"12x"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    url, t, sock = _serve(request.param)
    yield url
    _stop(sock, t)


def test_a_size_header_that_is_not_ascii_digits_is_a_server_error(server: str) -> None:
    with pytest.raises(ServerError, match=r"size header .* not a number of bytes"):
        HubClient([server], retries=1).file_metadata("org/m", "main", "config.json")


def test_a_plain_size_header_is_read() -> None:
    url, t, sock = _serve(b"1234")
    try:
        meta = HubClient([url], retries=1).file_metadata("org/m", "main", "config.json")
    finally:
        _stop(sock, t)
    assert (meta.commit, meta.size) == (COMMIT, 1234)
