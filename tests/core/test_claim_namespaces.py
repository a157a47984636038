"""The core's claim of leftover ``.part`` files asks whether their writer is
alive by its lock, not its PID: a download running in another PID namespace
on the same volume (another container) is never taken over or removed, even
where the ``<dest>.lock`` does nothing (``CAXTON_NO_LOCKS=1``, as on NFS)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caxton_models import _core
from tests.support.faultserver import Faults, FaultServer

DATA = bytes(range(256)) * 8192  # 2 MiB
FOREIGN_PID = 3_999_501  # the child's pid in its namespace; none here (above pid_max)

CHILD = """
import json, sys
from caxton_models import _core
r = _core.download(sys.argv[1], sys.argv[2], size=int(sys.argv[3]), connections=1,
                   chunk_size=1 << 30, retries=2, retry_delay=0.05)
print(json.dumps({"sha256": r.sha256}))
"""


def _container() -> list[str]:
    exe = shutil.which("unshare")
    argv = [exe or "unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if exe is None or subprocess.run([*argv, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --pid --fork is not permitted here (needs root or userns)")
    script = f'echo {FOREIGN_PID - 1} > /proc/sys/kernel/ns_last_pid && "$@"'
    return [*argv, "sh", "-c", script, "sh"]


def test_a_live_part_in_another_pid_namespace_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrap = _container()
    monkeypatch.setenv("CAXTON_NO_LOCKS", "1")
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with FaultServer() as srv:
        srv.add("/slow", DATA, Faults(slow_bps=300_000))
        srv.add("/fast", DATA)
        argv = [*wrap, sys.executable, "-c", CHILD, srv.url("/slow"), str(dest), str(len(DATA))]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              text=True) as child:  # fmt: skip
            deadline = time.monotonic() + 60
            parts: list[str] = []
            while not parts and time.monotonic() < deadline and child.poll() is None:
                parts = [p.name for p in dest.parent.iterdir() if p.name.endswith(".part")]
                time.sleep(0.02)
            assert parts and parts[0].startswith(f"f.bin.{FOREIGN_PID}-"), parts
            assert not os.path.exists(f"/proc/{FOREIGN_PID}")  # dead, by the PID rule
            # Our download of the same file (another URL: its state cannot be reused).
            r = _core.download(srv.url("/fast"), dest, size=len(DATA))
            assert r.sha256 == hashlib.sha256(DATA).hexdigest()
            assert (dest.parent / parts[0]).exists(), "the live .part was taken or removed"
            out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-800:]
    assert json.loads(out)["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert dest.read_bytes() == DATA
