"""The ``caxton`` command line as a user runs it: one subprocess per command,
and ``caxton model serve`` on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

CLI = [sys.executable, "-m", "caxton_models"]
SENTINEL_TOKEN = "hf_SENTINELsentinelSENTINEL0123456789"


def caxton(
    *args: str, cache: Path | None = None, env: dict[str, str] | None = None, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    cmd = list(CLI)
    if cache is not None:
        cmd += ["--cache-dir", str(cache)]
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=full_env, timeout=300, check=False
    )
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@contextlib.contextmanager
def cli_serve(cache: Path | None, errlog: Path, *args: str) -> Iterator[str]:
    """``caxton -v model serve [--cache CACHE] ARGS`` in a subprocess on a free
    port; yields its URL."""
    where = ["--cache", str(cache)] if cache is not None else []
    with (
        errlog.open("w") as err,
        subprocess.Popen(
            [*CLI, "-v", "model", "serve", *where, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            m = re.search(r"at (https?://127\.0\.0\.1:\d+)", line)
            assert m, f"no URL in {line!r}; stderr: {errlog.read_text()}"
            yield m.group(1)
        finally:
            proc.terminate()
            proc.wait(30)
