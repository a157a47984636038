"""ModelManager end to end: the spec's 7 steps against `caxton model serve` on 127.0.0.1,
with the real all-MiniLM-L6-v2 files, through a recording/fault-injecting proxy.

Every request the library makes goes through the proxy, so "no network call" is
checked by counting what the proxy saw.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from caxton_models import _core, metrics
from caxton_models._bundled import bundled_dir
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import load_config
from caxton_models.errors import (
    InsufficientDiskSpace,
    ModelNotFound,
    OfflineError,
)
from caxton_models.ops.server import Catalog, ServerThread
from caxton_models.store import METADATA_FILE, ModelCache
from tests.support.hubfaults import (
    MINILM_COMMIT,
    Fault,
    FaultProxy,
    folder_catalog,
    minilm_catalog,
    minilm_sha256s,
    requested_bytes,
)
from tests.support.metrics import DOWNLOADS, total

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINI = "all-MiniLM-L6-v2"
EXTRA = [f"caxton-test/mini-{i}" for i in range(3)]
EXTRA_COMMITS = [f"{i + 1}" * 40 for i in range(3)]
EXTRA_MODELS = "models:\n" + "".join(
    f"  mini-{i}: {{model_id: {EXTRA[i]}, dimensions: 384, max_sequence_length: 256}}\n"
    for i in range(3)
)


@pytest.fixture(scope="module")
def server(minilm_dir: Path) -> Iterator[ServerThread]:
    cat = Catalog(source="test").merge(minilm_catalog(minilm_dir))
    for repo, commit in zip(EXTRA, EXTRA_COMMITS, strict=True):
        cat.merge(folder_catalog(minilm_dir, repo, commit))
    with ServerThread(cat) as srv:
        yield srv


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[FaultProxy]:
    with FaultProxy(server.url) as p:
        yield p


@pytest.fixture
def env(tmp_path: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_ENDPOINT at the proxy, a fresh cache; returns the cache dir."""
    monkeypatch.setenv("HF_ENDPOINT", proxy.url)
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def manager(tmp_path: Path, text: str = "", **kw: object) -> ModelManager:
    cfg_file = tmp_path / "caxton.yaml"
    cfg_file.write_text(text)
    return ModelManager(load_config(cfg_file), **kw)  # type: ignore[arg-type]


def _file_of(path: str) -> str:
    return path.split("/resolve/", 1)[1].split("/", 1)[1]


def gets(proxy: FaultProxy) -> list[str]:
    """Repo files fetched (GET .../resolve/<rev>/<path>), each once, in the order
    of their first request (a large file may come in several Range requests)."""
    return list(dict.fromkeys(_file_of(r.path) for r in proxy.seen("/resolve/", "GET")))


def bytes_requested(proxy: FaultProxy, file: str, size: int) -> int:
    """Bytes the client asked for, summed over the GETs (and Range requests) of one file."""
    gets = [r for r in proxy.seen("/resolve/", "GET") if _file_of(r.path) == file]
    return requested_bytes(gets, size)


def test_seven_steps_end_to_end(
    tmp_path: Path, env: Path, proxy: FaultProxy, minilm_dir: Path
) -> None:
    ok = total(DOWNLOADS, status="ok")
    mgr = manager(tmp_path, functional=True)
    path, spec = mgr.ensure(MINI)
    assert path == env / MINI and spec.name == MINI
    # Step 3: the revision and tree APIs, at the pinned commit.
    api = [r.path for r in proxy.seen("^/api/models/")]
    assert any(f"/revision/{MINILM_COMMIT}" in p for p in api)
    assert any("/tree/" in p for p in api)
    # Step 4: small files first, the weights last.
    fetched = gets(proxy)
    assert fetched[-1] == "onnx/model.onnx"
    assert {"config.json", "tokenizer.json", "1_Pooling/config.json", "modules.json"} <= set(
        fetched
    )
    weights_at = min(r.at for r in proxy.seen("/resolve/.*/onnx/model.onnx", "GET"))
    small_at = [r.at for r in proxy.seen("/resolve/.*json$", "GET")]
    assert max(small_at) < weights_at
    assert "model.safetensors" not in fetched
    # Step 5: every installed byte matches the published hashes.
    sums = minilm_sha256s(minilm_dir)
    for rel in fetched:
        assert _core.sha256_file(path / rel) == sums[rel], rel
    # Steps 6-7: metadata and registry.json.
    meta = json.loads((path / METADATA_FILE).read_text())
    assert meta["commit"] == MINILM_COMMIT and meta["validation_status"] == "verified"
    assert meta["download_source"] == "127.0.0.1" and meta["file_count"] == len(fetched)
    index = json.loads((env / "registry.json").read_text())
    assert index["models"][MINI]["commit"] == MINILM_COMMIT
    assert sorted(os.listdir(env / "downloads")) == []
    assert total(DOWNLOADS, status="ok") == ok + 1


