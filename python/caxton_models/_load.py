"""``caxton_models.load``: a name or folder, resolved (and fetched where
allowed), through the fallback chain, to one loaded model per process.

Every load goes through one process-wide loaded-model manager
(:class:`~caxton_models.runtime.loaded.ModelMemoryManager`, configured by
``memory.loaded_models``): loading the same model with the same options twice
returns the same Embedder (one ONNX Runtime session), models past the limits
are dropped least recently used first, idle ones are unloaded, and the load
time and memory of each are recorded in :mod:`caxton_models.metrics`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Literal, overload

from caxton_models.errors import ModelNotFound
from caxton_models.resolve import (
    BUNDLED_MODEL,
    Resolved,
    check_folder_task,
    check_task,
    is_registry_name,
    resolve,
)

if TYPE_CHECKING:
    from caxton_models.config import Config, EmbeddingConfig, LoadedModelsConfig
    from caxton_models.keyword import DegradedEmbedder
    from caxton_models.runtime.embedder import Embedder
    from caxton_models.runtime.loaded import ModelMemoryManager

log = logging.getLogger("caxton_models")

#: One loaded-model manager per ``memory.loaded_models`` setting: the one
#: caxton.yaml gives (``None``), and each an explicit ``config`` gives. Configs
#: with the same limits share a manager, so a model is loaded once for both.
_managers: dict[LoadedModelsConfig, ModelMemoryManager] = {}
_default_limits: LoadedModelsConfig | None = None
_loaded_lock = threading.Lock()
#: caxton.yaml's ``embedding:`` block, read with the loaded-model limits.
_embedding: EmbeddingConfig | None = None


def loaded_models(config: Config | None = None) -> ModelMemoryManager:
    """The loaded-model manager under ``config``'s ``memory.loaded_models``
    (else caxton.yaml's, read when it is first needed); created, and its
    ``preload_models`` loaded, on first use."""
    global _default_limits, _embedding
    with _loaded_lock:
        if config is None and _default_limits is not None:
            limits: LoadedModelsConfig = _default_limits
        elif config is not None:
            limits = config.loaded_models
        else:
            from caxton_models.config import load_config

            found = load_config()
            _default_limits, _embedding, limits = (
                found.loaded_models,
                found.embedding,
                found.loaded_models,
            )
        manager = _managers.get(limits)
        if manager is not None:
            return manager
        from caxton_models.runtime.loaded import ModelMemoryManager

        manager = _managers[limits] = ModelMemoryManager.from_config(limits)
    for name in limits.preload_models:  # outside the lock: each goes through load()
        try:
            load(name, config=config)
        except Exception as e:  # a preload that fails must not break the load asked for
            log.warning("preloading %s failed: %s", name, e)
    return manager


def reset() -> None:
    """Drop every loaded model and forget the configuration (the next load
    reads caxton.yaml again); for tests and for applications that reload."""
    global _default_limits, _embedding
    from caxton_models.acquire import manager

    with _loaded_lock:
        old = list(_managers.values())
        _managers.clear()
        _default_limits = _embedding = None
    for m in old:
        m.close()
    manager.reset_default()


def _key(resolved: Resolved, options: dict[str, Any]) -> str:
    # The folder and the revision installed in it name the exact files (an
    # update or a rollback swaps them under the same path); the weights file
    # and the options change the session.
    return f"{_revision_key(resolved)}|{resolved.weights}|{sorted(options.items())!r}"


def _revision_key(resolved: Resolved) -> str:
    return f"{resolved.folder}|{resolved.commit}|{resolved.content}"


def embedder_defaults(cfg: EmbeddingConfig) -> dict[str, Any]:
    """The Embedder keywords the ``embedding:`` block sets: ``batch_size``
    rows per model call, ``parallel_batches`` calls at once ('auto': the
    Embedder's one per core)."""
    out: dict[str, Any] = {"max_batch_size": cfg.batch_size}
    if cfg.parallel_batches is not None:
        out["parallel_batches"] = cfg.parallel_batches
    return out


def opener(config: Config | None = None, **options: Any) -> Any:
    """A function from a resolved model to its loaded Embedder, through the
    loaded-model manager of ``config`` (else caxton.yaml). Keywords win over
    the model's registry options, which win over ``config``'s (else
    caxton.yaml's) ``embedding:``."""

    def open_model(resolved: Resolved) -> Embedder:

        check_task(resolved.spec, "embedding")  # a reranker's folder would embed, wrongly
        if resolved.spec is None:
            check_folder_task(resolved.folder, "embedding")

        manager = loaded_models(config)
        emb_cfg = config.embedding if config is not None else _embedding
        defaults = embedder_defaults(emb_cfg) if emb_cfg is not None else {}
        kwargs = {**defaults, **resolved.options, **options}
        for _ in range(2):
            now = resolved.with_revision()
            key = _key(now, kwargs)
            emb: Embedder = manager.get(key, functools.partial(_build, now, kwargs))
            if emb.revision == now.commit or now.commit is None:
                _drop_other_revisions(manager, now)
                return emb
            # The folder switched revision while it loaded: that Embedder
            # must not stand for the commit the key names.
            manager.unload(key)
        return emb

    return open_model


def _build(resolved: Resolved, kwargs: dict[str, Any]) -> Embedder:
    from caxton_models.runtime.embedder import Embedder

    if resolved.weights is None:
        return Embedder.from_dir(resolved.folder, **kwargs)
    from caxton_models.runtime._loadfail import safetensors_config
    from caxton_models.runtime._modelconfig import ModelConfig

    config = safetensors_config(ModelConfig.read(resolved.folder))
    if config is None:
        raise ModelNotFound(
            f"{resolved.folder} has no {resolved.weights} to run from", path=str(resolved.folder)
        )
    return Embedder(config, **kwargs)


def _drop_other_revisions(manager: ModelMemoryManager, resolved: Resolved) -> None:
    """Unload what this folder held before an update or rollback, whatever
    its options: those sessions no longer serve the files installed there."""
    folder, current = f"{resolved.folder}|", f"{_revision_key(resolved)}|"
    for other in manager.loaded():
        if other.startswith(folder) and not other.startswith(current):
            manager.unload(other)


@overload
def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword"],
    **options: Any,
) -> Embedder | DegradedEmbedder: ...
@overload
def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal[False] | None = None,
    **options: Any,
) -> Embedder: ...
def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword", False] | None = None,
    **options: Any,
) -> Embedder | DegradedEmbedder:
    """Loads an embedding model: a registry name, ``"bundled-mini"``, or a folder
    in the Hub's layout.

    A registry name goes through the cache: validated, downloaded if missing
    and allowed, repaired if a file is corrupt. If it cannot be had, the
    configured fallback chain is walked (``fallback_models``,
    ``fallback_strategy``; ``fallback=False`` disables it) and a warning names
    the model used; ``Embedder.model_id`` and ``.space`` always say which
    model made the vectors. ``config`` defaults to ``caxton.yaml`` plus the
    environment. ``options`` go to :class:`~caxton_models.runtime.embedder.Embedder`
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
    name = os.fspath(name_or_path)
    open_model = opener(config, **options)
    direct = config is None and degraded in (None, False)
    if direct and (name == BUNDLED_MODEL or not is_registry_name(name)):
        # No config file, no cache, no registry scan: the bundled model or a folder.
        from pathlib import Path

        if name == BUNDLED_MODEL or Path(name).expanduser().is_dir():
            from caxton_models.fallback import open_resolved

            return open_resolved(resolve(name), open_model)
    from caxton_models.acquire.manager import ModelManager, default_manager
    from caxton_models.fallback import load_with_fallback

    manager = ModelManager(config) if config is not None else default_manager()
    if name in manager.registry:  # a reranker by name: refused before any download
        check_task(manager.spec(name), "embedding")
    if options.get("onnx_file") and not os.path.isdir(os.path.expanduser(name)):
        # A variant of a repository: its own cache entry.
        from caxton_models.acquire._adhoc import variant_spec

        spec = variant_spec(manager.spec(name), str(options["onnx_file"]))
        manager.registry.add(spec)
        name = spec.name
    return load_with_fallback(
        name, manager=manager, open_model=open_model, fallback=fallback, degraded=degraded
    )


@overload
async def aload(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword"],
    **options: Any,
) -> Embedder | DegradedEmbedder: ...
@overload
async def aload(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal[False] | None = None,
    **options: Any,
) -> Embedder: ...
async def aload(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    degraded: Literal["keyword", False] | None = None,
    **options: Any,
) -> Embedder | DegradedEmbedder:
    """:func:`load` for asyncio code: the cache check, any download and the
    session build run on a worker thread, so the event loop keeps running.
    Cancelling the awaiting task stops waiting; the load itself completes in
    the background (the model ends up cached and loaded). For a download you
    can cancel, await ``ModelManager.aensure`` first."""
    import asyncio  # lazy: only asyncio callers pay for it

    def run() -> Embedder | DegradedEmbedder:
        return load(name_or_path, config=config, fallback=fallback, degraded=degraded, **options)

    # The whole load (cache check, download, session build) is blocking
    # work; a worker thread keeps the loop free. All file I/O happens in
    # that work (the Rust core writes and hashes), so aiofiles has no part.
    return await asyncio.to_thread(run)
