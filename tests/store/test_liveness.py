"""Liveness is a lock held by the living, never a PID: a cache shared by
containers (one volume, several PID namespaces) must not take a live
process's downloads, staging folders or leases for a dead one's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from caxton_models import _core
from caxton_models.errors import NetworkTimeout
from caxton_models.store import CacheLimits, ModelCache
from caxton_models.store._fs import held, remove_if_dead, write_json_atomic
from caxton_models.store._recovery import remove_dead_temps
from tests.support.cache import install
from tests.support.download import MIB, blob, leftovers, sha
from tests.support.faultserver import Faults, FaultServer

COMMIT = "a" * 40
# A pid this kernel never hands out here (above pid_max) but a container's
# own PID namespace may: the old rule read every such owner as dead.
FOREIGN_PID = 3_999_991

CHILD = r"""
import json, os, sys
from pathlib import Path
if sys.argv[2] == "foreign-pid":
    os.getpid = lambda: FOREIGN_PID  # numbered as in another container's namespace
from caxton_models.store import ModelCache
cache = ModelCache(Path(sys.argv[1]))
staging = cache.new_staging("m")
(staging / "half").write_bytes(b"x")
# Its private download folder (downloads/<name>@<commit>.<owner>.<hex>).
private = staging.with_name(staging.name.replace("m.staging.", "m@" + COMMIT + ".", 1))
private.mkdir()
(private / "model.onnx.123-00000001.part").write_bytes(b"y" * 10)
cache.acquire("m")
print(json.dumps({"pid": os.getpid(), "staging": staging.name, "private": private.name}),
      flush=True)
if sys.stdin.readline().strip() == "die":
    os.kill(os.getpid(), 9)  # no cleanup: only the kernel releases its locks
