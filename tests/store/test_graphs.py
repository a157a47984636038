"""The graph cache: graphs the runtime derives live in the store, beside no
model file, and count with their model in sizes and eviction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caxton_models.errors import ModelInUse
from caxton_models.runtime.embedder import Embedder
from caxton_models.store import GRAPHS, CacheLimits, ModelCache, plan_eviction
from tests.support.cache import install


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def test_optimised_graph_goes_to_the_graph_cache_not_the_model(
    tmp_path: Path, minilm_dir: Path
) -> None:
    from caxton_models.acquire._install import install_from_dir

    cache = ModelCache(tmp_path / "c")
    m = install_from_dir(cache, "mini", minilm_dir, model_id="org/mini")
    before = _listing(m.path)
    emb = Embedder.from_dir(m.path)
    assert emb.graph_path.parent == tmp_path / "c" / GRAPHS / "mini"
    assert _listing(m.path) == before  # the published folder is never written again
    again = cache.get("mini")
    assert again is not None and again.derived_bytes > 50_000_000
    assert again.size_bytes == again.files_bytes + again.derived_bytes
    assert cache.total_size() == again.size_bytes
    # Eviction sees the graphs: a limit just above the files alone must evict.
    limits = CacheLimits(max_bytes=again.files_bytes + 1)
    assert plan_eviction([again], limits) == ["mini"]
    assert cache.remove("mini")
    assert not (tmp_path / "c" / GRAPHS / "mini").exists()


def test_folder_outside_a_cache_gets_graphs_under_the_default_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm_dir: Path
) -> None:
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "default"))
    emb = Embedder.from_dir(minilm_dir)
    assert emb.graph_path.parent == tmp_path / "default" / GRAPHS / "_external"


def test_removing_a_model_in_use_is_model_in_use(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    install(cache, tmp_path, "a")
    with cache.in_use("a"), pytest.raises(ModelInUse, match="in use"):
        cache.remove("a")
    assert cache.remove("a")
