"""Starting the servers the benches talk to, on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator


def free_port() -> int:
    # nginx cannot listen on port 0; take a free one from the kernel.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within 30 s")


def serve_cmd(args: list[str], port: int) -> list[str]:
    return [sys.executable, "-m", "caxton_models", "model", "serve", *args, "--port", str(port)]


@contextlib.contextmanager
def running(cmd: list[str], port: int, what: str) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` as a child listening on ``port``: yielded once it listens, stopped after."""
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            wait_listening(port, proc, what)
            yield proc
        finally:
            proc.terminate()
            proc.wait(30)


@contextlib.contextmanager
def caxton_serve(args: list[str]) -> Iterator[str]:
    """``caxton model serve ARGS`` on a free port of 127.0.0.1: its base URL."""
    port = free_port()
    with running(serve_cmd(args, port), port, f"caxton model serve {args[0]}"):
        yield f"http://127.0.0.1:{port}"
