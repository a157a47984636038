"""Process rows (18-22, 24, 27): SIGKILL at byte offsets, eight processes at
once (with and without locks), disk full (RLIMIT_FSIZE in a child), a
read-only cache (a child running as an unprivileged user)."""

from __future__ import annotations

import json
import os
import random
import signal
import time

from caxton_models import _core
from tests.faults.harness import Ctx, scenario
from tests.faults.repo import CHILD_ENSURE, Fault, FaultProxy, hub, repo_sha256, write_config

W = "onnx/model.onnx"
SIZE = os.path.getsize  # placeholder to keep the import list honest

# The child kills itself at an exact point: when the weights' bytes reach
# KILL_AT (the server stalls right there, so progress lands on the offset), or
# inside the publish step (after the rename, or mid registry.json rewrite).
CHILD_KILL = """
import os, signal, sys
from caxton_models.config import load_config
from caxton_models.acquire.manager import ModelManager
import caxton_models.store._cache_revisions as cache_mod
import caxton_models.store._fs as fs_mod
where, offset, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "after-rename":
    cache_mod.fsync_dir = die  # called right after the staging dir is renamed in
elif where == "registry":
    real_replace = os.replace
    def replace(src, dst, *a, **k):
        if str(dst).endswith("registry.json"):
            die()
        return real_replace(src, dst, *a, **k)
    fs_mod.os.replace = replace
done = 0
def progress(n):
    global done
    done += n
    if where == "bytes" and done >= small + offset:
        die()
ModelManager(load_config(), functional=False).download("tiny", progress=progress)
print("finished without being killed")
"""


def _small_bytes() -> int:
    from tests.faults.repo import repo_dir

    root = repo_dir("tiny")
    rels = ["config.json", "tokenizer.json", "tokenizer_config.json", "modules.json"]
    return sum(os.path.getsize(root / r) for r in [*rels, "1_Pooling/config.json"])


