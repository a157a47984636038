"""Liveness is a lock held by the living, never a PID: a cache shared by
containers (one volume, several PID namespaces) must not take a live
process's downloads, staging folders or leases for a dead one's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from caxton_models.store import CacheLimits, ModelCache
from caxton_models.store._fs import held, remove_if_dead, write_json_atomic
from caxton_models.store._recovery import remove_dead_temps
from tests.support.cache import install

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
