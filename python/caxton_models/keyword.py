"""BM25 keyword vectors, and the fallback chain's last step: keyword-only search.

:class:`Bm25Embedder` turns texts into sparse BM25 vectors in the Rust core
(all cores, without the GIL). Ids and document weights are the ones fastembed's
``Bm25("Qdrant/bm25")`` writes (same tokenizer, Snowball stemmer, NLTK stop
words, ``abs(mmh3.hash(term))`` ids, same defaults), so either library can fill
and query one Qdrant sparse vector with ``modifier: idf``::

    bm25 = Bm25Embedder("english")
    docs = bm25.embed(["Fast JSON parsing", "A YAML loader"])  # list[SparseVector]
    query = bm25.embed_query("json parser")[0]
    scores = [query.dot(d) for d in docs]  # BM25 without IDF; Qdrant adds it

:class:`DegradedEmbedder` is what ``caxton_models.load`` returns when no dense
model of the chain can be had and degraded mode is on (``degraded: keyword``
in caxton.yaml, or ``load(..., degraded="keyword")``). It says so
(``degraded is True``, ``space == "keyword:bm25"``) and its ``embed()``
returns sparse vectors, never a dense array: keyword vectors go into a
keyword index, not next to embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TypeVar

from caxton_models._core import Bm25
from caxton_models.sparse import SparseBatch, SparseVector, unchecked_batch

__all__ = ["KEYWORD_SPACE", "Bm25Embedder", "DegradedEmbedder"]

#: The ``space`` of BM25 keyword vectors: never comparable with a dense space.
KEYWORD_SPACE = "keyword:bm25"

Kind = Literal["query", "passage"]
T = TypeVar("T")


def _text_list(texts: str | Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


def _utf8(texts: list[str]) -> list[str]:
    """``texts`` as the core can take them: a lone surrogate (valid in a Python
    str, not in UTF-8) becomes "?", which like the surrogate is no word
    character, so the terms stay the ones fastembed finds."""
    return [t.encode("utf-8", "replace").decode("utf-8") for t in texts]


def _call(fn: Callable[[list[str]], T], texts: list[str]) -> T:
    try:
        return fn(texts)
    except UnicodeEncodeError:
        return fn(_utf8(texts))


class Bm25Embedder:
    """BM25 sparse vectors, fastembed-compatible.

    ``language``: one of :meth:`languages` (Snowball stemmer and NLTK stop
    words); any name with ``stem=False`` (no stemming, no stop words).
    ``k1``, ``b``, ``avg_len`` (mean terms per document of your corpus, see
    :meth:`average_length`) shape document weights; queries get unit
    weights. ``stopwords`` replaces the language's list (an empty list
    disables filtering); tokens longer than ``token_max_length`` characters
    are dropped.
    """

    space: str = KEYWORD_SPACE
    model_id: str = KEYWORD_SPACE
    #: True only for the fallback chain's keyword step (:class:`DegradedEmbedder`).
    degraded: bool = False

    def __init__(
        self,
        language: str = "english",
        *,
        k1: float = 1.2,
        b: float = 0.75,
        avg_len: float = 256.0,
        stem: bool = True,
        stopwords: Iterable[str] | None = None,
        token_max_length: int = 40,
    ) -> None:
        words = None if stopwords is None else _text_list(stopwords)
        self._core = Bm25(
            language,
            stem=stem,
            stopwords=words,
            token_max_length=token_max_length,
            k1=k1,
            b=b,
            avg_len=avg_len,
        )

    @staticmethod
    def languages() -> list[str]:
        """Languages with a stemmer and stop words (fastembed's list)."""
        return Bm25.languages()

    @staticmethod
    def token_id(term: str) -> int:
        """A term's index: ``abs(mmh3.hash(term))``."""
        return Bm25.token_id(term)

    @property
    def language(self) -> str:
        return self._core.language

    @property
    def k1(self) -> float:
        return self._core.k1

    @property
    def b(self) -> float:
        return self._core.b

    @property
    def avg_len(self) -> float:
        return self._core.avg_len

    @property
    def stopwords(self) -> list[str]:
        return self._core.stopwords

    def embed_batch(self, texts: str | Iterable[str], *, kind: Kind = "passage") -> SparseBatch:
        """Vectors for ``texts`` as one CSR :class:`SparseBatch` (the fastest form)."""
        items = _text_list(texts)
        if kind == "passage":
            arrays = _call(self._core.embed_documents, items)
        elif kind == "query":
            arrays = _call(self._core.embed_queries, items)
        else:
            raise ValueError(f"kind must be 'passage' or 'query', got {kind!r}")
        # The core's rows hold the invariants already (sorted, unique, in range).
        return unchecked_batch(*arrays)

    def embed(self, texts: str | Iterable[str], *, kind: Kind = "passage") -> list[SparseVector]:
        """One :class:`SparseVector` per text: BM25 document weights, or unit
        weights with ``kind="query"``."""
        return self.embed_batch(texts, kind=kind).to_vectors()

    def embed_query(self, texts: str | Iterable[str]) -> list[SparseVector]:
        """Query vectors: each distinct term once, weight 1."""
        return self.embed(texts, kind="query")

    def terms(self, texts: str | Iterable[str]) -> list[list[str]]:
        """The analysed terms (stemmed, without stop words) that the ids hash."""
        return _call(self._core.terms, _text_list(texts))

    def average_length(self, texts: str | Iterable[str]) -> float:
        """Mean terms per text: the ``avg_len`` that fits a corpus."""
        return _call(self._core.average_length, _text_list(texts))

    def close(self) -> None:
        """Nothing to release (no session, no threads); here so code that
        closes what ``load()`` returned works in degraded mode too."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(language={self.language!r}, k1={self.k1}, "
            f"b={self.b}, avg_len={self.avg_len}, space={self.space!r})"
        )


class DegradedEmbedder(Bm25Embedder):
    """The keyword step of the fallback chain: BM25 vectors in place of the
    model ``requested``, which could not be loaded (``tried`` says why)."""

    degraded = True

    def __init__(self, requested: str, tried: Sequence[str], *, language: str = "english") -> None:
        super().__init__(language)
        self.requested = requested
        self.tried = list(tried)

    def __repr__(self) -> str:
        return (
            f"DegradedEmbedder(requested={self.requested!r}, space={self.space!r}, "
            f"language={self.language!r})"
        )
