"""The spec's degraded mode: with every dense model unavailable (the default
not cached, downloads off, the bundled model missing from the install) and
``degraded: keyword``, ``load()`` and ``caxton embed`` work offline with BM25
keyword vectors and say so; the metric and the health check show it. Without
the setting the error is the one of today."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import caxton_models
from caxton_models import _bundled, metrics
from caxton_models.config import load_config, parse_config
from caxton_models.errors import ConfigError, ModelUnavailable, OfflineError
from caxton_models.keyword import KEYWORD_SPACE, DegradedEmbedder
from caxton_models.ops.cli import main
from caxton_models.ops.health import check_health
from caxton_models.prometheus import CaxtonCollector
from caxton_models.sparse import SparseVector

MINILM = "all-MiniLM-L6-v2"


@pytest.fixture(autouse=True)
def _no_dense_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> metrics.Registry:
    """The bundled model gone (an incomplete install), a fresh metrics registry
    (other tests' health checks must not see these degraded loads), and the
    once-per-model warning forgotten."""
    from caxton_models import fallback

    empty = tmp_path / "no-bundled"
    empty.mkdir()
    monkeypatch.setattr(_bundled, "BUNDLED_ROOT", empty)
    fresh = metrics.Registry()
    monkeypatch.setattr(metrics, "_REGISTRY", fresh)
    monkeypatch.setattr(fallback, "_warned", set())
    return fresh


def _yaml(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "caxton.yaml"
    path.write_text(
        "memory:\n"
        f"  model_cache: {{directory: {tmp_path / 'cache'}}}\n"
        "  fallback_models: [all-MiniLM-L12-v2, bundled-mini]\n"
        "  download: {enabled: false}\n"
        f"{extra}"
    )
    return path


def test_without_the_setting_the_error_is_as_today(tmp_path: Path) -> None:
    cfg = load_config(_yaml(tmp_path))
    assert cfg.degraded is None
    with pytest.raises(ModelUnavailable, match="keyword-only search is the remaining option") as e:
        caxton_models.load(MINILM, config=cfg)
    assert any("bundled-mini" in t and "incomplete" in t for t in e.value.tried or [])


def test_degraded_keyword_loads_offline_says_so_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, _no_dense_model: metrics.Registry
) -> None:
    cfg = load_config(_yaml(tmp_path, "  degraded: keyword\n"))
    with caplog.at_level(logging.WARNING, logger="caxton_models.fallback"):
        emb = caxton_models.load(MINILM, config=cfg)
        again = caxton_models.load(MINILM, config=cfg)
    assert isinstance(emb, DegradedEmbedder) and isinstance(again, DegradedEmbedder)
    assert emb.degraded is True and emb.space == KEYWORD_SPACE == "keyword:bm25"
    assert emb.requested == MINILM
    assert any("bundled-mini" in t for t in emb.tried)
    # Never a dense array: sparse BM25 vectors a keyword index can take.
    vecs = emb.embed(["Fast JSON parsing", "YAML loader"])
    assert isinstance(vecs, list) and all(isinstance(v, SparseVector) for v in vecs)
    assert not isinstance(vecs, np.ndarray) and vecs[0].nnz == 3
    assert emb.embed_query("json")[0].dot(vecs[0]) > 0
    # Logged once per model and process, counted on every load.
    warnings = [r for r in caplog.records if "DEGRADED MODE" in r.getMessage()]
    assert len(warnings) == 1 and "keyword:bm25" in warnings[0].getMessage()
    assert _no_dense_model.value(metrics.DEGRADED_LOADS, model_id=MINILM, mode="keyword") == 2
    text = _no_dense_model.exposition()
    assert f'{metrics.DEGRADED_LOADS}{{mode="keyword",model_id="{MINILM}"}} 2' in text
    prom = CollectorRegistry()
    prom.register(CaxtonCollector(_no_dense_model))
    assert f'{metrics.DEGRADED_LOADS}{{mode="keyword",model_id="{MINILM}"}} 2.0' in (
        generate_latest(prom).decode()
    )


def test_the_argument_turns_it_on_and_off(tmp_path: Path) -> None:
    plain = load_config(_yaml(tmp_path))
    emb = caxton_models.load(MINILM, config=plain, degraded="keyword")
    assert isinstance(emb, DegradedEmbedder) and emb.space == KEYWORD_SPACE
    on = load_config(_yaml(tmp_path, "  degraded: keyword\n"))
    with pytest.raises(ModelUnavailable):
        caxton_models.load(MINILM, config=on, degraded=False)
    # fallback=False turns the chain off, the setting's last step with it.
    with pytest.raises(OfflineError):
        caxton_models.load(MINILM, config=on, fallback=False)
    with pytest.raises(ValueError, match="degraded='bm25'"):
        caxton_models.load(MINILM, config=on, degraded="bm25")  # type: ignore[call-overload]


def test_a_single_model_chain_also_ends_in_keyword_vectors(tmp_path: Path) -> None:
    cfg = load_config(_yaml(tmp_path, "  fallback_strategy: manual\n  degraded: keyword\n"))
    emb = caxton_models.load(MINILM, config=cfg)
    assert isinstance(emb, DegradedEmbedder) and "not in the cache" in emb.tried[0]


def test_bundled_only_with_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    # No config: the direct path to the bundled model; the argument still ends in keywords.
    monkeypatch.setenv("CAXTON_OFFLINE", "1")
    with pytest.raises(Exception, match="incomplete"):
        caxton_models.load("bundled-mini")
    assert isinstance(caxton_models.load("bundled-mini", degraded="keyword"), DegradedEmbedder)


def test_degraded_language_sets_the_stemmer(tmp_path: Path) -> None:
    cfg = load_config(_yaml(tmp_path, "  degraded: keyword\n  degraded_language: german\n"))
    emb = caxton_models.load(MINILM, config=cfg)
    assert isinstance(emb, DegradedEmbedder)
    assert emb.language == "german" and emb.terms("Die Häuser") == [["haus"]]


@pytest.mark.parametrize(
    ("memory", "want"),
    [
        ({"degraded": "keyword"}, "keyword"),
        ({"degraded": "off"}, None),
        ({"degraded": False}, None),  # YAML's bare `off`
        ({}, None),
    ],
)
def test_the_setting_parses(memory: dict[str, Any], want: str | None) -> None:
    assert parse_config({"memory": memory}, environ=False).degraded == want


@pytest.mark.parametrize(
    ("memory", "words"),
    [
        ({"degraded": "bm25"}, "choose one of: keyword, off"),
        ({"degraded": True}, "choose one of: keyword, off"),
        ({"degraded_language": "klingon"}, "choose one of: arabic"),
    ],
)
def test_bad_settings_are_refused(memory: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config({"memory": memory}, environ=False)


def test_health_reports_degraded_mode_as_a_warning(tmp_path: Path) -> None:
    cfg = load_config(_yaml(tmp_path, "  degraded: keyword\n"))
    report = check_health(cfg, network=False)
    by = {c.name: c for c in report.checks}
    assert by["degraded_mode"].status == "ok"  # nothing degraded in this process yet
    assert by["model_loading"].status == "warn" and "BM25 keyword vectors" in (
        by["model_loading"].detail
    )
    assert by["embedding"].status == "ok" and by["embedding"].data["degraded"] is True
    assert report.status == "warn" and report.ok
    caxton_models.load(MINILM, config=cfg)
    report = check_health(cfg, network=False, load=False)
    degraded = report.check("degraded_mode")
    assert degraded.status == "warn" and "degraded mode" in degraded.detail
    assert degraded.data["models"] == {MINILM: 1}
    # Without the setting a missing dense model is a failure, as before.
    plain = load_config(_yaml(tmp_path))
    assert check_health(plain, network=False).check("model_loading").status == "fail"


def test_caxton_embed_works_offline_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAXTON_CONFIG", str(_yaml(tmp_path, "  degraded: keyword\n")))
    assert main(["embed", "Fast JSON parsing", "YAML loader"]) == 0
    out, err = capsys.readouterr()
    assert "DEGRADED MODE" in err and "keyword:bm25" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    assert all(r["degraded"] is True and r["space"] == KEYWORD_SPACE for r in rows)
    assert "embedding" not in rows[0] and len(rows[0]["indices"]) == len(rows[0]["values"]) == 3

    npz = tmp_path / "vecs.npz"
    assert main(["embed", "--output", str(npz), "Fast JSON parsing", "YAML loader"]) == 0
    with np.load(npz) as data:
        assert data["indptr"].tolist() == [0, 3, 5] and str(data["space"]) == KEYWORD_SPACE
    assert main(["embed", "--output", str(tmp_path / "vecs.npy"), "x"]) != 0
    assert "use FILE.npz" in capsys.readouterr().err

    monkeypatch.setenv("CAXTON_CONFIG", str(_yaml(tmp_path)))
    assert main(["embed", "Fast JSON parsing"]) != 0
    out, err = capsys.readouterr()
    assert out == "" and "DEGRADED" not in err and "incomplete" in err
