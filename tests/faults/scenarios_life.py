"""Lifecycle rows (19-21, 47): a kill at every step of a revision switch or
rollback, two containers sharing one cache volume (two PID namespaces, by
``unshare --pid --fork``), and a power cut (a file written, not synced, the
page cache dropped where the kernel allows it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from typing import Any

from caxton_models import _core
from tests.faults.harness import Ctx, fingerprint, scenario
from tests.faults.repo import (
    CHILD_ENSURE,
    COMMITS,
    MODELS,
    Fault,
    FaultProxy,
    hub,
    repo_dir,
    repo_sha256,
    write_config,
)

W = "onnx/model.onnx"
OTHER = "e" * 40  # a second revision of "tiny", installed beside the hub's

# A child that switches revisions and is killed right after the Nth rename
# (or exchange) of the switch: every intermediate state a crash can leave.
CHILD_SWITCH_KILL = """
import os, signal, sys
from caxton_models.store import ModelCache
from caxton_models.store import _revisions
op, step = sys.argv[1], int(sys.argv[2])
n = {"n": 0}
def counted(done):
    if done:
        n["n"] += 1
        if n["n"] == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return done
real_rename, real_exchange = os.rename, _revisions.exchange
def rename(a, b):
    real_rename(a, b)
    counted(True)
_revisions.os.rename = rename
_revisions.exchange = lambda a, b: counted(real_exchange(a, b))
cache = ModelCache(os.environ["CAXTON_CACHE_DIR"])
if op == "rollback":
    cache.rollback("tiny")
else:
    cache.switch("tiny", sys.argv[3])
print("finished without being killed")
"""


def _state(ctx: Ctx) -> dict[str, Any]:
    """What the next process finds (a fresh ModelCache recovers on open)."""
    from caxton_models.store import ModelCache

    cache = ModelCache(ctx.cache)
    cur = cache.get("tiny")
    return {
        "current": cur.metadata.commit if cur and cur.metadata else None,
        "status": cur.status if cur else None,
        "stored": [m.metadata.commit for m in cache.stored_revisions("tiny") if m.metadata],
    }


def _second_revision(ctx: Ctx) -> None:
    """Install OTHER beside the hub's commit (config.json differs, the weights
    are shared): the hub's becomes the previous revision."""
    from caxton_models.acquire._install import install_from_dir
    from caxton_models.store import ModelCache

    src = ctx.sandbox / "src-other"
    shutil.copytree(repo_dir("tiny"), src)
    (src / "config.json").write_text(json.dumps({"hidden_size": 8, "model_type": "bert", "v": 2}))
    install_from_dir(
        ModelCache(ctx.cache), "tiny", src, model_id=MODELS["tiny"][0], revision="main",
        commit=OTHER,
    )  # fmt: skip
    shutil.rmtree(src)


def _revision_prints(ctx: Ctx) -> dict[str, dict[str, tuple[int, str]]]:
    """Fingerprints of every revision of tiny, by commit."""
    out = {}
    folders = [ctx.cache / "tiny", *(ctx.cache / ".revisions" / "tiny").glob("[0-9a-f]*")]
    for d in folders:
        meta = json.loads((d / ".caxton_metadata").read_text())
        out[meta["commit"]] = fingerprint(d)
    return out


