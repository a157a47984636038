"""SPLADE sparse vectors built from safetensors reproduce sentence-transformers'
``SparseEncoder`` (fixtures/architectures/splade-bert: a random
BertForMaskedLM under MLMTransformer + SpladePooling, with the vectors
SparseEncoder.encode gave), and load through the cache like any model (a
Hub-protocol server on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import InvalidModelFormat
from caxton_models.ops.server import Catalog, ServerThread
from caxton_models.runtime.graph import create_session
from caxton_models.runtime.graph.task_heads import build_splade
from caxton_models.runtime.splade import SpladeEncoder, read_sparse_encoder
from caxton_models.sparse import SparseBatch, SparseVector

COMMIT = "c0ffee" + "0" * 34


@pytest.fixture(scope="module")
def splade_dir(architectures_dir: Path) -> Path:
    return architectures_dir / "splade-bert"


def _texts(folder: Path) -> list[str]:
    return (folder / "texts.txt").read_text(encoding="utf-8").splitlines()


def _expected(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    z = np.load(folder / "sparse.npz")
    return [(z[f"indices_{i}"], z[f"values_{i}"]) for i in range(len(_texts(folder)))]


def test_vectors_match_sparse_encoder(splade_dir: Path, graph_cache_dir: Path) -> None:
    enc = SpladeEncoder.from_dir(splade_dir, graph_cache_dir=graph_cache_dir)
    assert enc.dimensions == 30522 and enc.max_length == 24
    vectors = enc.embed(_texts(splade_dir))
    for vec, (indices, values) in zip(vectors, _expected(splade_dir), strict=True):
        assert isinstance(vec, SparseVector)
        np.testing.assert_array_equal(vec.indices, indices)
        np.testing.assert_allclose(vec.values, values, atol=1e-4)


def test_batch_form_is_csr_in_the_callers_order(splade_dir: Path, graph_cache_dir: Path) -> None:
    """Several batches (a small token budget), texts repeated in another order:
    row i of the CSR arrays is text i."""
    enc = SpladeEncoder.from_dir(splade_dir, graph_cache_dir=graph_cache_dir, token_budget=32)
    texts = _texts(splade_dir)
    order = [3, 0, 2, 1, 0, 3]
    batch = enc.embed_batch([texts[i] for i in order])
    assert isinstance(batch, SparseBatch) and len(batch) == len(order)
    expected = _expected(splade_dir)
    for row, i in enumerate(order):
        lo, hi = batch.indptr[row], batch.indptr[row + 1]
        np.testing.assert_array_equal(batch.indices[lo:hi], expected[i][0])
        np.testing.assert_allclose(batch.values[lo:hi], expected[i][1], atol=1e-4)
    assert len(enc.embed_batch([])) == 0


def test_top_k_keeps_the_largest_weights(splade_dir: Path, graph_cache_dir: Path) -> None:
    enc = SpladeEncoder.from_dir(splade_dir, graph_cache_dir=graph_cache_dir)
    texts = _texts(splade_dir)
    for vec, (indices, values) in zip(
        enc.embed(texts, top_k=7), _expected(splade_dir), strict=True
    ):
        best = np.sort(indices[np.argsort(-values, kind="stable")[:7]])
        np.testing.assert_array_equal(vec.indices, best)
        assert vec.nnz == 7
    assert all(v.nnz == 0 for v in enc.embed(texts, top_k=0))
    with pytest.raises(ValueError, match="top_k"):
        enc.embed(texts, top_k=-2)
    terms = enc.terms(enc.embed(texts[:1], top_k=3)[0])
    assert len(terms) == 3 and list(terms.values()) == sorted(terms.values(), reverse=True)


def test_small_weights_are_kept_as_log1p_keeps_them(splade_dir: Path) -> None:
    """log(1 + x) rounds to 0 for x below ~6e-8 in float32; torch.log1p does
    not, so a plain Log(1 + x) would drop terms SparseEncoder keeps."""
    config = json.loads((splade_dir / "config.json").read_text())
    vocab, hidden = 30522, config["hidden_size"]
    from caxton_models.runtime._modelconfig import read_tensors

    weights = dict(read_tensors(splade_dir / "model.safetensors"))
    # Decoder bias pushes term 5 to a tiny positive logit whatever the text.
    bias = np.full(vocab, -100.0, np.float32)
    bias[5] = 3e-8
    weights["cls.predictions.bias"] = bias
    weights["cls.predictions.decoder.weight"] = np.zeros((vocab, hidden), np.float32)
    session = create_session(build_splade(config, weights))
    ids = np.array([[101, 7592, 102]], np.int64)
    out = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                             "token_type_ids": np.zeros_like(ids)})[0]  # fmt: skip
    assert np.flatnonzero(out[0]).tolist() == [5]
    np.testing.assert_allclose(out[0, 5], np.log1p(np.float64(3e-8)), rtol=1e-6)


def test_pooling_options_and_bare_masked_lm_folders(
    tmp_path: Path, splade_dir: Path, graph_cache_dir: Path
) -> None:
    folder = tmp_path / "sum"
    shutil.copytree(splade_dir, folder)
    pooling = folder / "1_SpladePooling" / "config.json"
    pooling.write_text(json.dumps({"pooling_strategy": "sum", "activation_function": "log1p_relu"}))
    modules = read_sparse_encoder(folder)
    assert (modules.pooling, modules.activation_function) == ("sum", "log1p_relu")
    summed = SpladeEncoder.from_dir(folder, graph_cache_dir=graph_cache_dir).embed(["Hello world"])
    maxed = SpladeEncoder.from_dir(splade_dir, graph_cache_dir=graph_cache_dir).embed(
        ["Hello world"]
    )
    # log1p(log1p(relu)) summed over 4 tokens vs log1p(relu) maxed: other numbers, same support.
    np.testing.assert_array_equal(summed[0].indices, maxed[0].indices)
    assert not np.allclose(summed[0].values, maxed[0].values)
    # No modules.json: a BertForMaskedLM folder read as SPLADE (max, relu).
    bare = tmp_path / "bare"
    shutil.copytree(splade_dir, bare)
    (bare / "modules.json").unlink()
    assert read_sparse_encoder(bare).pooling == "max"
    pooling.write_text(json.dumps({"pooling_strategy": "mean"}))
    with pytest.raises(InvalidModelFormat, match="pooling_strategy 'mean'"):
        read_sparse_encoder(folder)
    (folder / "modules.json").write_text(json.dumps([{"path": "", "type": "x.Transformer"}]))
    with pytest.raises(InvalidModelFormat, match="not supported for SPLADE"):
        read_sparse_encoder(folder)


def test_non_masked_lm_folders_are_refused(architectures_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_length 2 leaves no room"):
        SpladeEncoder.from_dir(architectures_dir / "splade-bert", max_length=2)
    with pytest.raises(InvalidModelFormat, match="not supported for SPLADE"):
        SpladeEncoder.from_dir(architectures_dir / "rerank-bert", graph_cache_dir=tmp_path)
    bare = tmp_path / "classifier"
    shutil.copytree(architectures_dir / "rerank-bert", bare)
    (bare / "modules.json").unlink()
    with pytest.raises(InvalidModelFormat, match="ForMaskedLM"):
        SpladeEncoder.from_dir(bare, graph_cache_dir=tmp_path)


def test_what_a_repo_is_for(tmp_path: Path, architectures_dir: Path, splade_dir: Path) -> None:
    """SpladePooling: sparse; a classifier without Pooling: rerank; a bare
    masked-LM or any Pooling model: embedding (as it always was)."""
    from caxton_models.acquire._adhoc import task_of

    def task(folder: Path) -> str:
        return task_of(folder, json.loads((folder / "config.json").read_text()))

    assert task(splade_dir) == "sparse"
    assert task(architectures_dir / "rerank-bert") == "rerank"
    assert task(architectures_dir / "st-bert-mean-normalize") == "embedding"
    bare = tmp_path / "bare"
    shutil.copytree(splade_dir, bare)
    (bare / "modules.json").unlink()
    assert task(bare) == "embedding"
    with pytest.raises(InvalidModelFormat, match="load_sparse"):
        caxton_models.load(splade_dir)


@pytest.fixture
def splade_server(splade_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(Catalog.from_folder(splade_dir, "acme/tiny-splade", commit=COMMIT)) as srv:
        yield srv


def test_load_sparse_any_repo(
    splade_server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, splade_dir: Path
) -> None:
    """A SparseEncoder repo is described as a sparse model (its SpladePooling
    config fetched with it), downloaded verified and loaded; load() refuses it."""
    monkeypatch.setenv("HF_ENDPOINT", splade_server.url)
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
    enc = caxton_models.load_sparse("acme/tiny-splade")
    assert enc.model_id == "acme/tiny-splade" and enc.revision == COMMIT
    installed = tmp_path / "cache" / "acme--tiny-splade"
    assert (installed / "1_SpladePooling" / "config.json").is_file()
    vec = enc.embed(_texts(splade_dir)[:1])[0]
    # Full validation runs it as a sparse encoder: one weight per vocabulary entry.
    from caxton_models.acquire.validate import validate_model
    from caxton_models.store import ModelCache

    spec = caxton_models.ModelManager().spec("acme/tiny-splade")
    assert spec.task == "sparse" and spec.dimensions == 30522
    installed_model = ModelCache(tmp_path / "cache").get("acme--tiny-splade")
    assert installed_model is not None
    report = validate_model(installed_model, spec, mode="full", functional=True)
    assert report.ok and report.embedding_dimensions == 30522, report.summary()
    np.testing.assert_array_equal(vec.indices, _expected(splade_dir)[0][0])
    with pytest.raises(InvalidModelFormat, match="load_sparse"):
        caxton_models.load("acme/tiny-splade")
