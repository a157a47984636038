"""Chroma: ``CaxtonEmbeddingFunction``, registered as ``"caxton"`` so a
collection made with it is opened again with the same model
(``pip install caxton-models[chroma]``).

>>> import chromadb
>>> from caxton_models.integrations.chroma import CaxtonEmbeddingFunction
>>> col = chromadb.EphemeralClient().create_collection(
...     "docs", embedding_function=CaxtonEmbeddingFunction("all-MiniLM-L6-v2"))
>>> col.add(ids=["1"], documents=["caxton embeds text"]); col.query(query_texts=["embeds"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from chromadb.api.types import (
    Documents,
    EmbeddingFunction,
    Embeddings,
    Space,
    SparseEmbeddingFunction,
    SparseVectors,
)
from chromadb.base_types import SparseVector as ChromaSparseVector
from chromadb.utils.embedding_functions import (
    register_embedding_function,
    register_sparse_embedding_function,
)

from caxton_models.integrations._common import (
    BM25,
    DEFAULT_MODEL,
    LazyModel,
    LazySparseModel,
    check_texts,
)

if TYPE_CHECKING:
    from caxton_models.runtime.embedder import Embedder


@register_embedding_function
class CaxtonEmbeddingFunction(EmbeddingFunction[Documents]):
    """Documents embed with the model's document prompt, ``embed_query`` with
    its query prompt. The collection's config records the model and the
    revision of its first vectors; vectors of another revision (the model was
    updated since) are refused, not mixed in silently."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        load_kwargs: dict[str, Any] | None = None,
        revision: str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.model_name = model_name
        self.load_kwargs = dict(load_kwargs or {})
        self.expected_revision = revision
        self._model = LazyModel(model_name, self.load_kwargs, embedder)

    def _embed(self, input: Documents, kind: str) -> Embeddings:
        texts = check_texts(input, f"{type(self).__name__}")
        vecs = self._model.embed(texts, kind)
        got = self._model.get().revision
        if self.expected_revision is None:
            self.expected_revision = got  # the revision of this collection's vectors
        elif got and got != self.expected_revision:
            from caxton_models.errors import ConfigError

            raise ConfigError(
                f"this collection was embedded with {self.model_name}@{self.expected_revision}, "
                f"but the loaded model is at {got}: re-embed the collection (caxton model "
                "migrate) or pin that revision",
                key="revision",
            )
        return [np.asarray(v, dtype=np.float32) for v in vecs]

    def __call__(self, input: Documents) -> Embeddings:
        return self._embed(input, "passage")

    def embed_query(self, input: Documents) -> Embeddings:
        return self._embed(input, "query")

    @staticmethod
    def name() -> str:
        return "caxton"

    def default_space(self) -> Space:
        # sentence-transformers models are trained for cosine similarity.
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "load_kwargs": self.load_kwargs,
            "revision": self.expected_revision,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> CaxtonEmbeddingFunction:
        return CaxtonEmbeddingFunction(
            config.get("model_name", DEFAULT_MODEL),
            load_kwargs=config.get("load_kwargs") or {},
            revision=config.get("revision"),
        )

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        if new_config.get("model_name", old_config.get("model_name")) != old_config.get(
            "model_name"
        ):
            raise ValueError(
                "a collection's embedding model cannot change: its stored vectors would mix "
                "two spaces; create a new collection and re-embed"
            )


@register_sparse_embedding_function
class CaxtonSparseEmbeddingFunction(SparseEmbeddingFunction[Documents]):
    """Sparse vectors for Chroma's sparse index: ``model_name="bm25"``
    (keyword weights, ids equal to fastembed's) or a SPLADE model; queries get
    the query weighting (BM25) or prompt (SPLADE). Registered as
    ``"caxton-sparse"``."""

    def __init__(self, model_name: str = BM25, *, load_kwargs: dict[str, Any] | None = None):
        self.model_name = model_name
        self.load_kwargs = dict(load_kwargs or {})
        self._model = LazySparseModel(model_name, self.load_kwargs)

    def _embed(self, input: Documents, kind: str) -> SparseVectors:
        texts = check_texts(input, type(self).__name__)
        return [
            ChromaSparseVector(indices=v.indices.tolist(), values=v.values.tolist())
            for v in self._model.embed(texts, kind)
        ]

    def __call__(self, input: Documents) -> SparseVectors:
        return self._embed(input, "passage")

    def embed_query(self, input: Documents) -> SparseVectors:
        return self._embed(input, "query")

    @staticmethod
    def name() -> str:
        return "caxton-sparse"

    def get_config(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "load_kwargs": self.load_kwargs}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> CaxtonSparseEmbeddingFunction:
        return CaxtonSparseEmbeddingFunction(
            config.get("model_name", BM25), load_kwargs=config.get("load_kwargs") or {}
        )