@scenario("revisions-kill-switch", rows=(20,))
def revisions_kill_switch(ctx: Ctx) -> None:
    """SIGKILL after each rename of a switch and of a rollback, with the
    atomic exchange and with the two-rename fallback: the next process finds
    a verified current revision, the other one stored beside it, no switch
    marker, and the bytes of both revisions unchanged."""
    write_config(ctx.work / "caxton.yaml")
    with FaultProxy(hub().url) as proxy:
        ctx.env["HF_ENDPOINT"] = proxy.url
        code, _, err = ctx.finish(ctx.child(CHILD_ENSURE, "tiny"))
        assert code == 0, err[-500:]
    _second_revision(ctx)
    before = _revision_prints(ctx)
    assert set(before) == {COMMITS["tiny"], OTHER}
    ctx.begin()
    # The test command's cheap run: the two-rename fallback (the one with
    # intermediate states) killed after each of its renames, in a rollback.
    modes = ("1",) if ctx.cheap else ("0", "1")
    ops = ("rollback",) if ctx.cheap else ("rollback", "switch")
    for exchange_off in modes:
        for op in ops:
            for step in (1, 2) if ctx.cheap else (1, 2, 3):
                with ctx.case(f"{op} step {step} NO_RENAME_EXCHANGE={exchange_off}"):
                    other = next(c for c in before if c != _state(ctx)["current"])
                    env = {"CAXTON_NO_RENAME_EXCHANGE": exchange_off}
                    code, out, err = ctx.finish(
                        ctx.child(CHILD_SWITCH_KILL, op, str(step), other, env=env)
                    )
                    assert code in (0, -signal.SIGKILL), (code, out, err[-500:])
                    after = _state(ctx)
                    assert after["status"] == "verified", after
                    assert {after["current"], *after["stored"]} == set(before), after
                    assert len(after["stored"]) == 1, after
                    marker = ctx.cache / ".revisions" / "tiny" / "switching.json"
                    assert not marker.exists()
                    assert _revision_prints(ctx) == before


# ------------------------------------------------------------------ shared volume

# The pids the two "containers" give their caxton process: in different PID
# namespaces, each number means nothing to the other.
PID_A, PID_B = 3_999_001, 3_999_101

CHILD_HOUSEKEEP = """
import json, os, sys, time
from pathlib import Path
from caxton_models.store import ModelCache
root = Path(os.environ["CAXTON_CACHE_DIR"])
downloads = root / "downloads"
deadline = time.monotonic() + 60
def downloading():
    return downloads.is_dir() and any(
        "@" in e and not e.endswith(".lock") for e in os.listdir(downloads)
    )
while not downloading() and time.monotonic() < deadline:
    time.sleep(0.02)  # wait until the other container is downloading
seen = sorted(os.listdir(downloads))
cache = ModelCache(root)
cache.recover()
reclaimed = cache.reclaim_temp(0)
print(json.dumps({"pid": os.getpid(), "seen": seen, "reclaimed": reclaimed,
                  "after": sorted(os.listdir(downloads))}))
"""

CHILD_ENSURE_PID = CHILD_ENSURE.replace(
    "name = sys.argv[1]", "name = sys.argv[1]\nprint(json.dumps({'pid': os.getpid()}), flush=True)"
)


