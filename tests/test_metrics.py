"""caxton_models.metrics: the exposition format, and that the instrumented code
moves the counters (downloads through the in-process FakeHub, no sockets)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from caxton_models import metrics
from caxton_models.errors import (
    ChecksumMismatch,
    InsufficientDiskSpace,
    NetworkError,
    NetworkTimeout,
    OfflineError,
)
from caxton_models.metrics import (
    CACHE_SIZE,
    DOWNLOAD_DURATION,
    LOAD_TIME,
    MEMORY_USAGE,
    VALIDATION_FAILURES,
    Registry,
)
from caxton_models.runtime.loaded import ModelMemoryManager
from tests.support.fakehub import COMMIT, FakeHub, manager

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


class FakeCache:
    def __init__(self, size: int) -> None:
        self.size = size

    def total_size(self) -> int:
        return self.size


class FakeModel:
    def __init__(self, model_id: str, memory_bytes: int, load_time_ms: float) -> None:
        self.model_id = model_id
        self.memory_bytes = memory_bytes
        self.load_time_ms = load_time_ms

    def embed(self, texts: Any, **kwargs: Any) -> Any:
        return [[0.0]] * len(texts)


# -- the format ----------------------------------------------------------------------------------


def test_every_spec_metric_has_help_and_type_even_when_empty() -> None:
    text = Registry().exposition()
    lines = text.splitlines()
    for name, kind in [
        (DOWNLOAD_DURATION, "histogram"),
        (CACHE_SIZE, "gauge"),
        (VALIDATION_FAILURES, "counter"),
        (LOAD_TIME, "gauge"),
        (MEMORY_USAGE, "gauge"),
    ]:
        assert f"# TYPE {name} {kind}" in lines
        assert any(line.startswith(f"# HELP {name} ") for line in lines)
    assert text.endswith("\n")
    fams = families(text)
    # prometheus_client names a counter family without its _total suffix.
    assert set(fams) == {DOWNLOAD_DURATION, CACHE_SIZE, "caxton_model_validation_failures",
                         LOAD_TIME, MEMORY_USAGE, "caxton_model_validations",
                         "caxton_model_update_checks", "caxton_model_degraded_loads"}  # fmt: skip


def test_exposition_parses_with_hostile_label_values() -> None:
    reg = Registry(buckets=(1.0, 10.0))
    odd = 'we"ird\\name\nwith newline'
    reg.observe_download(odd, "ok", 0.5)
    reg.observe_download(odd, "ok", 5.0)
    reg.observe_download(odd, "ok", 50.0)
    reg.observe_download("m", "timeout", 10.0)  # on a bound: counted in that bucket (le)
    reg.count_validation_failure(odd, "checksum")
    reg.count_validation_failure(odd, "checksum")
    reg.set_load_time(odd, 0.25)
    reg.watch_cache(FakeCache(12345))
    text = reg.exposition()
    fams = families(text)
    hist = fams[DOWNLOAD_DURATION]
    assert hist.type == "histogram"
    got = {(s.name, s.labels.get("model_id"), s.labels.get("le")): s.value for s in hist.samples}
    assert got[(DOWNLOAD_DURATION + "_bucket", odd, "1.0")] == 1
    assert got[(DOWNLOAD_DURATION + "_bucket", odd, "10.0")] == 2
    assert got[(DOWNLOAD_DURATION + "_bucket", odd, "+Inf")] == 3
    assert got[(DOWNLOAD_DURATION + "_count", odd, None)] == 3
    assert got[(DOWNLOAD_DURATION + "_sum", odd, None)] == pytest.approx(55.5)
    assert got[(DOWNLOAD_DURATION + "_bucket", "m", "10.0")] == 1
    assert samples(text, VALIDATION_FAILURES) == {
        (("failure_type", "checksum"), ("model_id", odd)): 2.0
    }
    assert samples(text, LOAD_TIME) == {(("model_id", odd),): 0.25}
    assert samples(text, CACHE_SIZE) == {(): 12345.0}
    assert reg.value(DOWNLOAD_DURATION + "_count", status="ok", model_id=odd) == 3
    assert reg.value(VALIDATION_FAILURES, model_id=odd, failure_type="checksum") == 2


def test_buckets_are_cumulative_and_end_at_inf() -> None:
    reg = Registry()
    for s in (0.01, 0.3, 3.0, 3.0, 7200.0):
        reg.observe_download("m", "ok", s)
    buckets = [
        (s.labels["le"], s.value)
        for s in families(reg.exposition())[DOWNLOAD_DURATION].samples
        if s.name.endswith("_bucket")
    ]
    values = [v for _, v in buckets]
    assert values == sorted(values) and values[-1] == 5
    assert buckets[-1][0] == "+Inf"
    assert len(buckets) == len(metrics.DOWNLOAD_BUCKETS) + 1


def test_recording_never_raises() -> None:
    class Broken:
        def total_size(self) -> int:
            raise OSError("the cache disk went away")

        def memory_by_model(self) -> dict[str, int]:
            raise RuntimeError("boom")

    reg = Registry()
    reg.watch_cache(Broken())
    reg.watch_memory(Broken())
    text = reg.exposition()  # a broken source does not break the scrape
    assert math.isnan(samples(text, CACHE_SIZE)[()])
    metrics.observe_download("m", "ok", "not a number")  # type: ignore[arg-type]
    metrics.set_load_time("m", object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, "ok"),
        (KeyboardInterrupt(), "cancelled"),
        (ChecksumMismatch("x", expected="a", actual="b"), "invalid"),
        (NetworkTimeout("x"), "timeout"),
        (NetworkError("x"), "network"),
        (InsufficientDiskSpace("x", required=2, available=1), "disk_full"),
        (OfflineError("x"), "failed"),
    ],
)
def test_download_status_is_a_small_fixed_set(error: BaseException | None, status: str) -> None:
    assert metrics.download_status(error) == status


# -- instrumented code --------------------------------------------------------------------------


def _count(status: str) -> float:
    return metrics.registry().value(DOWNLOAD_DURATION + "_count", model_id=MINILM, status=status)


def _failures(kind: str, model_id: str = MINILM) -> float:
    return metrics.registry().value(VALIDATION_FAILURES, model_id=model_id, failure_type=kind)


def test_download_is_timed_and_cache_size_follows(tmp_path: Path, fake_hub: FakeHub) -> None:
    before = _count("ok")
    mgr = manager(tmp_path, fake_hub)
    path = mgr.download("all-MiniLM-L6-v2")
    assert _count("ok") == before + 1
    mgr.download("all-MiniLM-L6-v2")  # a cache hit is not a download
    assert _count("ok") == before + 1
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".caxton_")]
    size = sum(p.stat().st_size for p in files)
    assert samples(metrics.exposition(), CACHE_SIZE) == {(): float(size)}


class CorruptingHub(FakeHub):
    """Serves tokenizer.json with one bit flipped (still valid JSON: the format
    check passes, the checksum catches it)."""

    def serve(self, path: str, data: bytes) -> bytes:
        if path == "tokenizer.json":
            flipped = bytearray(data)
            flipped[3] ^= 0x01  # inside the first key
            return bytes(flipped)
        return data


def test_checksum_failure_counts_download_and_validation(tmp_path: Path, minilm_dir: Path) -> None:
    bad = CorruptingHub({MINILM: (minilm_dir, COMMIT)})
    failed, checksum = _count("invalid"), _failures("checksum")
    mgr = manager(tmp_path, bad)
    with pytest.raises(ChecksumMismatch):
        mgr.download("all-MiniLM-L6-v2")
    assert _count("invalid") == failed + 1
    assert _failures("checksum") == checksum + 1


def test_network_failure_is_its_own_status(tmp_path: Path, minilm_dir: Path) -> None:
    down = FakeHub({MINILM: (minilm_dir, COMMIT)}, fail_resolve=NetworkError("refused"))
    before = _count("network")
    with pytest.raises(NetworkError):
        manager(tmp_path, down).download("all-MiniLM-L6-v2")
    assert _count("network") == before + 1


def test_track_download_metrics_false_records_no_download(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    before = _count("ok")
    mgr = manager(tmp_path, fake_hub, "monitoring: {track_download_metrics: false}")
    mgr.download("all-MiniLM-L6-v2")
    assert _count("ok") == before


def test_cached_model_validation_failures_by_kind(tmp_path: Path, fake_hub: FakeHub) -> None:
    mgr = manager(tmp_path, fake_hub)
    path = mgr.download("all-MiniLM-L6-v2")
    missing, size = _failures("missing"), _failures("size")
    os.unlink(path / "modules.json")
    tok = path / "tokenizer.json"
    shutil.copyfile(tok, tmp_path / "tok")
    with open(tmp_path / "tok", "ab") as f:
        f.write(b" ")
    os.replace(tmp_path / "tok", tok)
    report = mgr.verify("all-MiniLM-L6-v2")
    assert not report.ok
    assert _failures("missing") == missing + 1
    assert _failures("size") == size + 1
    assert mgr.verify("all-MiniLM-L6-v2").ok is False
    assert _failures("missing") == missing + 2  # every validation that finds it counts


def test_memory_manager_reports_load_time_and_memory() -> None:
    models = {"a": FakeModel("org/a", 1000, 250.0), "b": FakeModel("org/b", 2000, 500.0)}
    with ModelMemoryManager(models.__getitem__, max_loaded_models=1) as mm:
        mm.get("a")
        assert metrics.registry().value(LOAD_TIME, model_id="org/a") == 0.25
        assert samples(metrics.exposition(), MEMORY_USAGE).get((("model_id", "org/a"),)) == 1000
        mm.get("b")  # evicts a: its memory is no longer reported
        mem = samples(metrics.exposition(), MEMORY_USAGE)
        assert (("model_id", "org/a"),) not in mem
        assert mem[(("model_id", "org/b"),)] == 2000
        assert mm.memory_by_model() == {"org/b": 2000}
        mm.unload("b")
        assert (("model_id", "org/b"),) not in samples(metrics.exposition(), MEMORY_USAGE)


def test_loader_without_own_timing_uses_wall_time() -> None:
    class Plain:
        model_id = "org/plain"
        memory_bytes = 1

    with ModelMemoryManager(lambda name: Plain()) as mm:
        mm.get("plain")
    assert (("model_id", "org/plain"),) in samples(metrics.exposition(), LOAD_TIME)
