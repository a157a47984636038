"""LlamaIndex: ``CaxtonEmbedding`` implements ``BaseEmbedding``
(``pip install caxton-models[llama-index]``).

>>> from llama_index.core import Settings, VectorStoreIndex, Document
>>> from caxton_models.integrations.llama_index import CaxtonEmbedding
>>> Settings.embed_model = CaxtonEmbedding("all-MiniLM-L6-v2")
>>> index = VectorStoreIndex.from_documents([Document(text="caxton embeds text")])
>>> index.as_retriever().retrieve("what embeds text?")
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr

from caxton_models.integrations._common import DEFAULT_MODEL, LazyModel, as_lists, check_texts


class CaxtonEmbedding(BaseEmbedding):
    """Queries embed with the model's query prompt, texts with its document
    prompt; batches go to caxton whole (its batcher sorts by length)."""

    load_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Options for caxton_models.load()."
    )
    _model: LazyModel = PrivateAttr()

    def __init__(self, model_name: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        embedder = kwargs.pop("embedder", None)
        super().__init__(model_name=model_name, **kwargs)
        self._model = LazyModel(model_name, self.load_kwargs, embedder)

    @classmethod
    def class_name(cls) -> str:
        return "CaxtonEmbedding"

    @property
    def provenance(self) -> dict[str, Any]:
        """Which model and revision made the vectors."""
        return self._model.provenance()

    def _get_query_embedding(self, query: str) -> Embedding:
        return as_lists(self._model.embed([query], "query"))[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return as_lists(await self._model.aembed([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return as_lists(self._model.embed([text], "passage"))[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return as_lists(await self._model.aembed([text], "passage"))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return as_lists(self._model.embed(check_texts(texts, "get_text_embeddings"), "passage"))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        vecs = await self._model.aembed(check_texts(texts, "aget_text_embeddings"), "passage")
        return as_lists(vecs)
