"""caxton-models: embedding models onto a machine, verified, and fast in-process."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, overload

from caxton_models import errors
from caxton_models._core import __version__, blake3_file, hash_files, sha256_file
from caxton_models.errors import CaxtonError

if TYPE_CHECKING:
    from caxton_models.acquire.hub import HubClient
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.config import Config
    from caxton_models.keyword import DegradedEmbedder
    from caxton_models.ops.migrate import MigrationReport, migrate
    from caxton_models.runtime.embedder import Embedder
    from caxton_models.runtime.reranker import Reranker
    from caxton_models.runtime.splade import SpladeEncoder

__all__ = [
    "BUNDLED_MODEL",
    "CaxtonError",
    "Embedder",
    "HubClient",
    "MigrationReport",
    "ModelManager",
    "Reranker",
    "SpladeEncoder",
    "__version__",
    "aload",
    "blake3_file",
    "errors",
    "hash_files",
    "load",
    "load_reranker",
    "load_sparse",
    "migrate",
    "sha256_file",
]


#: The model shipped inside the package (same embedding space as all-MiniLM-L6-v2).
BUNDLED_MODEL = "bundled-mini"


@overload
def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword"],
    **kwargs: Any,
) -> Embedder | DegradedEmbedder: ...
@overload
def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal[False] | None = None,
    **kwargs: Any,
) -> Embedder: ...
def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword", False] | None = None,
    **kwargs: Any,
) -> Embedder | DegradedEmbedder:
    """Loads an embedding model: a registry name, ``"bundled-mini"``, or a folder
    in the Hub's layout.

    A registry name goes through the cache: validated, downloaded if missing
    and allowed, repaired if a file is corrupt. If it cannot be had, the
    configured fallback chain is walked (``fallback_models``,
    ``fallback_strategy``; ``fallback=False`` disables it) and a warning names
    the model used; ``Embedder.model_id`` and ``.space`` always say which
    model made the vectors. ``config`` defaults to ``caxton.yaml`` plus the
    environment. ``kwargs`` go to :class:`~caxton_models.runtime.embedder.Embedder`
    (``threads``, ``quantize``, ``token_budget``, ``dimensions``/``truncate_dim``
    for Matryoshka truncation, ``prompts``, ``onnx_file`` to pick one of the
    repository's ONNX graphs, ...).

    The model is loaded once per process and options: a second ``load`` of the
    same model returns the same Embedder, kept under the limits of
    ``memory.loaded_models`` (``max_loaded_models``, ``memory_limit_gb``,
    ``eviction_policy``, ``idle_unload``, ``preload_models``).

    Degraded mode (``degraded="keyword"``, or ``degraded: keyword`` in
    caxton.yaml for registry names): when no model of the chain loads, a
    :class:`~caxton_models.keyword.DegradedEmbedder` comes back instead of
    ``ModelUnavailable``: ``degraded`` is True, ``space`` is
    ``"keyword:bm25"``, and ``embed()`` returns sparse BM25 vectors for a
    keyword index. Code that enables it in caxton.yaml should check
    ``emb.degraded`` (False on every Embedder); ``degraded=False`` turns it off.
    """
    from caxton_models._load import load as _load

    return _load(name_or_path, config=config, fallback=fallback, degraded=degraded, **kwargs)


@overload
async def aload(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword"],
    **kwargs: Any,
) -> Embedder | DegradedEmbedder: ...
@overload
async def aload(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal[False] | None = None,
    **kwargs: Any,
) -> Embedder: ...
async def aload(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword", False] | None = None,
    **kwargs: Any,
) -> Embedder | DegradedEmbedder:
    """:func:`load` for asyncio code: the cache check, any download and the
    session build run on a worker thread, so the event loop keeps running.
    Cancelling the awaiting task stops waiting; the load itself completes in
    the background (the model ends up cached and loaded). For a download you
    can cancel, await ``ModelManager.aensure`` first."""
    from caxton_models._load import aload as _aload

    return await _aload(name_or_path, config=config, fallback=fallback, degraded=degraded, **kwargs)


def load_reranker(
    name_or_path: str | os.PathLike[str], *, config: Config | None = None, **kwargs: Any
) -> Reranker:
    """Loads a cross-encoder reranker (``...ForSequenceClassification`` from
    safetensors: BERT, RoBERTa, XLM-R): a registry name (e.g.
    ``"ms-marco-MiniLM-L6-v2"``, ``"bge-reranker-v2-m3"``), a Hub repo id or
    a folder, through the same cache, download and verification as
    :func:`load`. ``kwargs`` go to
    :class:`~caxton_models.runtime.reranker.Reranker` (``max_length``,
    ``activation``, ``threads``, ...)."""
    from caxton_models._load_tasks import load_reranker as _load_reranker

    return _load_reranker(name_or_path, config=config, **kwargs)


def load_sparse(
    name_or_path: str | os.PathLike[str], *, config: Config | None = None, **kwargs: Any
) -> SpladeEncoder:
    """Loads a SPLADE sparse encoder (a sentence-transformers
    ``SparseEncoder`` folder, or a BERT masked-LM checkpoint) like
    :func:`load_reranker`; ``embed(texts, top_k=None)`` gives
    :class:`~caxton_models.sparse.SparseVector` s."""
    from caxton_models._load_tasks import load_sparse as _load_sparse

    return _load_sparse(name_or_path, config=config, **kwargs)


_LAZY = {
    # Importing these pulls numpy, onnxruntime or the HTTP layer: keep
    # `import caxton_models` light until one is needed.
    "Embedder": ("caxton_models.runtime.embedder", "Embedder"),
    "ModelManager": ("caxton_models.acquire.manager", "ModelManager"),
    "HubClient": ("caxton_models.acquire.hub", "HubClient"),
    "migrate": ("caxton_models.ops.migrate", "migrate"),
    "MigrationReport": ("caxton_models.ops.migrate", "MigrationReport"),
    "Reranker": ("caxton_models.runtime.reranker", "Reranker"),
    "SpladeEncoder": ("caxton_models.runtime.splade", "SpladeEncoder"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'caxton_models' has no attribute {name!r}")


def _register_prometheus() -> object:
    from caxton_models.prometheus import register

    return register()


# metrics sits below the prometheus integration: the package hands it the hook, so
# neither module imports the other's layer (prometheus_client is still imported only
# by the application).
from caxton_models import metrics as _metrics  # noqa: E402

_metrics.set_prometheus_hook(_register_prometheus)
