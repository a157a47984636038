"""Resume after kill -9, Ctrl-C, and two processes downloading one file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from caxton_models import _core
from tests.support.download import MIB, blob, leftovers, sha
from tests.support.faultserver import Faults, FaultServer

CHILD = """
import signal, sys
# A child of a background job starts with SIGINT ignored, and Python then
# installs no KeyboardInterrupt handler: restore it, Ctrl-C is the point here.
signal.signal(signal.SIGINT, signal.default_int_handler)
from caxton_models import _core
url, dest, digest, chunk, report, conns = sys.argv[1:7]
done = 0
def progress(n):
    global done
    done += n
    with open(report, "w") as f:
        f.write(str(done))
r = _core.download(url, dest, sha256=digest, chunk_size=int(chunk), progress=progress,
                   connections=int(conns) or None)
print(r.fetched, r.resumed_bytes, flush=True)
"""


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def start_child(
    url: str,
    dest: Path,
    digest: str,
    chunk: int,
    report: Path,
    conns: int = 0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(dest), digest, str(chunk), str(report), str(conns)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_progress(report: Path, at_least: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            n = int(report.read_text() or 0)
        except (FileNotFoundError, ValueError):
            n = 0
        if n >= at_least:
            return n
        time.sleep(0.02)
    raise AssertionError("child made no progress")


@pytest.mark.parametrize("conns", [1, 4])
@pytest.mark.parametrize("seed", range(3))
def test_kill9_then_resume_fetches_only_the_rest(
    srv: FaultServer, tmp_path: Path, conns: int, seed: int
) -> None:
    data = blob(24 * MIB, seed=seed)
    chunk = MIB
    url = srv.add("/f", data, Faults(slow_bps=12 * MIB))
    dest = tmp_path / "f"
    report = tmp_path / "progress"
    kill_at = random.Random(seed).randrange(2 * MIB, len(data) - 4 * MIB)
    proc = start_child(url, dest, sha(data), chunk, report, conns)
    reported = wait_for_progress(report, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not dest.exists()
    srv.faults("/f").slow_bps = None
    r = _core.download(url, dest, sha256=sha(data), chunk_size=chunk)
    assert dest.read_bytes() == data
    # At least what the child reported as written survives, minus what was
    # written after the last checkpoint (less than one range).
    assert r.resumed_bytes >= reported - chunk
    assert r.fetched <= len(data) - reported + chunk
    assert r.fetched + r.resumed_bytes == len(data)
    assert leftovers(tmp_path) == []


def test_corrupted_resume_bytes_are_refetched(srv: FaultServer, tmp_path: Path) -> None:
    """A power cut may leave zeros where the state claims data: checked, re-fetched."""
    data = blob(12 * MIB)
    url = srv.add("/f", data, Faults(slow_bps=8 * MIB))
    dest = tmp_path / "f"
    report = tmp_path / "progress"
    proc = start_child(url, dest, sha(data), MIB, report, 1)
    wait_for_progress(report, 6 * MIB, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (part,) = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    with open(part, "r+b") as f:
        f.seek(MIB + 10)
        f.write(bytes(4096))
    srv.faults("/f").slow_bps = None
    r = _core.download(url, dest, sha256=sha(data), chunk_size=MIB)
    assert dest.read_bytes() == data
    assert r.resumed_bytes >= 4 * MIB  # the untouched ranges were kept
    assert r.resumed_bytes <= len(data) - MIB  # the damaged one was not


def test_ctrl_c_leaves_resumable_state(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(16 * MIB)
    url = srv.add("/f", data, Faults(slow_bps=2 * MIB))
    dest = tmp_path / "f"
    report = tmp_path / "progress"
    # Two connections at 2 MiB/s each: ~4 s in all, so the interrupt lands
    # well before the end.
    proc = start_child(url, dest, sha(data), MIB, report, 2)
    wait_for_progress(report, 2 * MIB, proc)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert any(n.endswith(".part.state") for n in leftovers(tmp_path))
    srv.faults("/f").slow_bps = None
    r = _core.download(url, dest, sha256=sha(data), chunk_size=MIB)
    assert r.resumed_bytes >= MIB
    assert dest.read_bytes() == data


@pytest.mark.parametrize("lock", [True, False])
def test_two_processes_one_file(srv: FaultServer, tmp_path: Path, lock: bool) -> None:
    data = blob(16 * MIB)
    url = srv.add("/f", data, Faults(slow_bps=32 * MIB))
    dest = tmp_path / "f"
    env = dict(os.environ)
    if not lock:
        # Test-only switch: behave as on a filesystem where flock is a no-op.
        env["CAXTON_NO_LOCKS"] = "1"
    procs = []
    for i in range(2):
        report = tmp_path / f"progress{i}"
        procs.append(start_child(url, dest, sha(data), MIB, report, env=env))
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert dest.read_bytes() == data
    assert leftovers(tmp_path) == []
    # With the lock the second process reuses the first one's file.
    if lock:
        # The second process waited, then found the verified file.
        assert srv.bytes_sent("/f") <= len(data) + MIB
    else:
        assert srv.bytes_sent("/f") <= 2 * len(data) + 2 * MIB
