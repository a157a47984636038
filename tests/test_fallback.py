"""``caxton_models.load``: registry names through the cache, and the spec's
fallback chain (preferred, same-space alternative, bundled), with no network."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caxton_models
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import Config, parse_config
from caxton_models.errors import ModelUnavailable, OfflineError

MINILM = "all-MiniLM-L6-v2"
MINILM_SPACE = "sentence-transformers/all-MiniLM-L6-v2"


def _config(tmp_path: Path, **memory: Any) -> Config:
    data = {
        "memory": {
            "model_cache": {"directory": str(tmp_path / "cache")},
            "download": {"enabled": False},  # any network call would be a bug here
            **memory,
        }
    }
    return parse_config(data, environ=False)


def test_bundled_loads_offline_in_the_default_space() -> None:
    emb = caxton_models.load("bundled-mini")
    assert emb.model_id == "caxton/bundled-mini"
    assert emb.space == MINILM_SPACE and emb.dimensions == 384
    vec = emb.embed(["Hello world"])
    assert vec.shape == (1, 384) and vec.dtype == np.float32
    assert abs(float(np.linalg.norm(vec[0])) - 1.0) < 1e-4


def test_missing_default_falls_back_to_bundled_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(tmp_path)
    with caplog.at_level(logging.WARNING, logger="caxton_models.fallback"):
        emb = caxton_models.load(MINILM, config=cfg)
    assert emb.model_id == "caxton/bundled-mini"
    assert emb.space == MINILM_SPACE  # same space: vectors stay comparable
    text = caplog.text
    assert "using fallback model bundled-mini instead of all-MiniLM-L6-v2" in text
    assert "the same embedding space" in text
    assert "all-MiniLM-L12-v2" in text  # the skipped step is named with its reason


def test_manual_strategy_does_not_fall_back(tmp_path: Path) -> None:
    cfg = _config(tmp_path, fallback_strategy="manual")
    with pytest.raises(OfflineError, match="not in the cache"):
        caxton_models.load(MINILM, config=cfg)
    cfg = _config(tmp_path)
    with pytest.raises(OfflineError):
        caxton_models.load(MINILM, config=cfg, fallback=False)


def test_dimension_mismatch_is_skipped_unless_allowed(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path, fallback_models=["all-mpnet-base-v2", "bundled-mini"], fallback_strategy="auto"
    )
    emb = caxton_models.load(MINILM, config=cfg)
    assert emb.model_id == "caxton/bundled-mini"
    cfg = _config(tmp_path, fallback_models=["all-mpnet-base-v2"])
    with pytest.raises(ModelUnavailable) as info:
        caxton_models.load(MINILM, config=cfg)
    tried = info.value.tried or []
    assert any("768 dimensions, not 384" in t for t in tried), tried
    assert "keyword-only" in str(info.value)


def test_strict_uses_only_installed_models(tmp_path: Path, minilm_dir: Path) -> None:
    cfg = _config(tmp_path, fallback_strategy="strict", fallback_models=[MINILM, "bundled-mini"])
    mgr = ModelManager(cfg)
    mgr.install_from_dir(MINILM, minilm_dir)
    # The preferred model is not installed; strict passes over nothing installed and
    # takes the installed MiniLM, not a download.
    emb = caxton_models.load("all-MiniLM-L12-v2", config=cfg, threads=1)
    assert emb.model_id == "sentence-transformers/all-MiniLM-L6-v2"


def test_installed_model_loads_from_the_cache_with_no_network(
    tmp_path: Path, minilm_dir: Path, reference_dir: Path, corpora_dir: Path
) -> None:
    cfg = _config(tmp_path)
    ModelManager(cfg).install_from_dir(MINILM, minilm_dir)
    emb = caxton_models.load(MINILM, config=cfg)
    assert emb.model_id == "sentence-transformers/all-MiniLM-L6-v2" and emb.space == MINILM_SPACE
    texts = (corpora_dir / "python-docs-passages.txt").read_text().splitlines()[:64]
    ref = np.load(reference_dir / "all-MiniLM-L6-v2.python-docs-passages.npy")[:64]
    got = emb.embed(texts)
    assert float(np.min(np.sum(got * ref, axis=1))) >= 0.9999


def test_corrupt_installed_model_offline_falls_back(
    tmp_path: Path, minilm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(tmp_path)
    mgr = ModelManager(cfg)
    installed = mgr.install_from_dir(MINILM, minilm_dir)
    onnx = installed.path / "onnx" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: 1 << 20])  # truncated: cannot load, cannot repair
    before = sorted(p.name for p in installed.path.iterdir())
    with caplog.at_level(logging.WARNING):
        emb = caxton_models.load(MINILM, config=cfg)
    assert emb.model_id == "caxton/bundled-mini"
    assert "cannot use all-MiniLM-L6-v2" in caplog.text
    assert sorted(p.name for p in installed.path.iterdir()) == before  # nothing deleted


def test_a_folder_path_loads_directly(minilm_dir: Path) -> None:
    emb = caxton_models.load(minilm_dir, threads=1)
    assert emb.dimensions == 384
    assert emb.embed(["a", "b"]).shape == (2, 384)
