"""LlamaIndex: CaxtonEmbedding through a real VectorStoreIndex (in-memory),
sync and async, on the bundled model (offline)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("llama_index.core", reason="the llama-index extra (in the test extra)")
from llama_index.core import Document, Settings, VectorStoreIndex

import caxton_models
from caxton_models.integrations.llama_index import CaxtonEmbedding

DOCS = [
    "Caxton downloads embedding models and verifies every byte with SHA-256.",
    "The weather in Lisbon is mild in winter.",
    "ONNX Runtime runs the model in-process on the CPU.",
]


def test_a_vector_store_index_retrieves_with_caxton_vectors(monkeypatch) -> None:
    monkeypatch.setattr(Settings, "_llm", None, raising=False)  # no LLM: retrieval only
    embed = CaxtonEmbedding("bundled-mini", embed_batch_size=2)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=embed)
    hits = index.as_retriever(similarity_top_k=1).retrieve("How are downloads checked?")
    assert hits[0].node.get_content() == DOCS[0]
    hits = asyncio.run(index.as_retriever(similarity_top_k=1).aretrieve("mild winters"))
    assert hits[0].node.get_content() == DOCS[1]


def test_methods_agree_with_embed() -> None:
    embed = CaxtonEmbedding("bundled-mini")
    model = caxton_models.load("bundled-mini")
    np.testing.assert_allclose(
        embed.get_query_embedding("q"), model.embed(["q"], kind="query")[0], atol=1e-6
    )
    batch = embed.get_text_embedding_batch(DOCS)
    np.testing.assert_allclose(np.array(batch), model.embed(DOCS), atol=1e-6)
    got = asyncio.run(embed.aget_text_embedding_batch(DOCS))
    np.testing.assert_allclose(np.array(got), model.embed(DOCS), atol=1e-6)
    got_q = asyncio.run(embed.aget_query_embedding("q"))
    np.testing.assert_allclose(got_q, model.embed(["q"], kind="query")[0], atol=1e-6)
    assert embed.provenance["model_id"] == model.model_id
    assert CaxtonEmbedding.class_name() == "CaxtonEmbedding"