def test_cached_load_makes_no_request(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    manager(tmp_path).ensure(MINI)
    before = len(proxy.requests)
    again = manager(tmp_path)  # a fresh manager, as in a new process
    for _ in range(3):
        again.ensure(MINI)
    assert len(proxy.requests) == before


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "CAXTON_OFFLINE"])
def test_offline_makes_zero_requests(
    tmp_path: Path, env: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    manager(tmp_path).ensure(MINI)
    proxy.requests.clear()
    monkeypatch.setenv(var, "1")
    off = manager(tmp_path)
    path, _ = off.ensure(MINI)
    assert path.is_dir()
    with pytest.raises(OfflineError, match="not in the cache"):
        off.ensure("multilingual-e5-small")
    with pytest.raises(OfflineError):
        off.download("all-mpnet-base-v2")
    assert proxy.requests == []


def test_corrupt_weights_repaired_alone(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    mgr = manager(tmp_path)
    path, _ = mgr.ensure(MINI)
    weights = path / "onnx" / "model.onnx"
    tok_inode = os.stat(path / "tokenizer.json").st_ino
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x40
    weights.chmod(0o644)
    weights.write_bytes(bytes(data))
    proxy.requests.clear()
    fixed, _ = mgr.on_load_failure(MINI, RuntimeError("onnxruntime: invalid graph"))
    assert fixed == path
    assert gets(proxy) == ["onnx/model.onnx"]  # only the corrupt file
    report = mgr.repair(MINI)
    assert report.ok
    assert os.stat(path / "tokenizer.json").st_ino == tok_inode  # good files kept, not refetched


def test_corrupt_small_file_found_by_validation_interval(
    tmp_path: Path, env: Path, proxy: FaultProxy
) -> None:
    mgr = manager(tmp_path, "memory: {model_cache: {validation_interval: 0s}}\n")
    path, _ = mgr.ensure(MINI)
    (path / "tokenizer.json").chmod(0o644)
    with open(path / "tokenizer.json", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    proxy.requests.clear()
    mgr.ensure(MINI)
    assert gets(proxy) == ["tokenizer.json"]


def test_eviction_by_count(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    mgr = manager(tmp_path, "memory: {model_cache: {max_models: 2}}\n" + EXTRA_MODELS)
    mgr.ensure("mini-0")
    mgr.ensure("mini-1")
    mgr.ensure("mini-0")  # mini-1 is now the least recently used
    mgr.cache.flush_access()
    mgr.ensure("mini-2")
    assert sorted(m.name for m in mgr.installed()) == ["mini-0", "mini-2"]
    assert set(json.loads((env / "registry.json").read_text())["models"]) == {"mini-0", "mini-2"}


def test_eviction_by_size(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    # One copy is ~91 MB: 0.2 GB holds two.
    mgr = manager(
        tmp_path, "memory: {model_cache: {max_size_gb: 0.2, cleanup_policy: fifo}}\n" + EXTRA_MODELS
    )
    for name in ("mini-0", "mini-1", "mini-2"):
        mgr.ensure(name)
        assert mgr.cache.total_size() <= 200_000_000
    assert sorted(m.name for m in mgr.installed()) == ["mini-1", "mini-2"]  # fifo: oldest went


def test_pinned_model_survives_eviction(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    text = "memory: {model_cache: {max_models: 2, pinned_models: [mini-0]}}\n" + EXTRA_MODELS
    mgr = manager(tmp_path, text)
    for name in ("mini-0", "mini-1", "mini-2"):
        mgr.ensure(name)
    assert sorted(m.name for m in mgr.installed()) == ["mini-0", "mini-2"]


@pytest.mark.parametrize(
    "fault",
    [
        Fault(path="^/api/models/", status_seq=[429] * 20, retry_after="0"),
        Fault(path="^/api/models/", status_seq=[503] * 20),
        Fault(path="^/api/models/", stall_after=0, stall_seconds=4),
    ],
    ids=["429", "503", "timeout"],
)
def test_failed_update_check_never_fails_cached_load(
    tmp_path: Path, env: Path, proxy: FaultProxy, fault: Fault
) -> None:
    text = (
        "memory: {model_cache: {update_check_interval: 0s}, download: {request_timeout: 1s}}\n"
        + EXTRA_MODELS
    )
    mgr = manager(tmp_path, text)
    path, _ = mgr.ensure("mini-0")  # revision main: updates are checked
    proxy.requests.clear()
    proxy.faults.append(fault)
    failed = total(metrics.UPDATE_CHECKS, result="failed")
    again, _ = mgr.ensure("mini-0")
    mgr.join_updates()
    assert again == path
    assert proxy.seen("^/api/models/"), "the update check did happen"
    assert gets(proxy) == []
    assert total(metrics.UPDATE_CHECKS, result="failed") == failed + 1


def test_update_check_waits_for_its_interval(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    mgr = manager(tmp_path, EXTRA_MODELS)  # default update_check_interval: 24h
    mgr.ensure("mini-0")
    proxy.requests.clear()
    manager(tmp_path, EXTRA_MODELS).ensure("mini-0")
    assert proxy.requests == []


def test_not_enough_disk_frees_by_policy_then_fails(
    tmp_path: Path, env: Path, proxy: FaultProxy
) -> None:
    free = {"n": 10**12}
    cache = ModelCache(env, disk_free=lambda p: free["n"])
    mgr = manager(tmp_path, EXTRA_MODELS, cache=cache)
    mgr.ensure("mini-0")
    # Only after mini-0 is evicted is there room for mini-1.
    # 50 MB free; evicting mini-0 (~91 MB) makes room: the planner only evicts when
    # that can free enough.
    cache._disk_free = lambda p: 10**12 if cache.get("mini-0") is None else 50_000_000
    mgr.ensure("mini-1")
    assert [m.name for m in mgr.installed()] == ["mini-1"]
    cache._disk_free = lambda p: 1000
    proxy.requests.clear()
    with pytest.raises(InsufficientDiskSpace) as exc:
        mgr.ensure("mini-2")
    assert exc.value.available == 1000
    assert gets(proxy) == []  # failed before writing anything


def test_missing_repo_is_model_not_found(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    with pytest.raises(ModelNotFound):
        manager(tmp_path).ensure("all-mpnet-base-v2")
    assert gets(proxy) == []


@pytest.mark.parametrize("locks", ["on", "off"])
def test_two_processes_share_one_cache(
    tmp_path: Path, env: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, locks: str
) -> None:
    """Both processes get the same verified model. With the lock, the second waits
    and reuses (one GET per file); with locking off (NFS, Lustre) correctness still
    holds through private work dirs and rename, only bandwidth is duplicated."""
    if locks == "off":
        monkeypatch.setenv("CAXTON_NO_LOCKS", "1")
    script = textwrap.dedent(
        """
        import sys
        from caxton_models.config import load_config
        from caxton_models.acquire.manager import ModelManager
        path, _ = ModelManager(load_config(), functional=False).ensure("all-MiniLM-L6-v2")
        print(path)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == str(env / MINI)
    # With the lock the second process waits and reuses: the weights cross the wire
    # once (a retried range may add a little). Without it each process may fetch its
    # own copy: only bandwidth is lost, never correctness.
    size = (env / MINI / "onnx" / "model.onnx").stat().st_size
    copies = bytes_requested(proxy, "onnx/model.onnx", size) / size
    assert copies >= 1
    if locks == "on":
        assert copies < 1.5, copies
    assert ModelManager(load_config(), functional=False).repair(MINI).ok
    assert os.listdir(env / "downloads") == []


# ------------------------------------------------------------------ the spec's example files


def test_example_development(env: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAXTON_CONFIG", str(EXAMPLES / "caxton-dev.yaml"))
    mgr = ModelManager(functional=False)  # validation_on_startup on an empty cache: nothing to do
    assert mgr.config.cache.directory == env  # CAXTON_CACHE_DIR overrides ~/.cache/caxton/models
    path, _ = mgr.ensure(mgr.config.embedding_model)  # auto_download: true
    assert path == env / MINI
    checks, failures = total(metrics.VALIDATIONS), total(metrics.VALIDATION_FAILURES)
    ModelManager(functional=False)  # validation_on_startup: validates what is installed
    assert total(metrics.VALIDATIONS) == checks + 1
    assert total(metrics.VALIDATION_FAILURES) == failures


def test_example_production(
    env: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CAXTON_CONFIG", str(EXAMPLES / "caxton-prod.yaml"))
    caplog.set_level(logging.INFO, logger="caxton_models")
    ok, refused = total(DOWNLOADS, status="ok"), total(DOWNLOADS, status="refused")
    mgr = ModelManager(functional=False)
    assert mgr.config.cache.validation_interval == 6 * 3600
    # The preferred model is not on this mirror: a typed error; the third in a
    # row is alerted (alert_on_failures, alert_threshold 3).
    for _ in range(3):
        with pytest.raises(ModelNotFound):
            mgr.ensure(mgr.config.embedding_model)
    assert any(
        r.levelno == logging.ERROR and "all-mpnet-base-v2" in r.getMessage() for r in caplog.records
    )
    # Its first fallback downloads, with timing logged (performance_logging).
    path, _ = mgr.ensure(mgr.config.fallback_models[0])
    assert path == env / MINI
    assert any("downloaded all-MiniLM-L6-v2 in" in r.getMessage() for r in caplog.records)
    assert total(DOWNLOADS, status="ok") == ok + 1
    assert total(DOWNLOADS, status="refused") == refused + 3


def test_example_offline(env: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAXTON_CONFIG", str(EXAMPLES / "caxton-offline.yaml"))
    mgr = ModelManager(functional=False)
    assert not mgr.config.downloads_allowed
    with pytest.raises(OfflineError, match="bundled_models_only"):
        mgr.ensure(MINI)
    with pytest.raises(OfflineError):
        mgr.download(MINI)
    path, spec = mgr.ensure("bundled-mini")  # the one model this config allows
    assert path == bundled_dir("bundled-mini") and spec.bundled
    assert proxy.requests == []  # the live mirror was never contacted


# ------------------------------------------------ crash leftovers and planted links


def test_leftovers_of_a_killed_download(
    tmp_path: Path, env: Path, proxy: FaultProxy, minilm_dir: Path
) -> None:
    """A previous process died mid-download: its complete, verified files are kept;
    a truncated file and a full-size file with wrong bytes are fetched again."""
    work = env / "downloads" / f"{MINI}@{MINILM_COMMIT}"
    (work / "onnx").mkdir(parents=True)
    (work / "onnx" / "model.onnx").write_bytes(
        (minilm_dir / "onnx" / "model.onnx").read_bytes()[:1000]
    )
    tok = (minilm_dir / "tokenizer.json").read_bytes()
    (work / "tokenizer.json").write_bytes(b"x" * len(tok))  # right size, wrong bytes
    (work / "vocab.txt.part").write_bytes(b"stale resume state")
    cfg = (minilm_dir / "config.json").read_bytes()
    (work / "config.json").write_bytes(cfg)  # complete and verifiable: kept
    path, _ = manager(tmp_path).ensure(MINI)
    fetched = gets(proxy)
    assert "onnx/model.onnx" in fetched and "tokenizer.json" in fetched
    assert "config.json" not in fetched
    assert (path / "tokenizer.json").read_bytes() == tok
    assert not (path / "vocab.txt.part").exists() and not work.exists()


def test_planted_symlinks_are_not_followed(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    (sentinel_dir / "keep").write_text("untouched")
    env.mkdir(parents=True)
    (env / "downloads").mkdir()
    os.symlink(sentinel_dir, env / "downloads" / f"{MINI}@{MINILM_COMMIT}")
    os.symlink(sentinel_dir / "lockfile", env / ".lock")
    path, _ = manager(tmp_path).ensure(MINI)
    assert path.is_dir() and not path.is_symlink()
    assert os.listdir(sentinel_dir) == ["keep"]
    assert (sentinel_dir / "keep").read_text() == "untouched"
    assert not (env / ".lock").is_symlink()


def test_sigkill_mid_download_then_restart(tmp_path: Path, env: Path, proxy: FaultProxy) -> None:
    """RELIABILITY row 19: a process killed mid-download leaves nothing that is
    taken as complete; the next run reclaims or resumes and installs verified bytes."""
    import signal
    import time

    # Every request for the weights stalls after 1 MB (retries too), so the child is
    # certainly mid-download when it is killed.
    stall = Fault(path="onnx/model.onnx", stall_after=1_000_000, stall_seconds=60)
    proxy.faults.append(stall)
    script = (
        "from caxton_models.config import load_config\n"
        "from caxton_models.acquire.manager import ModelManager\n"
        "ModelManager(load_config(), functional=False).ensure('all-MiniLM-L6-v2')\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not proxy.seen("onnx/model.onnx", "GET") and time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(0.05)
    time.sleep(1.0)  # well into the stalled body
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    if child.stderr:
        child.stderr.close()
    assert not (env / MINI).exists()  # nothing published
    proxy.faults.remove(stall)
    path, _ = manager(tmp_path).ensure(MINI)
    assert manager(tmp_path).repair(MINI).ok  # every byte verified
    assert path.is_dir()
    leftovers = [p for p in os.listdir(env / "downloads") if not p.endswith(".lock")]
    assert leftovers == []
