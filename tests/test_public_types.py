"""The public API's types, as a user's type checker sees them.

``mypy`` (the test command runs it on tests/) checks every ``assert_type``
here statically: a signature that loses its type (a return that becomes
``Any``, an overload that stops matching) fails the test command. pytest runs
the same calls, so the declared types are also what comes back at runtime.
``Embedder.encode`` is ``Any`` by design, as ``SentenceTransformer.encode``
returns a vector, a matrix or a list by its arguments; its runtime shapes are
checked here instead.

The integrations: their classes and caxton's own methods are asserted.
What the frameworks type (Haystack's ``run`` under its
``component.output_types``, LlamaIndex's inherited ``get_text_embedding``) is
checked at runtime only: without the test extra installed mypy sees those as
``Any``, and this file must type-check in both environments.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

import caxton_models
from caxton_models import Embedder, ModelManager, Reranker, SpladeEncoder
from caxton_models.acquire.validate import ValidationReport
from caxton_models.keyword import DegradedEmbedder
from caxton_models.registry import ModelSpec
from caxton_models.sparse import SparseVector
from caxton_models.store import InstalledModel
from tests.support.fakehub import make_config

FloatArray = npt.NDArray[np.float32]
TEXTS = ["a first sentence", "and a second one"]


def test_load_and_the_embedder() -> None:
    emb = caxton_models.load(caxton_models.BUNDLED_MODEL)
    assert_type(emb, Embedder)
    assert isinstance(emb, Embedder)
    vectors = assert_type(emb.embed(TEXTS), FloatArray)
    assert vectors.dtype == np.float32 and vectors.shape == (2, emb.dimensions)
    assert_type(emb.embed(TEXTS[0], kind="query"), FloatArray)
    assert_type(emb.dimensions, int)
    assert_type(emb.model_id, str)
    chunks = list(emb.embed_iter(iter(TEXTS), chunk_size=1))
    assert_type(chunks, list[FloatArray])
    assert len(chunks) == 2

    one = emb.encode(TEXTS[0])
    assert_type(one, Any)
    assert one.shape == (emb.dimensions,) and one.dtype == np.float32
    many = emb.encode(TEXTS, precision="int8", normalize_embeddings=True)
    assert many.shape == (2, emb.dimensions) and many.dtype == np.int8
    assert isinstance(emb.encode(TEXTS, convert_to_numpy=False), list)


def test_load_degraded_may_be_keyword_only() -> None:
    emb = caxton_models.load(caxton_models.BUNDLED_MODEL, degraded="keyword")
    assert_type(emb, Embedder | DegradedEmbedder)
    assert isinstance(emb, Embedder | DegradedEmbedder)


def test_aload_and_aembed() -> None:
    async def run() -> FloatArray:
        emb = await caxton_models.aload(caxton_models.BUNDLED_MODEL)
        assert_type(emb, Embedder)
        return await emb.aembed(TEXTS)

    out = asyncio.run(run())
    assert_type(out, FloatArray)
    assert out.shape[0] == 2


def test_the_other_tasks(architectures_dir: Path) -> None:
    ranker = caxton_models.load_reranker(architectures_dir / "rerank-bert")
    assert_type(ranker, Reranker)
    scores = assert_type(ranker.predict([("a query", "a document")]), FloatArray)
    assert scores.shape[0] == 1
    sparse = caxton_models.load_sparse(architectures_dir / "splade-bert")
    assert_type(sparse, SpladeEncoder)
    vecs = sparse.embed(TEXTS)
    assert_type(vecs, list[SparseVector])
    assert len(vecs) == 2 and isinstance(vecs[0], SparseVector)


def test_model_manager_calls(tmp_path: Path, minilm_dir: Path) -> None:
    mgr = ModelManager(make_config(tmp_path, offline="1"))
    spec = assert_type(mgr.spec("all-MiniLM-L6-v2"), ModelSpec)
    assert spec.dimensions == 384
    installed = assert_type(mgr.install_from_dir("all-MiniLM-L6-v2", minilm_dir), InstalledModel)
    assert installed.status == "verified"
    path, same = assert_type(mgr.ensure("all-MiniLM-L6-v2"), tuple[Path, ModelSpec])
    assert path.is_dir() and same.name == spec.name
    assert_type(mgr.installed(), list[InstalledModel])
    report = assert_type(mgr.verify("all-MiniLM-L6-v2"), ValidationReport)
    assert report.ok
    assert_type(mgr.gc(dry_run=True), dict[str, list[str]])


def test_integrations() -> None:
    from caxton_models.integrations.chroma import CaxtonEmbeddingFunction
    from caxton_models.integrations.haystack import CaxtonTextEmbedder
    from caxton_models.integrations.langchain import CaxtonEmbeddings
    from caxton_models.integrations.llama_index import CaxtonEmbedding

    lc = CaxtonEmbeddings(caxton_models.BUNDLED_MODEL)
    docs = assert_type(lc.embed_documents(TEXTS), list[list[float]])
    query = assert_type(lc.embed_query(TEXTS[0]), list[float])
    assert len(docs) == 2 and len(query) == len(docs[0])
    assert_type(asyncio.run(lc.aembed_query(TEXTS[0])), list[float])
    assert_type(lc.provenance, dict[str, Any])

    li = assert_type(CaxtonEmbedding(caxton_models.BUNDLED_MODEL), CaxtonEmbedding)
    assert_type(li.provenance, dict[str, Any])
    assert len(li.get_text_embedding(TEXTS[0])) == len(query)

    hs = assert_type(CaxtonTextEmbedder(caxton_models.BUNDLED_MODEL), CaxtonTextEmbedder)
    hs.warm_up()
    result = hs.run(TEXTS[0])
    assert len(result["embedding"]) == len(query)

    ef = CaxtonEmbeddingFunction(caxton_models.BUNDLED_MODEL)
    vectors = ef(TEXTS)
    assert len(vectors) == 2 and len(vectors[0]) == len(query)
    assert_type(ef.get_config(), dict[str, Any])
    rebuilt = CaxtonEmbeddingFunction.build_from_config(ef.get_config())
    assert_type(rebuilt, CaxtonEmbeddingFunction)
