"""Chroma: CaxtonEmbeddingFunction with a real ephemeral client (add and
query), registered under its name, rebuilt from the collection's config."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

# No telemetry: tests talk to nothing but 127.0.0.1 (read when the package loads).
os.environ["ANONYMIZED_TELEMETRY"] = "False"

pytest.importorskip("chromadb", reason="the chroma extra (in the test extra)")
import chromadb
from chromadb.config import Settings
from chromadb.utils.embedding_functions import known_embedding_functions

import caxton_models
from caxton_models.errors import ConfigError
from caxton_models.integrations.chroma import CaxtonEmbeddingFunction

DOCS = [
    "Caxton downloads embedding models and verifies every byte with SHA-256.",
    "The weather in Lisbon is mild in winter.",
    "ONNX Runtime runs the model in-process on the CPU.",
]


@pytest.fixture
def client():
    # No telemetry: tests talk to nothing but 127.0.0.1.
    return chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))


@pytest.fixture
def name() -> str:
    """Ephemeral clients of one process share their collections: a fresh name."""
    return f"docs-{uuid.uuid4().hex[:12]}"


def test_add_and_query_with_an_ephemeral_client(client, name) -> None:
    ef = CaxtonEmbeddingFunction("bundled-mini")
    col = client.create_collection(name, embedding_function=ef)
    col.add(ids=[str(i) for i in range(3)], documents=DOCS)
    res = col.query(query_texts=["How are downloads checked?"], n_results=1)
    assert res["documents"][0][0] == DOCS[0]
    assert col.configuration_json["hnsw"]["space"] == "cosine"  # the function's default


def test_registered_and_rebuilt_from_the_collections_config(client, name) -> None:
    assert known_embedding_functions["caxton"] is CaxtonEmbeddingFunction
    ef = CaxtonEmbeddingFunction("bundled-mini")
    vec = ef(["x"])  # loads the model: the config now carries its revision
    cfg = ef.get_config()
    assert cfg["model_name"] == "bundled-mini"
    assert cfg["revision"] == caxton_models.load("bundled-mini").revision
    again = CaxtonEmbeddingFunction.build_from_config(cfg)
    np.testing.assert_allclose(again(["x"])[0], vec[0], atol=1e-6)
    # Opened again by name alone, the collection embeds with the function its
    # config names, rebuilt from that config (no default model downloaded).
    client.create_collection(name, embedding_function=ef).add(ids=["a", "b"], documents=DOCS[:2])
    col = client.get_collection(name)
    config_ef = col.configuration["embedding_function"]
    assert isinstance(config_ef, CaxtonEmbeddingFunction)
    assert config_ef.get_config() == cfg
    assert col.query(query_texts=["mild winters"], n_results=1)["documents"][0] == [DOCS[1]]


def test_queries_use_the_query_prompt_and_vectors_match_embed() -> None:
    model = caxton_models.load("bundled-mini")
    ef = CaxtonEmbeddingFunction("bundled-mini")
    np.testing.assert_allclose(np.array(ef(DOCS)), model.embed(DOCS), atol=1e-6)
    np.testing.assert_allclose(
        ef.embed_query(["q"])[0], model.embed(["q"], kind="query")[0], atol=1e-6
    )


def test_another_revision_is_refused(monkeypatch) -> None:
    """A collection embedded at one revision refuses vectors of another."""
    model = caxton_models.load("bundled-mini")
    monkeypatch.setattr(model, "revision", "a" * 40)
    stored = CaxtonEmbeddingFunction("bundled-mini", embedder=model)
    stored(["x"])
    assert stored.get_config()["revision"] == "a" * 40
    monkeypatch.setattr(model, "revision", "b" * 40)  # the model was updated since
    with pytest.raises(ConfigError, match="re-embed"):
        stored(["x"])
    again = CaxtonEmbeddingFunction.build_from_config(stored.get_config())
    assert again.expected_revision == "a" * 40


def test_the_model_cannot_change_under_a_collection() -> None:
    ef = CaxtonEmbeddingFunction("bundled-mini")
    with pytest.raises(ValueError, match="cannot change"):
        ef.validate_config_update({"model_name": "bundled-mini"}, {"model_name": "other"})


def test_sparse_function_gives_chromas_sparse_vectors() -> None:
    from chromadb.utils.embedding_functions import sparse_known_embedding_functions

    from caxton_models.integrations.chroma import CaxtonSparseEmbeddingFunction
    from caxton_models.keyword import Bm25Embedder

    assert sparse_known_embedding_functions["caxton-sparse"] is CaxtonSparseEmbeddingFunction
    ef = CaxtonSparseEmbeddingFunction("bm25", load_kwargs={"language": "english"})
    docs, query = ef(DOCS), ef.embed_query(["verifies bytes"])
    want = Bm25Embedder(language="english")
    for got, ref in zip(docs, want.embed(DOCS), strict=True):
        assert got.indices == ref.indices.tolist()
        np.testing.assert_allclose(got.values, ref.values, rtol=1e-6)
    assert query[0].indices == want.embed_query(["verifies bytes"])[0].indices.tolist()
    again = CaxtonSparseEmbeddingFunction.build_from_config(ef.get_config())
    assert [v.indices for v in again(DOCS)] == [v.indices for v in docs]
