"""What every adapter shares: the model, loaded once on first use through
:func:`caxton_models.load`, and where its vectors come from."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from caxton_models.runtime.embedder import Embedder

#: The registry's default model (the fallback chain ends in the bundled one).
DEFAULT_MODEL = "all-MiniLM-L6-v2"


class LazyModel:
    """A model name and its ``load()`` options; the Embedder is loaded on the
    first call (thread-safe) or handed in ready-made. Adapters are often built
    at import time of an application, long before the first vector."""

    # No defaults here: each adapter's own signature holds them.
    def __init__(
        self, model: str, load_kwargs: Mapping[str, Any] | None, embedder: Embedder | None = None
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a model name or folder (str), got {model!r}")
        self.model = model
        self.load_kwargs = dict(load_kwargs or {})
        self._embedder = embedder
        self._lock = threading.Lock()

    def get(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    from caxton_models._load import load

                    self._embedder = load(self.model, **self.load_kwargs)
        return self._embedder

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def provenance(self) -> dict[str, Any]:
        """Which model and revision made the vectors (loads the model)."""
        e = self.get()
        return {
            "model": self.model,
            "model_id": e.model_id,
            "revision": e.revision,
            "space": e.space,
            "dimensions": e.dimensions,
        }

    def embed(self, texts: Sequence[str], kind: str) -> npt.NDArray[np.float32]:
        return self.get().embed(list(texts), kind=kind)  # type: ignore[arg-type]

    async def aembed(self, texts: Sequence[str], kind: str) -> npt.NDArray[np.float32]:
        import asyncio

        # The first load may read and verify files: never on the event loop.
        embedder = self._embedder
        if embedder is None:
            embedder = await asyncio.to_thread(self.get)
        return await embedder.aembed(list(texts), kind=kind)  # type: ignore[arg-type]


def as_lists(vectors: npt.NDArray[np.float32]) -> list[list[float]]:
    """Python floats, as the frameworks' type hints ask (``tolist`` converts
    in C: no per-element Python loop)."""
    rows: list[list[float]] = vectors.tolist()
    return rows


def check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} takes a list of strings, got one str: wrap it in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{what}: item {i} is {type(t).__name__}, expected str")
    return out


#: The model name that selects BM25 keyword vectors instead of a SPLADE model.
BM25 = "bm25"


class LazySparseModel:
    """The sparse counterpart of :class:`LazyModel`: ``"bm25"`` for keyword
    vectors (``Bm25Embedder``, options such as ``language``), else a SPLADE
    model through :func:`caxton_models.load_sparse`. Loaded on first use."""

    def __init__(self, model: str = BM25, load_kwargs: Mapping[str, Any] | None = None) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be 'bm25' or a SPLADE model name or folder, got {model!r}")
        self.model = model
        self.load_kwargs = dict(load_kwargs or {})
        self._encoder: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    if self.model == BM25:
                        from caxton_models.keyword import Bm25Embedder

                        self._encoder = Bm25Embedder(**self.load_kwargs)
                    else:
                        from caxton_models._load_tasks import load_sparse

                        self._encoder = load_sparse(self.model, **self.load_kwargs)
        return self._encoder

    def embed(self, texts: Sequence[str], kind: str) -> list[Any]:
        """``SparseVector`` s, queries with the query weighting or prompt."""
        return list(self.get().embed(list(texts), kind=kind))

    def provenance(self) -> dict[str, Any]:
        enc = self.get()
        return {
            "model": self.model,
            "model_id": getattr(enc, "model_id", "bm25"),
            "revision": getattr(enc, "revision", None),
            "space": getattr(enc, "space", "keyword:bm25"),
        }