""".replace("FOREIGN_PID", str(FOREIGN_PID)).replace("COMMIT", repr(COMMIT))


def _unshare_argv() -> list[str] | None:
    """``unshare --pid --fork`` with the child numbered FOREIGN_PID inside, or
    None where this system does not allow a PID namespace."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    probe = subprocess.run(
        [exe, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return None
    script = f'echo {FOREIGN_PID - 1} > /proc/sys/kernel/ns_last_pid; "$@"'
    return [exe, "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script, "sh"]


@pytest.mark.parametrize("where", ["pid-namespace", "foreign-pid"])
def test_another_containers_live_work_is_kept_until_it_dies(tmp_path: Path, where: str) -> None:
    root = tmp_path / "c"
    cache = ModelCache(root)
    install(cache, tmp_path, "m")
    prefix: list[str] = []
    if where == "pid-namespace":
        argv = _unshare_argv()
        if argv is None:
            pytest.skip("unshare --pid --fork is not permitted here (needs root or userns)")
        prefix = argv
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [*prefix, sys.executable, "-c", CHILD, str(root), where],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    ) as child:  # fmt: skip
        try:
            assert child.stdout is not None and child.stdin is not None
            info = json.loads(child.stdout.readline())
            assert info["pid"] == FOREIGN_PID and not os.path.exists(f"/proc/{FOREIGN_PID}")
            downloads = root / "downloads"
            other = ModelCache(root)  # this container's next process
            other.recover()
            assert other.reclaim_temp(0) == []
            assert (downloads / info["staging"] / "half").exists()
            assert (downloads / info["private"]).exists()
            assert "m" in other.users()
            assert other.cleanup_unused(0, CacheLimits()) == []  # in use over there: not removed
            child.stdin.write("die\n")
            child.stdin.flush()
            child.wait(60)
        finally:
            if child.poll() is None:
                child.kill()
    # Dead now, in whatever namespace: its leftovers are reclaimed, its lease ignored.
    later = ModelCache(root)
    later.recover()
    assert not (downloads / info["staging"]).exists()
    assert not (downloads / info["private"]).exists()
    assert (downloads / f"m@{COMMIT}").is_dir()  # handed back for the next download to resume
    assert "m" not in later.users()
    later.reclaim_temp(3600)
    assert os.listdir(root / ".inuse") == []
    assert os.listdir(root / ".live") == [next(iter(os.listdir(root / ".live")))]  # ours only


def test_a_json_temp_is_kept_while_its_writer_holds_it(tmp_path: Path) -> None:
    target = tmp_path / "registry.json"
    seen: list[bool | None] = []
    real_replace = os.replace

    def replace(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        seen.append(held(Path(a)))
        assert not remove_if_dead(Path(a))  # the writer holds its lock
        assert remove_dead_temps(tmp_path) == []
        real_replace(a, b)

    os.replace = replace  # type: ignore[assignment]
    try:
        write_json_atomic(target, {"a": 1})
    finally:
        os.replace = real_replace
    assert seen == [True] and json.loads(target.read_text()) == {"a": 1}
    dead = tmp_path / ".registry.json.tmp.1.0000abcd"
    dead.write_text("{")
    assert held(dead) is False
    assert remove_dead_temps(tmp_path) == [dead.name]


# ------------------------------------------------ one rule for the core and the store

DATA = blob(8 * MIB)


def _the_part(folder: Path, running: threading.Thread | None = None) -> Path:
    """The one ``.part`` in ``folder``, waiting for the core to create it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = [p for p in folder.iterdir() if p.name.endswith(".part")]
        if parts:
            (part,) = parts
            return part
        assert running is None or running.is_alive(), "the download ended without a .part"
        time.sleep(0.01)
    raise AssertionError("no .part appeared")


def _download_cut_short(url: str, dest: Path, seen: list[bool | None]) -> None:
    """A download the time limit ends (its ``.part`` kept for a resume); while it
    runs, ``seen`` gets what the store says of the ``.part`` it writes."""
    result: list[BaseException] = []

    def run() -> None:
        try:
            _core.download(url, dest, sha256=sha(DATA), connections=1, chunk_size=MIB,
                           time_limit=2.0)  # fmt: skip
        except NetworkTimeout as e:
            result.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        part = _the_part(dest.parent, t)
        seen.append(held(part))
        seen.append(not remove_if_dead(part) and part.exists())
    finally:
        t.join(60)
    assert result, "the time limit did not end the download"


def test_a_part_the_core_writes_is_alive_to_the_store(tmp_path: Path) -> None:
    """The core holds a shared lock on the ``.part`` it writes: the store's test
    (once a shared lock of its own, which a shared holder never refuses) must
    see it, and its own removal under lock must leave it alone."""
    dest = tmp_path / "f"
    seen: list[bool | None] = []
    with FaultServer() as srv:
        url = srv.add("/f", DATA, Faults(slow_bps=MIB))
        _download_cut_short(url, dest, seen)
    assert seen == [True, True]
    part = _the_part(tmp_path)
    assert held(part) is False  # its writer stopped: nobody holds it now


HOLDER = r"""
import os, sys
from caxton_models.store._fs import try_lock
fd = os.open(sys.argv[1], os.O_RDWR)
assert try_lock(fd) is True
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_file_the_store_holds_is_alive_to_the_core(tmp_path: Path) -> None:
    """A leftover ``.part`` locked by another process the way the store holds its
    files (an exclusive ``try_lock``) is neither claimed nor removed by the core's
    next download of that file; once the holder is gone, it is resumed."""
    dest = tmp_path / "f"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with FaultServer() as srv:
        url = srv.add("/f", DATA, Faults(slow_bps=MIB))
        _download_cut_short(url, dest, [])
        part = _the_part(tmp_path)
        state = part.with_name(part.name + ".state")
        assert state.exists() and _core.lock_held(part) is False
        srv.faults("/f").slow_bps = None
        with subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(part)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        ) as holder:  # fmt: skip
            try:
                assert holder.stdout is not None and holder.stdin is not None
                assert holder.stdout.readline().strip() == "held"
                assert _core.lock_held(part) is True
                r = _core.download(url, dest, sha256=sha(DATA))
                assert r.resumed_bytes == 0, "the held .part was claimed"
                assert part.exists() and state.exists(), "the held .part was removed"
                holder.stdin.write("exit\n")
                holder.stdin.flush()
                holder.wait(60)
            finally:
                if holder.poll() is None:
                    holder.kill()
        assert _core.lock_held(part) is False
        dest.unlink()
        r = _core.download(url, dest, sha256=sha(DATA))
    assert r.resumed_bytes > 0, "the dead holder's .part was not resumed"
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == []


def test_only_a_whole_temp_name_is_a_dead_writers_temp(tmp_path: Path) -> None:
    """``remove_dead_temps`` matches the whole name: with ``re.match`` its pattern's
    ``$`` also took a name that only ends in a temp's name plus a newline."""
    other = 1 if os.getpid() != 1 else 2  # not this process, not a live writer
    temp = f".registry.json.tmp.{other}.0123abcd"
    (tmp_path / temp).write_text("{")
    (tmp_path / (temp + "\n")).write_text("not ours")
    assert remove_dead_temps(tmp_path) == [temp]
    assert os.listdir(tmp_path) == [temp + "\n"]
