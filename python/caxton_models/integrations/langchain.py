"""LangChain: ``CaxtonEmbeddings`` implements
``langchain_core.embeddings.Embeddings`` (``pip install caxton-models[langchain]``).

>>> from caxton_models.integrations.langchain import CaxtonEmbeddings
>>> emb = CaxtonEmbeddings("all-MiniLM-L6-v2")
>>> emb.embed_query("what is caxton?")[:3]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from caxton_models.integrations._common import DEFAULT_MODEL, LazyModel, as_lists, check_texts

if TYPE_CHECKING:
    from caxton_models.runtime.embedder import Embedder


class CaxtonEmbeddings(Embeddings):
    """Documents embed with the model's document prompt, queries with its
    query prompt; the async methods run on caxton's own executor
    (``Embedder.aembed``), not a thread per call. ``load_kwargs`` go to
    :func:`caxton_models.load` (``threads``, ``quantize``, ``config``, ...)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        embedder: Embedder | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._model = LazyModel(model, load_kwargs, embedder)

    @property
    def model(self) -> str:
        return self._model.model

    @property
    def provenance(self) -> dict[str, Any]:
        """Which model and revision made the vectors."""
        return self._model.provenance()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return as_lists(self._model.embed(check_texts(texts, "embed_documents"), "passage"))

    def embed_query(self, text: str) -> list[float]:
        return as_lists(self._model.embed([text], "query"))[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        vecs = await self._model.aembed(check_texts(texts, "aembed_documents"), "passage")
        return as_lists(vecs)

    async def aembed_query(self, text: str) -> list[float]:
        return as_lists(await self._model.aembed([text], "query"))[0]

    def __repr__(self) -> str:
        return f"CaxtonEmbeddings(model={self.model!r})"
