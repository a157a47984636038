"""Each caxton.yaml key the issue named changes behaviour, shown here, or is
refused with a ConfigError that says why. Downloads go to ``caxton model serve``
on 127.0.0.1 through a recording, fault-injecting proxy.

Where a key's effect is already tested elsewhere, the README's configuration
table names the key; this file covers the download and embedding keys.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caxton_models
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import ENGINE_BATCH_SIZE, ENGINE_CHUNK_KB, load_config
from caxton_models.errors import BackpressureError, ConfigError, ModelNotFound, NetworkTimeout
from caxton_models.ops.server import Catalog, ServerThread
from caxton_models.runtime.batcher import DynamicBatcher
from tests.support.fakehub import FakeHub
from tests.support.hubfaults import MINILM_COMMIT, MINILM_REPO_ID, Fault, FaultProxy, minilm_catalog

MINI = "all-MiniLM-L6-v2"
ONNX = "onnx/model.onnx"


@pytest.fixture(scope="module")
def server(minilm_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(Catalog(source="test").merge(minilm_catalog(minilm_dir))) as srv:
        yield srv


@pytest.fixture
def proxy(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    with FaultProxy(server.url) as p:
        monkeypatch.setenv("HF_ENDPOINT", p.url)
        monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
        yield p


def manager(tmp_path: Path, text: str, **kw: Any) -> ModelManager:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg_file = tmp_path / "caxton.yaml"
    cfg_file.write_text(text)
    return ModelManager(load_config(cfg_file), functional=False, **kw)


def ranges(proxy: FaultProxy, file: str) -> list[int]:
    """Lengths of the Range requests the client sent for ``file``."""
    out = []
    for r in proxy.seen(f"/resolve/.*/{file}$", "GET"):
        start, _, end = r.headers.get("range", "bytes=0-").removeprefix("bytes=").partition("-")
        if end:
            out.append(int(end) - int(start) + 1)
    return out


def gap(proxy: FaultProxy, path_regex: str) -> float:
    """Seconds between the first two requests that match."""
    seen = proxy.seen(path_regex)
    assert len(seen) >= 2, [r.path for r in seen]
    return seen[1].at - seen[0].at


# ---------------------------------------------------------------- download.compression


def test_compression_true_is_refused_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "caxton.yaml"
    path.write_text("download: {compression: true}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.key == "download.compression"
    assert "uncompressed" in str(exc.value) and "SHA-256" in str(exc.value)
    path.write_text("download: {compression: false}\n")
    assert load_config(path).download.compression is False


# ---------------------------------------------------------------- what the hub is built with


@pytest.mark.parametrize(
    ("text", "connections"),
    [
        ("", None),  # adaptive: the core's own budget
        ("download: {strategy: adaptive}", None),
        ("download: {strategy: conservative}", 2),
        ("download: {strategy: aggressive}", 32),
        ("download: {strategy: conservative, connections: 5}", 5),  # explicit wins
    ],
)
def test_strategy_sets_the_connection_budget(
    tmp_path: Path, text: str, connections: int | None
) -> None:
    built: list[dict[str, Any]] = []

    def factory(endpoints: list[str], **kw: Any) -> Any:
        built.append(kw)
        return object()

    mgr = manager(tmp_path, text, hub_factory=factory)
    assert mgr.hub is not None
    assert built[0].get("connections") == connections
    # The engine's defaults are passed, stated, whatever the strategy.
    assert built[0]["chunk_size"] == ENGINE_CHUNK_KB * 1024 == 8 << 20
    assert built[0]["retry_delay"] == 0.5


# ---------------------------------------------------------------- download.chunk_size_kb


def test_chunk_size_kb_sets_the_range_size(
    tmp_path: Path, proxy: FaultProxy, minilm_dir: Path
) -> None:
    """The spec's own example, 1024, means 1 MiB ranges (it used to be dropped
    because it equalled the old default); the default is the engine's 8 MiB."""
    size = (minilm_dir / ONNX).stat().st_size
    manager(tmp_path / "a", "download: {chunk_size_kb: 1024}\n").download(MINI)
    spec_ranges = ranges(proxy, ONNX)
    assert spec_ranges and max(spec_ranges) <= 1 << 20
    assert len(spec_ranges) >= size // (1 << 20)
    proxy.requests.clear()
    manager(tmp_path / "b", "").download(MINI, force=True)
    default_ranges = ranges(proxy, ONNX)
    assert max(default_ranges) > 1 << 20 and max(default_ranges) <= 8 << 20


# ---------------------------------------------------------------- download.retry_delay_ms


def test_retry_delay_ms_reaches_the_core(tmp_path: Path, proxy: FaultProxy) -> None:
    """One 503 on the API and one on a file: the retry waits at least half of
    retry_delay_ms (the jitter's floor) in both the request and the download
    paths of the core. The core's default would wait at most 0.5 s."""
    proxy.faults = [
        Fault(path=r"^/api/models/.*/revision/", status_seq=[503]),
        Fault(path=r"/resolve/.*/config\.json$", method="GET", status_seq=[503]),
    ]
    mgr = manager(tmp_path, "download: {retry_delay_ms: 1600}\n")
    info = mgr.hub.resolve(MINILM_REPO_ID, MINILM_COMMIT)
    assert gap(proxy, r"^/api/models/.*/revision/") >= 0.8
    digests = mgr.hub.download_files(info, {"config.json": tmp_path / "config.json"})
    assert digests["config.json"] and (tmp_path / "config.json").is_file()
    assert gap(proxy, r"/resolve/.*/config\.json$") >= 0.8