def _container(pid: int) -> list[str] | None:
    """``unshare --pid --fork`` running the command as ``pid`` of its own PID
    namespace, or None where this sandbox refuses a PID namespace."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    argv = [exe, "--pid", "--fork", "--mount-proc", "--kill-child"]
    if subprocess.run([*argv, "true"], capture_output=True, check=False).returncode != 0:
        return None
    script = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid && "$@"'
    return [*argv, "sh", "-c", script, "sh"]


@scenario("shared-volume-containers", rows=(21,))
def shared_volume_containers(ctx: Ctx) -> None:
    """Two containers on one cache volume (two PID namespaces): while A
    downloads, B's recovery and temp reclaim leave A's live download alone
    (the old PID rule read A as dead in B's namespace); A's download then
    publishes verified bytes, and B's own ensure waits for it and reuses it."""
    wrap_a, wrap_b = _container(PID_A), _container(PID_B)
    if wrap_a is None or wrap_b is None:
        ctx.finding("unshare --pid --fork is refused here: the two-namespace case did not run")
        ctx.begin()
        return
    write_config(ctx.work / "caxton.yaml", "download: {retry_attempts: 2, retry_delay_ms: 20}\n")
    want = repo_sha256("tiny", W)
    ctx.begin()
    slow = [Fault(path=W, rate=600_000 if ctx.cheap else 300_000)]
    with FaultProxy(hub().url, slow) as proxy:
        ctx.env["HF_ENDPOINT"] = proxy.url
        a = ctx.child(CHILD_ENSURE_PID, "tiny", wrap=wrap_a)
        b = ctx.child(CHILD_HOUSEKEEP, wrap=wrap_b)
        code_b, out_b, err_b = ctx.finish(b)
        assert code_b == 0, err_b[-800:]
        hk = json.loads(out_b)
        assert hk["pid"] == PID_B, hk
        live = [e for e in hk["seen"] if "@" in e]  # its private folder and held lock
        assert live, f"A was not downloading when B looked: {hk}"
        assert hk["reclaimed"] == [], hk
        assert set(live) <= set(hk["after"]), f"B took A's live download: {hk}"
        code_a, out_a, err_a = ctx.finish(a)
        assert code_a == 0, err_a[-800:]
        lines = out_a.strip().splitlines()
        assert json.loads(lines[0])["pid"] == PID_A
        assert json.loads(lines[-1])["onnx"] == want
        # B's own ensure in its namespace finds A's verified copy: one fetch in all.
        code, out, err = ctx.finish(ctx.child(CHILD_ENSURE_PID, "tiny", wrap=wrap_b))
        assert code == 0, err[-800:]
        assert json.loads(out.strip().splitlines()[-1])["onnx"] == want
        assert proxy.seen("model.onnx", "GET")


# ------------------------------------------------------------------ power loss

CHILD_DROP_CACHES = """
import sys
try:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\\n")
except OSError as e:
    print(f"refused: {type(e).__name__}: {e.strerror}")
    sys.exit(3)
print("dropped")
"""


def _drop_caches(ctx: Ctx) -> bool:
    """Drop the clean page cache (dirty pages stay: the kernel writes them
    back first). Where this sandbox refuses, the scenario says so."""
    code, out, _ = ctx.finish(ctx.child(CHILD_DROP_CACHES))
    if code != 0:
        ctx.figures.notes.append(f"{ctx.name}: page cache not dropped ({out.strip()})")
    return code == 0


@scenario("power-loss", rows=(19, 47))
def power_loss(ctx: Ctx) -> None:
    """A power cut after the weights were written and recorded as fetched but
    before their blocks reached the disk leaves a file of the right size full
    of zeros. Written here without fsync, zeroed, with a record from an
    earlier boot (and one in the old format), page cache dropped where the
    kernel allows: the next download hashes it, fetches it again and
    publishes verified bytes, never the zeros. A download that completed
    reads back, from the disk, to its manifest."""
    from caxton_models.acquire._fetch import FETCHED

    write_config(ctx.work / "caxton.yaml", "download: {retry_attempts: 2, retry_delay_ms: 20}\n")
    ctx.begin()
    cases = [("tiny-b", "earlier-boot"), ("tiny-c", "old-format")]
    for name, record in cases[:1] if ctx.cheap else cases:
        with ctx.case(f"{name} {record}"):
            want = repo_sha256(name, W)
            work = ctx.cache / "downloads" / f"{name}@{COMMITS[name]}"
            (work / "onnx").mkdir(parents=True)
            with open(work / W, "wb") as f:  # written, never synced: then the cut
                f.write(bytes(os.path.getsize(repo_dir(name) / W)))
            files = {W: want}
            body = files if record == "old-format" else {"boot": "an-earlier-boot", "files": files}
            (work / FETCHED).write_text(json.dumps(body))
            _drop_caches(ctx)
            with FaultProxy(hub().url) as proxy:
                ctx.env["HF_ENDPOINT"] = proxy.url
                code, out, err = ctx.finish(ctx.child(CHILD_ENSURE, name))
                assert code == 0, err[-800:]
                assert json.loads(out)["onnx"] == want
                assert proxy.seen("model.onnx", "GET"), "the zeroed file was not fetched again"
    # What the core published was synced: after dropping the cache, the
    # bytes read from the disk still hash to the manifest (the harness's I1).
    _drop_caches(ctx)
    digest = _core.sha256_file(ctx.cache / "tiny-b" / W)
    assert digest == repo_sha256("tiny-b", W)
