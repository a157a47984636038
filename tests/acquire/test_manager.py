"""ModelManager logic against an in-process stand-in for HubClient (no sockets).

The end-to-end tests against a real HTTP server are in
tests/acquire/test_manager_e2e.py; these pin down the policy: what is fetched,
in which order, what is reused, and when no hub call may happen at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from caxton_models import _core, metrics
from caxton_models.acquire.hub import RepoFile
from caxton_models.acquire.manager import ModelManager
from caxton_models.errors import (
    CacheFull,
    ChecksumMismatch,
    InvalidPath,
    ModelNotFound,
    NetworkTimeout,
    OfflineError,
    ServerError,
    UnsafeModel,
)
from caxton_models.registry import Registry, spec_from_mapping
from caxton_models.store import METADATA_FILE
from tests.support.fakehub import COMMIT, FakeHub, manager
from tests.support.metrics import DOWNLOADS, total


def test_download_order_and_layout(tmp_path: Path, fake_hub: FakeHub) -> None:
    mgr = manager(tmp_path, fake_hub)
    seen: list[int] = []
    path = mgr.download("all-MiniLM-L6-v2", progress=seen.append)
    assert path == tmp_path / "cache" / "all-MiniLM-L6-v2"
    gets = fake_hub.gets()
    assert gets[-1] == "onnx/model.onnx"  # weights last
    assert set(gets[:-1]) >= {
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
    }
    assert "model.safetensors" not in gets  # ONNX model type: no second copy of the weights
    assert sum(seen) == sum((path / g).stat().st_size for g in gets)
    meta = json.loads((path / METADATA_FILE).read_text())
    assert meta["commit"] == COMMIT and meta["validation_status"] == "verified"
    # Second call: cache hit, no fake_hub call at all (revision is a pinned commit).
    fake_hub.calls.clear()
    p2, _spec = mgr.ensure("all-MiniLM-L6-v2")
    assert p2 == path and fake_hub.calls == []
    assert list((tmp_path / "cache" / "downloads").glob("*@*")) == []


def test_corrupt_file_redownloaded_alone(tmp_path: Path, fake_hub: FakeHub) -> None:
    mgr = manager(tmp_path, fake_hub)
    path = mgr.download("all-MiniLM-L6-v2")
    inode_weights = os.stat(path / "onnx" / "model.onnx").st_ino
    tok = path / "tokenizer.json"
    data = bytearray(tok.read_bytes())
    data[10] ^= 0xFF
    tok.chmod(0o644)
    tok.write_bytes(bytes(data))
    fake_hub.calls.clear()
    report = mgr.repair("all-MiniLM-L6-v2")
    assert report.ok
    assert fake_hub.gets() == ["tokenizer.json"]
    assert (path / "tokenizer.json").read_bytes() != bytes(data)
    # The good weights were reused (hard link), not fetched again.
    assert os.stat(path / "onnx" / "model.onnx").st_ino == inode_weights


def test_validation_interval_triggers_full_check(tmp_path: Path, fake_hub: FakeHub) -> None:
    mgr = manager(tmp_path, fake_hub, "memory: {model_cache: {validation_interval: 0s}}")
    path = mgr.download("all-MiniLM-L6-v2")
    cfg = path / "config.json"
    raw = bytearray(cfg.read_bytes())
    raw[5] ^= 0x01
    cfg.chmod(0o644)
    cfg.write_bytes(bytes(raw))
    fake_hub.calls.clear()
    full = total(metrics.VALIDATIONS, mode="full")
    mgr.ensure("all-MiniLM-L6-v2")  # full check finds the flip, repairs that file only
    assert fake_hub.gets() == ["config.json"]
    assert total(metrics.VALIDATIONS, mode="full") >= full + 1


def test_offline_makes_no_hub(tmp_path: Path, fake_hub: FakeHub) -> None:
    online = manager(tmp_path, fake_hub)
    online.download("all-MiniLM-L6-v2")
    off = manager(tmp_path, None, offline="1")
    path, _ = off.ensure("all-MiniLM-L6-v2")
    assert path.is_dir()
    with pytest.raises(OfflineError, match="not in the cache"):
        off.ensure("all-mpnet-base-v2")
    with pytest.raises(OfflineError):
        off.download("all-mpnet-base-v2")
    disabled = manager(tmp_path, None, "memory: {download: {enabled: false}}")
    with pytest.raises(OfflineError, match=r"download\.enabled"):
        disabled.ensure("all-mpnet-base-v2")
    no_auto = manager(tmp_path, None, "memory: {model_cache: {auto_download: false}}")
    with pytest.raises(OfflineError, match="auto_download"):
        no_auto.ensure("all-mpnet-base-v2")


def test_offline_with_corrupt_cache_fails_typed(tmp_path: Path, fake_hub: FakeHub) -> None:
    manager(tmp_path, fake_hub).download("all-MiniLM-L6-v2")
    (tmp_path / "cache" / "all-MiniLM-L6-v2" / "config.json").unlink()
    from caxton_models.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match=r"config\.json"):
        manager(tmp_path, None, offline="1").ensure("all-MiniLM-L6-v2")


def test_update_check_failure_never_fails_cached_load(tmp_path: Path, minilm_dir: Path) -> None:
    hub = FakeHub({"org/mini": (minilm_dir, COMMIT)})
    text = (
        "memory: {model_cache: {update_check_interval: 0s}}\n"
        "models: {mini: {model_id: org/mini, dimensions: 384, revision: main}}\n"
    )
    mgr = manager(tmp_path, hub, text)
    mgr.download("mini")
    failed = total(metrics.UPDATE_CHECKS, result="failed")
    for err in (
        ServerError("HTTP 429", status=429),
        ServerError("HTTP 503", status=503),
        NetworkTimeout("timed out"),
    ):
        hub.fail_resolve = err
        hub.calls.clear()
        path, _ = mgr.ensure("mini")
        mgr.join_updates()  # the check runs in the background, off the load
        assert path.is_dir() and hub.calls == [("resolve", "org/mini")]
    assert total(metrics.UPDATE_CHECKS, result="failed") == failed + 3


def test_update_check_waits_for_interval(tmp_path: Path, minilm_dir: Path) -> None:
    hub = FakeHub({"org/mini": (minilm_dir, COMMIT)})
    text = "models: {mini: {model_id: org/mini, dimensions: 384}}\n"  # default interval: 24h
    mgr = manager(tmp_path, hub, text)
    mgr.download("mini")
    hub.calls.clear()
    for _ in range(3):
        mgr.ensure("mini")
    assert hub.calls == []


def test_auto_update_fetches_new_commit(tmp_path: Path, minilm_dir: Path) -> None:
    hub = FakeHub({"org/mini": (minilm_dir, COMMIT)})
    text = (
        "memory: {model_cache: {update_check_interval: 0s, auto_update: true}}\n"
        "models: {mini: {model_id: org/mini, dimensions: 384}}\n"
    )
    mgr = manager(tmp_path, hub, text)
    mgr.download("mini")
    hub.repos["org/mini"] = (minilm_dir, "f" * 40)
    mgr.ensure("mini")  # starts the check in the background (see test_versions.py)
    mgr.join_updates()
    path, _ = mgr.ensure("mini")
    assert json.loads((path / METADATA_FILE).read_text())["commit"] == "f" * 40
    assert mgr.version("mini").previous == COMMIT


def test_tofu_hash_recorded_and_enforced(tmp_path: Path, fake_hub: FakeHub) -> None:
    mgr = manager(tmp_path, fake_hub)
    path = mgr.download("all-MiniLM-L6-v2")
    manifest = json.loads((path / ".caxton_checksum").read_text())["files"]
    recorded = manifest["onnx/model.onnx"]["sha256"]
    assert recorded == _core.sha256_file(path / "onnx" / "model.onnx")


def test_registry_pin_mismatch_refused_before_download(
    tmp_path: Path, fake_hub: FakeHub, minilm_dir: Path
) -> None:
    mgr = manager(tmp_path, fake_hub)
    spec = mgr.registry.get("all-MiniLM-L6-v2")
    bad = replace(spec, checksums={**spec.checksums, "tokenizer.json": "0" * 64})
    mgr.registry.add(bad)
    with pytest.raises(ChecksumMismatch, match=r"tokenizer\.json"):
        mgr.download("all-MiniLM-L6-v2")
    assert mgr.cache.get("all-MiniLM-L6-v2") is None


def test_unsafe_listing_rejected_before_io(tmp_path: Path, fake_hub: FakeHub) -> None:
    fake_hub.extra_files["../../evil"] = RepoFile("../../evil", 1, None, None, False)
    mgr = manager(tmp_path, fake_hub)
    with pytest.raises(InvalidPath):
        mgr.download("all-MiniLM-L6-v2")
    assert fake_hub.gets() == []


def test_pickle_refused(tmp_path: Path, minilm_dir: Path) -> None:
    hub = FakeHub({"org/pt": (minilm_dir, COMMIT)})
    mgr = manager(tmp_path, hub)
    mgr.register(
        "pt", {"model_id": "org/pt", "dimensions": 384, "model_type": "sentence_transformer"}
    )
    with pytest.raises(UnsafeModel):
        mgr.download("pt")
    assert hub.gets() == []


def test_missing_file_names_it(tmp_path: Path, minilm_dir: Path) -> None:
    hub = FakeHub({"org/st": (minilm_dir, COMMIT)})
    mgr = manager(tmp_path, hub)
    mgr.register(
        spec_from_mapping(
            "st",
            {
                "model_id": "org/st",
                "dimensions": 384,
                "required_files": ["model.tflite", "config.json"],
            },
        )
    )
    with pytest.raises(ModelNotFound, match=r"model\.tflite"):
        mgr.download("st")


def test_eviction_by_count_on_download(tmp_path: Path, minilm_dir: Path) -> None:
    hub = FakeHub({f"org/m{i}": (minilm_dir, f"{i}" * 40) for i in range(3)})
    models = "\n".join(f"  m{i}: {{model_id: org/m{i}, dimensions: 384}}" for i in range(3))
    mgr = manager(tmp_path, hub, f"memory: {{model_cache: {{max_models: 2}}}}\nmodels:\n{models}\n")
    mgr.download("m0")
    mgr.download("m1")
    mgr.ensure("m0")  # m0 used: m1 is now least recently used
    mgr.cache.flush_access()
    mgr.download("m2")
    assert {m.name for m in mgr.installed()} == {"m0", "m2"}


def test_bundled_only_and_pins(tmp_path: Path, fake_hub: FakeHub) -> None:
    mgr = manager(tmp_path, None, "memory: {model_cache: {bundled_models_only: true}}")
    with pytest.raises(OfflineError, match="bundled_models_only"):
        mgr.ensure("all-MiniLM-L6-v2")
    online = manager(
        tmp_path,
        fake_hub,
        "memory: {model_cache: {max_models: 1, pinned_models: [all-MiniLM-L6-v2]}}",
    )
    online.download("all-MiniLM-L6-v2")
    installed = online.cache.get("all-MiniLM-L6-v2")
    # Pinned by the config, which stays the only record of it (not the metadata).
    assert installed is not None and online.limits.keeps(installed) and not installed.pinned
    online.register(
        "other",
        {
            "model_id": "sentence-transformers/all-MiniLM-L6-v2",
            "dimensions": 384,
            "revision": COMMIT,
        },
    )
    with pytest.raises(CacheFull):
        online.download("other")


def test_install_from_dir_through_manager(tmp_path: Path, minilm_dir: Path) -> None:
    mgr = manager(tmp_path, None, offline="1")
    m = mgr.install_from_dir("all-MiniLM-L6-v2", minilm_dir)
    assert m.status == "verified"
    path, spec = mgr.ensure("all-MiniLM-L6-v2")
    assert path == m.path and spec.pinned


def test_startup_validation(tmp_path: Path, fake_hub: FakeHub) -> None:
    manager(tmp_path, fake_hub).download("all-MiniLM-L6-v2")
    (tmp_path / "cache" / "all-MiniLM-L6-v2" / "vocab.txt").unlink(missing_ok=True)
    (tmp_path / "cache" / "all-MiniLM-L6-v2" / "modules.json").unlink()
    quick = total(metrics.VALIDATIONS, mode="quick")
    manager(tmp_path, None, "memory: {model_cache: {validation_on_startup: true}}", offline="1")
    assert total(metrics.VALIDATIONS, mode="quick") == quick + 1
    assert total(metrics.VALIDATION_FAILURES, failure_type="missing") >= 1


def test_gc(tmp_path: Path, fake_hub: FakeHub) -> None:
    mgr = manager(tmp_path, fake_hub, "memory: {model_cache: {temp_max_age: 0s}}")
    mgr.download("all-MiniLM-L6-v2")
    junk = tmp_path / "cache" / "downloads" / ("x@" + "0" * 40)
    junk.mkdir()
    (junk / "f.part").write_bytes(b"1")
    os.utime(junk / "f.part", (1, 1))
    os.utime(junk, (1, 1))
    out = mgr.gc()
    assert junk.name in out["temp"] and not junk.exists()


def test_unknown_model_suggests(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="all-mpnet-base-v2"):
        manager(tmp_path, None).ensure("all-mpnet-base-v3")


def test_registry_names_a_real_codesearch_model() -> None:
    assert (
        Registry().get("code-search-net").model_id
        == "flax-sentence-embeddings/st-codesearch-distilroberta-base"
    )


def test_default_manager_reads_config_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caxton_models.acquire import manager as manager_mod

    monkeypatch.setattr(manager_mod, "_default", None)
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "envcache"))
    first = manager_mod.default_manager()
    assert first is manager_mod.default_manager()
    assert first.cache.root == tmp_path / "envcache"


# ------------------------------------------------------------ the spec's example files, no sockets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example_manager(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: FakeHub | None
) -> ModelManager:
    from caxton_models.config import load_config

    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(EXAMPLES / name)

    def factory(*a: Any, **k: Any) -> FakeHub:
        if hub is None:
            raise AssertionError("this example must make no network call")
        return hub

    return ModelManager(cfg, hub_factory=factory, functional=False)


def test_example_dev_downloads_and_validates_on_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub
) -> None:
    mgr = _example_manager("caxton-dev.yaml", tmp_path, monkeypatch, fake_hub)
    path, _ = mgr.ensure(mgr.config.embedding_model)
    assert path == tmp_path / "cache" / "all-MiniLM-L6-v2"
    before = total(metrics.VALIDATIONS)
    _example_manager("caxton-dev.yaml", tmp_path, monkeypatch, fake_hub)
    assert total(metrics.VALIDATIONS) == before + 1


def test_example_prod_alerts_and_logs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_hub: FakeHub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="caxton_models")
    ok, failed = total(DOWNLOADS, status="ok"), total(DOWNLOADS, status="refused")
    mgr = _example_manager("caxton-prod.yaml", tmp_path, monkeypatch, fake_hub)
    assert mgr.config.download.max_concurrent == 2 and mgr.config.download.retry_attempts == 5
    assert mgr.config.monitoring.alert_threshold == 3  # the default

    def alerts() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    for attempt in range(1, 5):
        with pytest.raises(ModelNotFound):
            mgr.ensure(mgr.config.embedding_model)  # not on this fake_hub
        # One alert when the third failure in a row happens, not before, not again.
        assert len(alerts()) == (0 if attempt < 3 else 1), attempt
    assert "3 downloads of all-mpnet-base-v2" in alerts()[0]
    mgr.ensure(mgr.config.fallback_models[0])
    assert any("downloaded all-MiniLM-L6-v2 in" in r.getMessage() for r in caplog.records)
    assert total(DOWNLOADS, status="ok") == ok + 1
    assert total(DOWNLOADS, status="refused") == failed + 4


def test_example_offline_never_builds_a_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = _example_manager("caxton-offline.yaml", tmp_path, monkeypatch, None)
    with pytest.raises(OfflineError, match="bundled_models_only"):
        mgr.ensure("all-MiniLM-L6-v2")
    with pytest.raises(OfflineError, match=r"download\.enabled"):
        mgr.download("all-MiniLM-L6-v2")