@scenario("kill-sweep", rows=(19, 20, 47), heavy=True)
def kill_sweep(ctx: Ctx) -> None:
    """SIGKILL at 0, 1, mid, size-1 bytes of the weights, right after the
    publish rename, and during the registry.json rewrite; then a fresh process
    reruns. Nothing half-done is ever taken as complete; temps are reclaimed."""
    write_config(ctx.work / "caxton.yaml", "download: {retry_attempts: 2, retry_delay_ms: 20}\n")
    size = os.path.getsize(_repo_weights())
    points: list[tuple[str, int]] = [
        ("bytes", 0), ("bytes", 1), ("bytes", size // 2), ("bytes", size - 1),
        ("after-rename", 0), ("registry", 0),
    ]  # fmt: skip
    if not ctx.cheap:
        rnd = random.Random()
        points += [("bytes", rnd.randrange(1, size)) for _ in range(4)]
    small = _small_bytes()
    want = repo_sha256("tiny", W)
    ctx.begin()
    for where, offset in points:
        with ctx.case(f"{where}@{offset}"):
            stall = [Fault(path=W, stall_after=offset, stall_seconds=20, times=1)]
            with FaultProxy(hub().url, stall if where == "bytes" else []) as proxy:
                ctx.env["HF_ENDPOINT"] = proxy.url
                code, out, err = ctx.finish(ctx.child(CHILD_KILL, where, str(offset), str(small)))
                assert code == -signal.SIGKILL, (code, out, err[-500:])
            if where == "bytes":  # killed before publishing: nothing is installed
                assert not (ctx.cache / "tiny").exists()
            with FaultProxy(hub().url) as proxy:
                ctx.env["HF_ENDPOINT"] = proxy.url
                code, out, err = ctx.finish(ctx.child(CHILD_ENSURE, "tiny"))
                assert code == 0, err[-800:]
                assert json.loads(out)["onnx"] == want
                if where != "bytes":  # it was published: the rerun fetches nothing
                    assert not proxy.seen("/resolve/", "GET"), where
            _registry_tmp_finding(ctx)
            _remove(ctx)


def _registry_tmp_finding(ctx: Ctx) -> None:
    """A kill between writing registry.json's temp and renaming it leaves
    ``.registry.json.tmp.<pid>.<hex>`` behind; the next process's recovery
    (store/_recovery.py remove_dead_temps) must have removed it."""
    left = [n for n in os.listdir(ctx.cache) if n.startswith(".registry.json.tmp.")]
    assert not left, f"a dead writer's registry.json temp survived the rerun: {left}"


def _repo_weights() -> str:
    from tests.faults.repo import repo_dir

    return str(repo_dir("tiny") / W)


def _remove(ctx: Ctx) -> None:
    from caxton_models.store import ModelCache

    ModelCache(ctx.cache).remove("tiny", force=True)


CHILD_RACE = """
import json, os, sys, time
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.005)
from caxton_models.config import load_config
from caxton_models.acquire.manager import ModelManager
from caxton_models import _core
path, _ = ModelManager(load_config(), functional=False).ensure(sys.argv[1])
print(json.dumps({"path": str(path), "onnx": _core.sha256_file(path / "onnx" / "model.onnx")}))
"""


@scenario("eight-processes", rows=(21, 22), heavy=True)
def eight_processes(ctx: Ctx) -> None:
    """8 processes load one uncached model at once: identical verified bytes;
    one download of the weights with locks, at most 8 without."""
    write_config(ctx.work / "caxton.yaml")
    want = repo_sha256("tiny", W)
    size = os.path.getsize(_repo_weights())
    ctx.begin()
    for no_locks in ("0", "1"):
        with ctx.case(f"CAXTON_NO_LOCKS={no_locks}"):
            # Slow weights, so all eight are really at it together.
            slow = [Fault(path=W, rate=3_000_000)]
            with FaultProxy(hub().url, slow) as proxy:
                go = ctx.out / f"go{no_locks}"  # out/: the barrier is no stray write
                env = {"HF_ENDPOINT": proxy.url, "CAXTON_NO_LOCKS": no_locks}
                procs = [ctx.child(CHILD_RACE, "tiny", str(go), env=env) for _ in range(8)]
                time.sleep(0.3 if ctx.cheap else 1.0)
                go.write_text("go")
                results = [ctx.finish(p) for p in procs]
                go.unlink()
                for code, _, err in results:
                    assert code == 0, err[-800:]
                outs = [json.loads(out) for _, out, _ in results]
                assert {o["onnx"] for o in outs} == {want}
                assert {o["path"] for o in outs} == {str(ctx.cache / "tiny")}
                fetched = _bytes_fetched(proxy, size)
                if no_locks == "0":
                    assert fetched == size, f"{fetched} bytes fetched for one {size}-byte file"
                else:
                    assert fetched <= 8 * size
            _remove(ctx)


def _bytes_fetched(proxy: FaultProxy, size: int) -> int:
    total = 0
    for r in proxy.seen("model.onnx", "GET"):
        rng = r.headers.get("range", "")
        if rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            total += min(int(b) if b else size - 1, size - 1) - int(a) + 1
        else:
            total += size
    return total


CHILD_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from caxton_models.config import load_config
from caxton_models.acquire.manager import ModelManager
from caxton_models.errors import CaxtonError
try:
    ModelManager(load_config(), functional=False).ensure(sys.argv[1])
except CaxtonError as e:
    print(type(e).__name__, e)
    sys.exit(9)
print("installed")
"""


@scenario("disk-full", rows=(18,))
def disk_full(ctx: Ctx) -> None:
    """Writes fail with EFBIG mid-download (RLIMIT_FSIZE in a child): a typed
    disk error, nothing published, the installed model untouched; a rerun
    without the limit resumes and installs."""
    write_config(ctx.work / "caxton.yaml", "download: {retry_attempts: 1, retry_delay_ms: 20}\n")
    want = repo_sha256("tiny", W)
    ctx.begin()
    with FaultProxy(hub().url) as proxy:
        ctx.env["HF_ENDPOINT"] = proxy.url
        code, out, err = ctx.finish(ctx.child(CHILD_ENSURE, "tiny-b"))
        assert code == 0, err[-500:]
        ctx.protect("tiny-b")
        for limit in (0, 700_000) if ctx.cheap else (0, 4096, 700_000, 1_400_000):
            with ctx.case(f"limit {limit}"):
                code, out, err = ctx.finish(ctx.child(CHILD_LIMITED, "tiny", str(limit)))
                assert code == 9, (code, out, err[-800:])
                assert out.startswith("InsufficientDiskSpace"), out
                assert "tiny" in out or "model.onnx" in out or "downloads" in out, out
                assert not (ctx.cache / "tiny").exists()
        code, out, err = ctx.finish(ctx.child(CHILD_ENSURE, "tiny"))
        assert code == 0, err[-500:]
        assert json.loads(out)["onnx"] == want


CHILD_READ_ONLY = """
import sys
from caxton_models.config import load_config
from caxton_models.acquire.manager import ModelManager
from caxton_models.errors import CaxtonError
mgr = ModelManager(load_config(), functional=False)
path, _ = mgr.ensure("tiny")  # installed: loads from a read-only cache
print("loaded", path)
try:
    mgr.ensure("tiny-b")
except CaxtonError as e:
    print(type(e).__name__, e)
    sys.exit(9)
except OSError as e:
    print("untyped", type(e).__name__, e)
    sys.exit(8)
"""
# A read-only bind mount of the cache in a private mount namespace (root
# ignores file modes, so chmod alone would prove nothing here).
RO_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


@scenario("read-only-cache", rows=(24,))
def read_only_cache(ctx: Ctx) -> None:
    """A read-only cache: installed models load (the LRU touch is best
    effort); a download is PermissionDenied naming the cache; no partial dirs."""
    write_config(ctx.work / "caxton.yaml")
    with FaultProxy(hub().url) as proxy:
        ctx.env["HF_ENDPOINT"] = proxy.url
        code, _, err = ctx.finish(ctx.child(CHILD_ENSURE, "tiny"))
        assert code == 0, err[-500:]
        ctx.protect("tiny")
        before = sorted(os.listdir(ctx.cache))
        ctx.begin()
        wrap = ["unshare", "-m", "sh", "-c", RO_MOUNT, str(ctx.cache)]
        code, out, err = ctx.finish(ctx.child(CHILD_READ_ONLY, wrap=wrap))
        assert code == 9, (code, out, err[-800:])  # 8: an untyped OSError escaped
        assert "PermissionDenied" in out and str(ctx.cache) in out, out
        assert "loaded" in out, out
        assert sorted(os.listdir(ctx.cache)) == before
        assert not proxy.seen("tiny-b/resolve/")


del SIZE
_ = _core
