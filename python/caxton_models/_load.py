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

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from caxton_models.resolve import BUNDLED_MODEL, Resolved, is_registry_name, resolve

if TYPE_CHECKING:
    from caxton_models.config import Config, EmbeddingConfig
    from caxton_models.runtime.embedder import Embedder
    from caxton_models.runtime.loaded import ModelMemoryManager

log = logging.getLogger("caxton_models")

_loaded: ModelMemoryManager | None = None
_loaded_lock = threading.Lock()
#: caxton.yaml's ``embedding:`` block, read with the loaded-model limits.
_embedding: EmbeddingConfig | None = None


def loaded_models() -> ModelMemoryManager:
    """The process-wide loaded-model manager (limits from ``caxton.yaml``,
    read when it is first needed)."""
    global _loaded, _embedding
    with _loaded_lock:
        if _loaded is not None:
            return _loaded
        from caxton_models.config import load_config
        from caxton_models.runtime.loaded import ModelMemoryManager

        cfg = load_config()
        _embedding = cfg.embedding
        _loaded = ModelMemoryManager.from_config(cfg.loaded_models)
        preload = cfg.loaded_models.preload_models
    for name in preload:  # outside the lock: each goes through load()
        try:
            load(name)
        except Exception as e:  # a preload that fails must not break the load asked for
            log.warning("preloading %s failed: %s", name, e)
    return _loaded


def reset() -> None:
    """Drop every loaded model and forget the configuration (the next load
    reads caxton.yaml again); for tests and for applications that reload."""
    global _loaded
    from caxton_models.acquire import manager

    with _loaded_lock:
        old, _loaded = _loaded, None
    if old is not None:
        old.close()
    manager.reset_default()


def _key(resolved: Resolved, options: dict[str, Any]) -> str:
    # The folder names the exact files; the options change the session.
    return f"{resolved.folder}|{sorted(options.items())!r}"


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
    process's loaded-model manager. Keywords win over the model's registry
    options, which win over ``config``'s (else caxton.yaml's) ``embedding:``."""

    def open_model(resolved: Resolved) -> Embedder:
        from caxton_models._load_tasks import check_folder_task, check_task
        from caxton_models.runtime.embedder import Embedder

        check_task(resolved.spec, "embedding")  # a reranker's folder would embed, wrongly
        if resolved.spec is None:
            check_folder_task(resolved.folder, "embedding")

        manager = loaded_models()
        emb_cfg = config.embedding if config is not None else _embedding
        defaults = embedder_defaults(emb_cfg) if emb_cfg is not None else {}
        kwargs = {**defaults, **resolved.options, **options}

        def build() -> Embedder:
            return Embedder.from_dir(resolved.folder, **kwargs)

        return manager.get(_key(resolved, kwargs), build)

    return open_model


def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    **options: Any,
) -> Embedder:
    """See :func:`caxton_models.load`."""
    name = os.fspath(name_or_path)
    open_model = opener(config, **options)
    if config is None and (name == BUNDLED_MODEL or not is_registry_name(name)):
        # No config file, no cache, no registry scan: the bundled model or a folder.
        from pathlib import Path

        if name == BUNDLED_MODEL or Path(name).expanduser().is_dir():
            return open_model(resolve(name))
    from caxton_models._load_tasks import check_task
    from caxton_models.acquire._adhoc import is_repo_id
    from caxton_models.acquire.manager import ModelManager, default_manager
    from caxton_models.fallback import load_with_fallback

    manager = ModelManager(config) if config is not None else default_manager()
    if name in manager.registry or is_repo_id(name):  # before any download or fallback
        check_task(manager.spec(name), "embedding")
    return load_with_fallback(name, manager=manager, open_model=open_model, fallback=fallback)


async def aload(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    **options: Any,
) -> Embedder:
    """See :func:`caxton_models.aload`."""
    import asyncio  # lazy: only asyncio callers pay for it

    # The whole load (cache check, download, session build) is blocking
    # work; a worker thread keeps the loop free. All file I/O happens in
    # that work (the Rust core writes and hashes), so aiofiles has no part.
    return await asyncio.to_thread(load, name_or_path, config=config, fallback=fallback, **options)
