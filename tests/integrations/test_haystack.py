"""Haystack: the two components in a real indexing pipeline and a query
pipeline over the in-memory document store, sync and async; serialisation."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

# No telemetry: tests talk to nothing but 127.0.0.1 (read when the package loads).
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

pytest.importorskip("haystack", reason="the haystack extra (in the test extra)")
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

import caxton_models
from caxton_models.integrations.haystack import (
    CaxtonDocumentEmbedder,
    CaxtonTextEmbedder,
)

DOCS = [
    "Caxton downloads embedding models and verifies every byte with SHA-256.",
    "The weather in Lisbon is mild in winter.",
    "ONNX Runtime runs the model in-process on the CPU.",
]


def test_indexing_and_query_pipelines() -> None:
    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    indexing = Pipeline()
    indexing.add_component("embedder", CaxtonDocumentEmbedder("bundled-mini"))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    indexing.run({"embedder": {"documents": [Document(content=t) for t in DOCS]}})
    assert store.count_documents() == 3

    query = Pipeline()
    query.add_component("embedder", CaxtonTextEmbedder("bundled-mini"))
    query.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=1))
    query.connect("embedder.embedding", "retriever.query_embedding")
    out = query.run({"embedder": {"text": "How are downloads checked?"}})
    assert out["retriever"]["documents"][0].content == DOCS[0]


def test_run_and_run_async_agree_and_say_where_vectors_come_from() -> None:
    model = caxton_models.load("bundled-mini")
    text = CaxtonTextEmbedder("bundled-mini")
    text.warm_up()
    out = text.run("mild winters")
    np.testing.assert_allclose(
        out["embedding"], model.embed(["mild winters"], kind="query")[0], atol=1e-6
    )
    assert out["meta"]["model_id"] == model.model_id and "revision" in out["meta"]
    out_a = asyncio.run(text.run_async("mild winters"))
    np.testing.assert_allclose(out_a["embedding"], out["embedding"], atol=1e-6)

    docs_in = [Document(content=t) for t in DOCS]
    docs = CaxtonDocumentEmbedder("bundled-mini").run(docs_in)
    np.testing.assert_allclose(
        np.array([d.embedding for d in docs["documents"]]), model.embed(DOCS), atol=1e-6
    )
    assert all(d.embedding is None for d in docs_in)  # inputs untouched
    docs_a = asyncio.run(CaxtonDocumentEmbedder("bundled-mini").run_async(docs_in))
    assert [d.embedding for d in docs_a["documents"]] == [d.embedding for d in docs["documents"]]


def test_to_dict_from_dict_round_trip() -> None:
    comp = CaxtonTextEmbedder("bundled-mini", prefix="q: ", load_kwargs={"threads": 1})
    data = comp.to_dict()
    assert data["init_parameters"] == {
        "model": "bundled-mini",
        "prefix": "q: ",
        "suffix": "",
        "load_kwargs": {"threads": 1},
    }
    again = CaxtonTextEmbedder.from_dict(data)
    assert again.to_dict() == data
    docs = CaxtonDocumentEmbedder.from_dict(CaxtonDocumentEmbedder("bundled-mini").to_dict())
    assert docs.model == "bundled-mini"


def test_wrong_input_types_say_which_component_to_use() -> None:
    with pytest.raises(TypeError, match="CaxtonDocumentEmbedder"):
        CaxtonTextEmbedder("bundled-mini").run([Document(content="x")])  # type: ignore[arg-type,unused-ignore]
    with pytest.raises(TypeError, match="CaxtonTextEmbedder"):
        CaxtonDocumentEmbedder("bundled-mini").run("x")  # type: ignore[arg-type,unused-ignore]


def test_sparse_embedders_bm25_and_splade(shared_dir) -> None:
    """Sparse vectors as Haystack's SparseEmbedding, written to a document
    store through a pipeline: BM25 keyword weights and a SPLADE model."""
    from caxton_models.integrations.haystack import (
        CaxtonSparseDocumentEmbedder,
        CaxtonSparseTextEmbedder,
    )
    from caxton_models.keyword import Bm25Embedder

    store = InMemoryDocumentStore()
    indexing = Pipeline()
    indexing.add_component("embedder", CaxtonSparseDocumentEmbedder("bm25"))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    indexing.run({"embedder": {"documents": [Document(content=t) for t in DOCS]}})
    stored = {d.content: d.sparse_embedding for d in store.filter_documents()}
    want = Bm25Embedder().embed(DOCS)
    for text, vec in zip(DOCS, want, strict=True):
        got_doc = stored[text]
        assert got_doc is not None
        assert got_doc.indices == vec.indices.tolist()
        np.testing.assert_allclose(got_doc.values, vec.values, rtol=1e-6)
    q = CaxtonSparseTextEmbedder("bm25").run("verifies bytes")
    assert (
        q["sparse_embedding"].indices
        == Bm25Embedder().embed_query(["verifies bytes"])[0].indices.tolist()
    )
    assert q["meta"]["space"] == "keyword:bm25"

    folder = shared_dir / "fixtures" / "architectures" / "splade-bert"
    splade = CaxtonSparseDocumentEmbedder(str(folder)).run([Document(content=DOCS[0])])
    got = splade["documents"][0].sparse_embedding
    ref = caxton_models.load_sparse(folder).embed([DOCS[0]])[0]
    assert got.indices == ref.indices.tolist()
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-6)
