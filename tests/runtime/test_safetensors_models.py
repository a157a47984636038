"""Models that ship only model.safetensors, run through caxton_models.load with
no torch: the sentence-transformers fixtures against what
SentenceTransformer.encode produced, and the real MiniLM (safetensors alone)
and all-mpnet-base-v2 against their reference embeddings, installed with
``caxton model install`` like an operator would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import InvalidModelFormat

CORPORA = ("pypi-summaries-10k", "python-docs-passages")


@pytest.mark.parametrize("fixture", ["st-bert-mean-normalize", "st-distilbert-mean-dense-tanh"])
def test_sentence_transformers_folders_match_their_embeddings(
    architectures_dir: Path, fixture: str
) -> None:
    folder = architectures_dir / fixture
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    want = np.load(folder / "embeddings.npy")
    emb = caxton_models.load(folder)
    got = emb.embed(texts)
    assert got.shape == want.shape == (len(texts), emb.dimensions)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert emb.config.onnx_path is None and emb.config.weights_path is not None


def test_dense_module_projects_and_is_not_normalised(architectures_dir: Path) -> None:
    emb = caxton_models.load(architectures_dir / "st-distilbert-mean-dense-tanh")
    assert emb.dimensions == 16 and not emb.normalizes
    assert [d.activation for d in emb.config.dense] == ["tanh"]


def test_unsupported_architecture_says_what_is_supported(tmp_path: Path, architectures_dir: Path):
    folder = tmp_path / "m"
    shutil.copytree(architectures_dir / "st-bert-mean-normalize", folder)
    config = (folder / "config.json").read_text().replace('"bert"', '"gpt2"')
    (folder / "config.json").write_text(config)
    with pytest.raises(InvalidModelFormat, match="mpnet"):
        caxton_models.load(folder).embed(["x"])


def _install(tmp_path: Path, name: str, source: Path) -> dict[str, str]:
    """`caxton model install` into a fresh cache; returns the environment that
    points a process at it, offline."""
    env = {
        **os.environ,
        "CAXTON_CACHE_DIR": str(tmp_path / "cache"),
        "CAXTON_OFFLINE": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "caxton_models", "model", "install", "--model-id", name,
         "--source", str(source)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return env


def _cosines(emb: caxton_models.Embedder, texts: list[str], ref: np.ndarray) -> np.ndarray:
    got = emb.embed(texts)
    return np.asarray((got * ref).sum(axis=1))


@pytest.mark.timeout(1800)  # the whole of both corpora: minutes on a loaded 2-core machine
def test_minilm_from_safetensors_alone_matches_the_references(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    minilm_dir: Path,
    corpora_dir: Path,
    reference_dir: Path,
) -> None:
    source = tmp_path / "minilm-safetensors"
    shutil.copytree(minilm_dir, source, ignore=shutil.ignore_patterns("onnx", "SHA256SUMS"))
    env = _install(tmp_path, "all-MiniLM-L6-v2", source)
    for key in ("CAXTON_CACHE_DIR", "CAXTON_OFFLINE"):
        monkeypatch.setenv(key, env[key])
    emb = caxton_models.load("all-MiniLM-L6-v2", fallback=False)
    assert emb.config.onnx_path is None  # built from model.safetensors
    for corpus in CORPORA:
        texts = (corpora_dir / f"{corpus}.txt").read_text(encoding="utf-8").splitlines()
        ref = np.load(reference_dir / f"all-MiniLM-L6-v2.{corpus}.npy")
        cos = _cosines(emb, texts, ref)
        assert cos.min() >= 0.9999, (corpus, float(cos.min()))


@pytest.mark.timeout(3600)  # a 110M-parameter model over 3,400 texts on 2 cores
def test_mpnet_matches_the_references(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mpnet_dir: Path,
    corpora_dir: Path,
    reference_dir: Path,
) -> None:
    env = _install(tmp_path, "all-mpnet-base-v2", mpnet_dir)
    for key in ("CAXTON_CACHE_DIR", "CAXTON_OFFLINE"):
        monkeypatch.setenv(key, env[key])
    emb = caxton_models.load("all-mpnet-base-v2", fallback=False)
    assert emb.dimensions == 768 and emb.model_id == "sentence-transformers/all-mpnet-base-v2"
    for corpus, refname in (
        ("pypi-summaries-10k", "pypi-summaries-2k"),
        ("python-docs-passages", "python-docs-passages"),
    ):
        # 600 texts of each corpus (of 2,000 and 1,404; the long and the short are
        # spread through both files): the whole sets passed here until they cost
        # 3.5 of CI's 30 minutes under load.
        ref = np.load(reference_dir / f"all-mpnet-base-v2.{refname}.npy")[:600]
        texts = (corpora_dir / f"{corpus}.txt").read_text(encoding="utf-8").splitlines()
        cos = _cosines(emb, texts[: len(ref)], ref)
        assert cos.min() >= 0.9999, (corpus, float(cos.min()))


def test_plain_graph_maps_the_weights_from_the_models_own_file(
    tmp_path: Path, architectures_dir: Path
) -> None:
    """The graph built from safetensors points at the weights' byte ranges in a
    hard link of model.safetensors: the same inode, so the same page-cache
    pages in every process, and no second copy on disk."""
    from caxton_models.acquire._install import install_from_dir
    from caxton_models.runtime.embedder import Embedder
    from caxton_models.store import ModelCache

    folder = architectures_dir / "st-bert-mean-normalize"
    cache = ModelCache(tmp_path / "cache")
    model = install_from_dir(cache, "tiny", folder, model_id="acme/tiny")
    emb = Embedder.from_dir(model.path, optimize=False)
    graphs = emb.graph_path.parent
    assert graphs == tmp_path / "cache" / ".graphs" / "tiny"
    linked = emb.graph_path.with_suffix(".safetensors")
    assert linked.stat().st_ino == (model.path / "model.safetensors").stat().st_ino
    # The graph file itself holds no weights, and the link is not counted twice.
    assert emb.graph_path.stat().st_size < (model.path / "model.safetensors").stat().st_size / 2
    again = cache.get("tiny")
    assert again is not None and again.derived_bytes == emb.graph_path.stat().st_size
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    np.testing.assert_allclose(emb.embed(texts), np.load(folder / "embeddings.npy"), atol=2e-5)


def test_graphs_of_two_outside_folders_keep_their_own_weights(
    tmp_path: Path, architectures_dir: Path
) -> None:
    """Folders outside any cache share one graph folder: building the second
    model's graph must not replace the weights the first graph maps (it used
    to link both as ``model.safetensors``; the first graph then failed to
    load, or read the other model's bytes)."""
    from caxton_models.runtime.embedder import Embedder

    first, second = (
        architectures_dir / "st-bert-mean-normalize",
        architectures_dir / "st-distilbert-mean-dense-tanh",
    )
    graphs = tmp_path / "graphs"
    a = Embedder.from_dir(first, optimize=False, graph_cache_dir=graphs)
    Embedder.from_dir(second, optimize=False, graph_cache_dir=graphs)
    again = Embedder.from_dir(first, optimize=False, graph_cache_dir=graphs)
    assert again.graph_path == a.graph_path
    texts = (first / "texts.txt").read_text(encoding="utf-8").splitlines()
    np.testing.assert_allclose(again.embed(texts), np.load(first / "embeddings.npy"), atol=2e-5)
