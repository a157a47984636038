"""LangChain's own standard suites, unchanged, against CaxtonEmbeddings on
the bundled model (offline), and what the suites do not check: prompts,
provenance, agreement with Embedder.embed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="the langchain extra (in the test extra)")
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

import caxton_models
from caxton_models.integrations.langchain import CaxtonEmbeddings

PARAMS = {"model": "bundled-mini"}


class _Caxton:
    """What both standard suites are told: our class, on the bundled model."""

    @property
    def embeddings_class(self) -> type[CaxtonEmbeddings]:
        return CaxtonEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return PARAMS


class TestCaxtonEmbeddingsUnit(_Caxton, EmbeddingsUnitTests):
    pass


class TestCaxtonEmbeddingsIntegration(_Caxton, EmbeddingsIntegrationTests):
    pass


def test_vectors_are_the_models_own() -> None:
    emb = CaxtonEmbeddings("bundled-mini")
    model = caxton_models.load("bundled-mini")
    docs = ["caxton keeps models verified", "a second document"]
    np.testing.assert_allclose(np.array(emb.embed_documents(docs)), model.embed(docs), atol=1e-6)
    np.testing.assert_allclose(
        emb.embed_query("which model?"), model.embed(["which model?"], kind="query")[0], atol=1e-6
    )
    got = asyncio.run(emb.aembed_documents(docs))
    np.testing.assert_allclose(np.array(got), model.embed(docs), atol=1e-6)
    assert emb.provenance["model_id"] == model.model_id
    assert emb.provenance["dimensions"] == len(got[0])


def test_queries_get_the_query_prompt() -> None:
    """A model with distinct query/passage prompts (as e5-style registry
    entries have) embeds queries and documents differently through LangChain."""
    from caxton_models._bundled import bundled_dir
    from caxton_models.runtime.embedder import Embedder

    model = Embedder.from_dir(bundled_dir(), prompts={"query": "query: ", "passage": "passage: "})
    emb = CaxtonEmbeddings(embedder=model)
    q = np.array(emb.embed_query("caxton"))
    d = np.array(emb.embed_documents(["caxton"])[0])
    assert not np.allclose(q, d)
    np.testing.assert_allclose(q, model.embed(["caxton"], kind="query")[0], atol=1e-6)
    np.testing.assert_allclose(d, model.embed(["caxton"], kind="passage")[0], atol=1e-6)


def test_a_str_is_refused_with_what_to_do() -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        CaxtonEmbeddings("bundled-mini").embed_documents("one string")  # type: ignore[arg-type,unused-ignore]