# ---------------------------------------------------------------- download.timeout_minutes


def test_timeout_minutes_bounds_one_large_file(
    tmp_path: Path, proxy: FaultProxy, minilm_dir: Path
) -> None:
    """A weights file served at 100 kB/s per connection would take minutes;
    timeout_minutes: 0.02 (1.2 s) stops it in the core, keeps what arrived,
    and the next attempt fetches only the rest."""
    proxy.faults = [Fault(path=rf"/resolve/.*/{ONNX}$", method="GET", rate=100_000)]
    mgr = manager(tmp_path, "download: {timeout_minutes: 0.02}\n")
    with pytest.raises(NetworkTimeout, match="timeout_minutes"):
        mgr.download(MINI)
    assert mgr.cache.get(MINI) is None
    assert any(mgr.cache.downloads.iterdir())  # the small files and the part, kept
    small = {r.path for r in proxy.seen("/resolve/", "GET") if not r.path.endswith(ONNX)}
    proxy.faults = []
    proxy.requests.clear()
    path = mgr.download(MINI)
    assert (path / ONNX).stat().st_size == (minilm_dir / ONNX).stat().st_size
    again = {r.path for r in proxy.seen("/resolve/", "GET")}
    assert again and not (again & small)  # finished files were not fetched twice


# ---------------------------------------------------------------- monitoring.alert_*


@pytest.mark.parametrize(("text", "alerts"), [
    ("monitoring: {alert_on_failures: true, alert_threshold: 1}", [1]),
    ("monitoring: {alert_on_failures: true, alert_threshold: 2}", [2]),
    ("monitoring: {alert_on_failures: false, alert_threshold: 1}", []),
])  # fmt: skip
def test_alert_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, alerts: list[int]
) -> None:
    caplog.set_level(logging.ERROR, logger="caxton_models")
    hub = FakeHub({})  # knows no repository: every download fails
    mgr = manager(tmp_path, text, hub_factory=lambda *a, **k: hub)
    fired = []
    for attempt in range(1, 4):
        before = len(caplog.records)
        with pytest.raises(ModelNotFound):
            mgr.download(MINI)
        if len(caplog.records) > before:
            fired.append(attempt)
    assert fired == alerts


# ---------------------------------------------------------------- embedding:


def test_embedding_block_sets_the_embedders_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "caxton.yaml"
    path.write_text("embedding: {batch_size: 3, parallel_batches: 1}\n")
    monkeypatch.setenv("CAXTON_CONFIG", str(path))
    emb = caxton_models.load("bundled-mini")
    assert emb.max_batch_size == 3 and emb.parallel_batches == 1
    emb.embed([f"text number {i}" for i in range(10)])
    assert emb.stats["batches"] >= 4  # 10 texts, at most 3 rows per model call
    # A keyword of load() still wins over the file.
    assert caxton_models.load("bundled-mini", max_batch_size=5).max_batch_size == 5
    # An explicit config wins over the file too.
    cfg = load_config(path)
    other = caxton_models._load.embedder_defaults(cfg.embedding)
    assert other == {"max_batch_size": 3, "parallel_batches": 1}


def test_embedding_defaults_are_the_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no caxton.yaml
    emb = caxton_models.load("bundled-mini")
    from caxton_models.runtime._parallel import cpu_count
    from caxton_models.runtime.embedder import DEFAULT_MAX_BATCH

    assert emb.max_batch_size == DEFAULT_MAX_BATCH == ENGINE_BATCH_SIZE
    assert emb.parallel_batches == cpu_count()  # 'auto': one per core


class _Blocking:
    """An embedder whose first call blocks until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []

    def embed(self, texts: list[str], **kw: Any) -> Any:
        self.calls.append(len(texts))
        self.entered.set()
        self.release.wait(30)
        return np.zeros((len(texts), 2), np.float32)


def test_embedding_block_sets_the_batchers_defaults(tmp_path: Path) -> None:
    path = tmp_path / "caxton.yaml"
    path.write_text(
        "embedding: {batch_size: 2, max_batch_wait_ms: 250, queue_size: 1, parallel_batches: 1}\n"
    )
    fake = _Blocking()
    with DynamicBatcher.from_config(fake, load_config(path).embedding) as b:
        assert (b.max_batch_size, b.max_batch_wait_s, b.queue_size) == (2, 0.25, 1)
        assert len(b._workers) == 1
        first = b.submit("a")
        assert fake.entered.wait(10)  # the one worker is busy with "a"
        second = b.submit("b")  # the queue's one place
        with pytest.raises(BackpressureError, match="queue_size"):
            b.submit("c")
        fake.release.set()
        first.result(10), second.result(10)
    assert (
        DynamicBatcher.from_config(fake, load_config(path).embedding, queue_size=9).queue_size == 9
    )
