"""Ray clusters for tests and benches that stay on loopback, and the check
that they did.

Ray on Linux ignores ``--node-ip-address=127.0.0.1`` / ``_node_ip_address``:
``resolve_ip_for_localhost`` swaps a loopback address for the machine's own
(Ray 2.60: the GCS, raylet and workers then listen on ``::`` and announce
the host's address). Two ways out, one per kind of cluster:

- one node in this process (``ray.init``): ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
  the switch Ray reads once, when ``ray`` is imported, keeps it on loopback
  (every listener on 127.0.0.1); ``tests/conftest.py`` sets it first thing;
- several nodes (``ray start``): that switch refuses a second node, so the
  test runs in a network namespace of its own whose only interface is
  loopback (``unshare --net``, as root): Ray finds no other address and
  nothing can be bound or reached beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
_NETNS_MARK = "CAXTON_TEST_LOOPBACK_NETNS"


def in_loopback_netns() -> bool:
    return os.environ.get(_NETNS_MARK) == "1"


def rerun_in_loopback_netns(nodeid: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Runs one test again in a new network namespace with only ``lo`` up.
    Needs root (or user namespaces) and ``unshare`` and ``ip`` (util-linux,
    iproute2); without them the test cannot keep Ray on loopback and fails."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    assert not missing, f"{missing} not found: install util-linux and iproute2"
    env = {k: v for k, v in os.environ.items() if k not in LOOPBACK_ENV}
    env[_NETNS_MARK] = "1"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"  # a second node is allowed in there
    script = 'ip link set lo up && exec "$0" "$@"'
    pytest_args = ["-q", "-p", "no:cacheprovider", "--timeout", str(int(timeout))]
    cmd = ["unshare", "--net", "--", "sh", "-c", script, sys.executable, "-m", "pytest", nodeid]
    cmd += pytest_args
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=root, timeout=timeout + 60
    )


def ours(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (our cluster's own folder):
    Ray's workers run in sessions of their own, outside the nodes' groups."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker.encode() in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def end_leftovers(marker: str, grace: float = 15.0) -> None:
    deadline = time.monotonic() + grace
    while (pids := ours(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)  # workers notice their raylet is gone and exit by themselves
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _listening_inodes() -> dict[int, str]:
    """Socket inode -> local address of every TCP listener on this machine."""
    found: dict[int, str] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] != "0A":  # LISTEN
                    continue
                hexaddr = f[1].split(":")[0]
                raw = bytes.fromhex(hexaddr)
                if v6:
                    # /proc prints each 32-bit word in host (little-endian) order.
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    addr = (
                        "127.0.0.1"
                        if raw[:12] == b"\0" * 10 + b"\xff\xff" and raw[12] == 127
                        else ("::1" if raw == b"\0" * 15 + b"\1" else raw.hex())
                    )
                else:
                    addr = ".".join(str(b) for b in raw[::-1])
                found[int(f[9])] = addr
    return found


def listeners(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every TCP socket these processes listen on."""
    inodes = _listening_inodes()
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                    if m and int(m.group(1)) in inodes:
                        out.append((pid, inodes[int(m.group(1))]))
    return out


def assert_loopback_only(ray: Any, marker: str) -> None:
    """Every node Ray reports, every ``--node-ip-address`` its processes were
    started with, and every socket they listen on is loopback."""
    nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
    assert nodes and all(a == "127.0.0.1" for a in nodes), f"ray.nodes() report {nodes}"
    pids = ours(marker)
    for pid in pids:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for ip in re.findall(r"--node[-_]ip[-_]address[= ](\S+)", cmd):
                assert ip == "127.0.0.1", f"pid {pid} runs with --node-ip-address {ip}: {cmd}"
    bound = listeners([*pids, os.getpid()])
    loopback = {"127.0.0.1", "::1"}
    assert pids and all(a in loopback for _, a in bound), f"listeners off loopback: {bound}"
