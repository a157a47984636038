"""caxton_models.load goes through one process-wide loaded-model manager:
one session per model and options, the memory.loaded_models limits, and the
load-time and memory metrics on the path users take."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import caxton_models
from caxton_models import metrics
from caxton_models._load import loaded_models
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import load_config

BUNDLED = "bundled-mini"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "caxton.yaml"
    path.write_text(text)
    monkeypatch.setenv("CAXTON_CONFIG", str(path))
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
    return path


def test_loading_twice_gives_one_session() -> None:
    a = caxton_models.load(BUNDLED)
    b = caxton_models.load(BUNDLED)
    assert a is b and a._session is b._session
    assert loaded_models().loads == 1
    other = caxton_models.load(BUNDLED, token_budget=256)  # other options: another session
    assert other is not a and loaded_models().loads == 2


def test_a_folder_and_its_registry_name_share_nothing_but_the_rule(tmp_path: Path) -> None:
    """A folder is keyed by its path: two copies are two models."""
    copy = tmp_path / "copy"
    shutil.copytree(caxton_models.load(BUNDLED).config.model_dir, copy)
    assert caxton_models.load(copy) is caxton_models.load(str(copy))
    assert caxton_models.load(copy) is not caxton_models.load(BUNDLED)


def test_load_then_embed_records_load_time_and_memory() -> None:
    emb = caxton_models.load(BUNDLED)
    emb.embed(["Hello world"])
    model_id = emb.model_id
    assert metrics.registry().value(metrics.LOAD_TIME, model_id=model_id) > 0
    text = metrics.exposition()
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith(f'{metrics.MEMORY_USAGE}{{model_id="{model_id}"}}')
    )  # fmt: skip
    assert float(line.split()[-1]) > 1_000_000


def test_registry_name_through_the_cache_records_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm_dir: Path
) -> None:
    """The issue's case: load("all-MiniLM-L6-v2").embed(...) from a cache."""
    _config(tmp_path, monkeypatch, "download: {enabled: false}\n")
    ModelManager(functional=False).install_from_dir("all-MiniLM-L6-v2", minilm_dir)
    emb = caxton_models.load("all-MiniLM-L6-v2")
    assert caxton_models.load("all-MiniLM-L6-v2") is emb
    emb.embed(["Hello world"])
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    assert emb.model_id == model_id
    assert metrics.registry().value(metrics.LOAD_TIME, model_id=model_id) > 0
    assert f'{metrics.MEMORY_USAGE}{{model_id="{model_id}"}}' in metrics.exposition()
    assert emb.revision == "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"


def test_memory_keys_of_caxton_yaml_are_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(
        tmp_path,
        monkeypatch,
        "memory:\n  loaded_models:\n    max_loaded_models: 1\n    memory_limit_gb: 4\n"
        "    eviction_policy: lru\n    idle_unload: 10m\n    preload_models: [bundled-mini]\n",
    )
    cfg = load_config().loaded_models
    assert (cfg.max_loaded_models, cfg.memory_limit_gb, cfg.idle_unload) == (1, 4.0, 600.0)
    manager = loaded_models()  # created now, and preloads bundled-mini
    assert manager.max_loaded_models == 1 and manager.idle_unload_s == 600.0
    assert manager.loads == 1 and len(manager.loaded()) == 1
    first = caxton_models.load(BUNDLED)
    assert manager.loads == 1  # the preloaded model
    copy = tmp_path / "copy"
    shutil.copytree(first.config.model_dir, copy)
    caxton_models.load(copy)
    assert manager.loads == 2 and len(manager.loaded()) == 1  # LRU dropped the first
    assert manager.evictions
