"""Health checks and the operator's endpoints: ``caxton health``, ``caxton
metrics``, and ``GET /health`` / ``GET /metrics`` of the served mirror. Only
servers on 127.0.0.1 that these tests start; the real files of all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from caxton_models import metrics
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import Config, parse_config
from caxton_models.ops.health import check_health
from caxton_models.ops.server import Catalog, ServeOptions, ServerThread
from tests.support.cli import SENTINEL_TOKEN, caxton, cli_serve
from tests.support.hubfaults import MINILM_COMMIT, MINILM_REPO_ID, make_cache_entry
from tests.support.rawhttp import request

MODEL = "all-MiniLM-L6-v2"
CLI = [sys.executable, "-m", "caxton_models"]


def config(cache: Path, *, offline: bool = False, endpoints: tuple[str, ...] = ()) -> Config:
    data = {"memory": {"model_cache": {"directory": str(cache)}}}
    cfg = parse_config(data, cache.parent / "caxton.yaml", environ=False)
    if endpoints:
        cfg = replace(cfg, download=replace(cfg.download, endpoints=endpoints))
    return replace(cfg, offline=offline)


def corrupt(entry: Path) -> None:
    """Lose one file and change another's size. The cache's files are hard links
    to the shared test data: unlink and replace, never write in place."""
    os.unlink(entry / "modules.json")
    tok = entry / "tokenizer.json"
    tmp = entry / "tokenizer.json.new"
    shutil.copyfile(tok, tmp)
    with open(tmp, "ab") as f:
        f.write(b"\n")
    os.replace(tmp, tok)


@pytest.fixture
def cached(tmp_path: Path, minilm_dir: Path) -> Path:
    """A cache holding the real default model, verified."""
    cache = tmp_path / "cache"
    make_cache_entry(cache, MODEL, minilm_dir, MINILM_REPO_ID, MINILM_COMMIT)
    return cache


@pytest.fixture
def mirror(minilm_dir: Path, cached: Path) -> Iterator[tuple[ServerThread, ModelManager]]:
    """The mirror serving ``cached``, with the health checks `caxton model serve` wires up."""
    mgr = ModelManager(config(cached, offline=True))
    options = ServeOptions(health=lambda: check_health(manager=mgr, network=False, load=False))
    with ServerThread(Catalog.from_cache(cached), options=options) as srv:
        yield srv, mgr


# -- the report ---------------------------------------------------------------------------------


def test_empty_offline_cache_falls_back_to_bundled_and_passes(tmp_path: Path) -> None:
    report = check_health(config(tmp_path / "cache", offline=True))
    by = {c.name: c for c in report.checks}
    assert set(by) == {"cache_integrity", "cache_size", "disk_space", "download_connectivity",
                       "degraded_mode", "model_loading", "embedding"}  # fmt: skip
    assert report.ok and by["cache_integrity"].status == "ok"
    assert by["download_connectivity"].status == "skipped"
    assert "offline" in by["download_connectivity"].detail
    loading = by["model_loading"]
    assert loading.status == "warn" and loading.data["model"] == "bundled-mini"
    assert f"caxton model download {MODEL}" in loading.detail
    assert by["embedding"].status == "ok" and by["embedding"].data["dimensions"] == 384
    assert all(c.duration_s >= 0 for c in report.checks)
    assert not (tmp_path / "cache").exists()  # a health check creates nothing


def test_cli_health_offline_empty_cache_exits_0(tmp_path: Path) -> None:
    out = caxton("health", "--json", cache=tmp_path / "cache", env={"CAXTON_OFFLINE": "1"})
    data = json.loads(out.stdout)
    assert data["status"] == "warn"
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["model_loading"]["data"]["model"] == "bundled-mini"
    assert checks["embedding"]["status"] == "ok"
    assert checks["download_connectivity"]["detail"].startswith("skipped (offline)")
    for c in data["checks"]:
        assert c["status"] in ("ok", "warn", "skipped") and c["detail"]


def test_corrupt_cached_model_fails_integrity_and_exits_3(tmp_path: Path, cached: Path) -> None:
    corrupt(cached / MODEL)
    missing = metrics.registry().value(
        metrics.VALIDATION_FAILURES, model_id=MINILM_REPO_ID, failure_type="missing"
    )
    report = check_health(config(cached, offline=True), load=False)
    integrity = report.check("cache_integrity")
    assert integrity.status == "fail" and not report.ok
    assert f"caxton model verify {MODEL} --repair" in integrity.detail
    assert "modules.json" in integrity.detail
    assert (
        metrics.registry().value(
            metrics.VALIDATION_FAILURES, model_id=MINILM_REPO_ID, failure_type="missing"
        )
        == missing + 1
    )

    out = caxton("health", "--skip-network", cache=cached, env={"HF_TOKEN": SENTINEL_TOKEN},
                 check=3)  # fmt: skip
    assert re.search(r"^FAIL\s+cache_integrity\s", out.stdout, re.M), out.stdout
    assert "health: fail" in out.stdout
    assert SENTINEL_TOKEN not in out.stdout + out.stderr


def test_cached_default_loads_and_endpoint_answers(cached: Path, mirror: tuple) -> None:
    srv, _ = mirror
    report = check_health(config(cached, endpoints=(srv.url,)))
    by = {c.name: c for c in report.checks}
    assert report.status == "ok", [c.to_json() for c in report.checks]
    assert by["model_loading"].data["model"] == MODEL
    assert by["embedding"].data == {"model_id": MINILM_REPO_ID, "dimensions": 384}
    assert by["download_connectivity"].data["endpoints"] == {srv.url: "HTTP 200"}


def test_unreachable_endpoint_alone_exits_5(tmp_path: Path) -> None:
    # conftest points HF_ENDPOINT at the discard port of 127.0.0.1: refused at once.
    out = caxton("health", "--json", "--timeout", "2", cache=tmp_path / "cache", check=5,
                 env={"HF_TOKEN": SENTINEL_TOKEN})  # fmt: skip
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["download_connectivity"]["status"] == "fail"
    assert "127.0.0.1:9" in checks["download_connectivity"]["detail"]
    assert [n for n, c in checks.items() if c["status"] == "fail"] == ["download_connectivity"]
    assert SENTINEL_TOKEN not in out.stdout + out.stderr


def test_skip_network_is_reported_as_skipped(tmp_path: Path) -> None:
    report = check_health(config(tmp_path / "cache"), network=False, load=False)
    assert report.check("download_connectivity").status == "skipped"
    assert report.check("model_loading").status == "skipped"


def test_cache_over_its_limit_warns(tmp_path: Path, cached: Path) -> None:
    cfg = config(cached, offline=True)
    cfg = replace(cfg, cache=replace(cfg.cache, max_size_bytes=1000))
    report = check_health(cfg, load=False)
    size = report.check("cache_size")
    assert size.status == "warn" and "caxton model gc" in size.detail
    assert report.ok


# -- caxton metrics -----------------------------------------------------------------------------


def test_cli_metrics_prints_parseable_text_with_the_cache_size(cached: Path) -> None:
    out = caxton("metrics", cache=cached)
    fams = {f.name: f for f in text_string_to_metric_families(out.stdout)}
    size = fams[metrics.CACHE_SIZE].samples[0].value
    files = [p for p in (cached / MODEL).rglob("*") if p.is_file()]
    assert size == sum(p.stat().st_size for p in files if not p.name.startswith(".caxton_"))
    assert metrics.DOWNLOAD_DURATION in fams and metrics.MEMORY_USAGE in fams


# -- the mirror's endpoints ---------------------------------------------------------------------


def test_mirror_metrics_and_health(mirror: tuple, cached: Path) -> None:
    srv, mgr = mirror
    metrics.watch_cache(mgr.cache)
    status, headers, body = request(srv.url, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert fams[metrics.CACHE_SIZE].samples[0].value > 0

    status, headers, body = request(srv.url, "GET", "/health")
    data = json.loads(body)
    assert status == 200 and headers["content-type"].startswith("application/json")
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["mirror_catalog"]["data"]["repositories"] == [MINILM_REPO_ID]
    assert checks["cache_integrity"]["status"] == "ok"

    corrupt(cached / MODEL)
    status, _, body = request(srv.url, "GET", "/health")
    assert status == 503
    assert {c["name"]: c["status"] for c in json.loads(body)["checks"]}["cache_integrity"] == "fail"


def test_cli_serve_answers_health_and_metrics(cached: Path, tmp_path: Path) -> None:
    with cli_serve(cached, tmp_path / "serve.stderr") as url:
        status, _, body = request(url, "GET", "/health")
        assert status == 200, body
        names = [c["name"] for c in json.loads(body)["checks"]]
        assert names[:2] == ["mirror_catalog", "cache_integrity"]
        status, _, body = request(url, "GET", "/metrics")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert status == 200 and fams[metrics.CACHE_SIZE].samples[0].value > 0
