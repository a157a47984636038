"""Haystack: ``CaxtonTextEmbedder`` (queries) and ``CaxtonDocumentEmbedder``
(documents) components (``pip install caxton-models[haystack]``).

>>> from haystack import Document
>>> from caxton_models.integrations.haystack import CaxtonDocumentEmbedder
>>> docs = CaxtonDocumentEmbedder("all-MiniLM-L6-v2").run([Document(content="caxton")])
>>> docs["documents"][0].embedding[:3], docs["meta"]["revision"]
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.dataclasses import SparseEmbedding

from caxton_models.integrations._common import (
    BM25,
    DEFAULT_MODEL,
    LazyModel,
    LazySparseModel,
    as_lists,
)


class _Component:
    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        prefix: str = "",
        suffix: str = "",
        load_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.suffix = suffix
        self.load_kwargs = dict(load_kwargs or {})
        self._model = LazyModel(model, self.load_kwargs)

    def warm_up(self) -> None:
        """Loads the model (downloads and verifies it first if it must)."""
        self._model.get()

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            model=self.model,
            prefix=self.prefix,
            suffix=self.suffix,
            load_kwargs=self.load_kwargs,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return default_from_dict(cls, data)

    def _meta(self) -> dict[str, Any]:
        return self._model.provenance()

    def _wrap(self, text: str) -> str:
        return f"{self.prefix}{text}{self.suffix}"


@component
class CaxtonTextEmbedder(_Component):
    """Embeds one query string with the model's query prompt; ``meta`` says
    which model and revision made the vector."""

    def _text(self, text: Any) -> str:
        if not isinstance(text, str):
            raise TypeError(
                f"CaxtonTextEmbedder takes a str, got {type(text).__name__}: "
                "embed Documents with CaxtonDocumentEmbedder"
            )
        return self._wrap(text)

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        vec = self._model.embed([self._text(text)], "query")
        return {"embedding": as_lists(vec)[0], "meta": self._meta()}

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    async def run_async(self, text: str) -> dict[str, Any]:
        vec = await self._model.aembed([self._text(text)], "query")
        return {"embedding": as_lists(vec)[0], "meta": self._meta()}


@component
class CaxtonDocumentEmbedder(_Component):
    """Embeds each Document's content with the model's document prompt and
    returns new Documents carrying their embeddings (the inputs are left
    as they were); ``meta`` says which model and revision made them."""

    def _texts(self, documents: Any) -> list[str]:
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise TypeError(
                "CaxtonDocumentEmbedder takes a list of Documents: embed a str with "
                "CaxtonTextEmbedder"
            )
        return [self._wrap(d.content or "") for d in documents]

    @staticmethod
    def _with(documents: list[Document], vectors: list[list[float]]) -> list[Document]:
        return [replace(d, embedding=v) for d, v in zip(documents, vectors, strict=True)]

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        texts = self._texts(documents)
        vecs = as_lists(self._model.embed(texts, "passage")) if texts else []
        return {"documents": self._with(documents, vecs), "meta": self._meta()}

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        texts = self._texts(documents)
        vecs = as_lists(await self._model.aembed(texts, "passage")) if texts else []
        return {"documents": self._with(documents, vecs), "meta": self._meta()}


class _SparseComponent(_Component):
    """Sparse vectors: ``model="bm25"`` (keyword weights; ``load_kwargs`` such
    as ``language``) or a SPLADE model name or folder."""

    def __init__(
        self,
        model: str = BM25,
        *,
        prefix: str = "",
        suffix: str = "",
        load_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, prefix=prefix, suffix=suffix, load_kwargs=load_kwargs)
        self._sparse = LazySparseModel(model, self.load_kwargs)

    def warm_up(self) -> None:
        self._sparse.get()

    def _meta(self) -> dict[str, Any]:
        return self._sparse.provenance()

    @staticmethod
    def _haystack(vec: Any) -> SparseEmbedding:
        return SparseEmbedding(indices=vec.indices.tolist(), values=vec.values.tolist())


@component
class CaxtonSparseTextEmbedder(_SparseComponent):
    """A query's sparse vector (BM25 query weights, or SPLADE with the query
    prompt), as Haystack's ``SparseEmbedding``."""

    @component.output_types(sparse_embedding=SparseEmbedding, meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(
                f"CaxtonSparseTextEmbedder takes a str, got {type(text).__name__}: embed "
                "Documents with CaxtonSparseDocumentEmbedder"
            )
        vec = self._sparse.embed([self._wrap(text)], "query")[0]
        return {"sparse_embedding": self._haystack(vec), "meta": self._meta()}


@component
class CaxtonSparseDocumentEmbedder(_SparseComponent):
    """Each Document's content as a sparse vector (``sparse_embedding``), in
    new Documents; the inputs are left as they were."""

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise TypeError(
                "CaxtonSparseDocumentEmbedder takes a list of Documents: embed a str with "
                "CaxtonSparseTextEmbedder"
            )
        texts = [self._wrap(d.content or "") for d in documents]
        vecs = self._sparse.embed(texts, "passage") if texts else []
        out = [
            replace(d, sparse_embedding=self._haystack(v))
            for d, v in zip(documents, vecs, strict=True)
        ]
        return {"documents": out, "meta": self._meta()}
