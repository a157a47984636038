"""``caxton_models.load_reranker`` and ``load_sparse``: a name or folder,
resolved (fetched, verified and cached like an embedding model), to one
loaded model per process, kept under the same loaded-model limits.

There is no fallback chain here: a fallback for a reranker would have to
be another reranker, and a wrong one gives scores that look right.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from caxton_models.resolve import Resolved, check_task, is_registry_name, resolve

if TYPE_CHECKING:
    from caxton_models.config import Config
    from caxton_models.runtime.reranker import Reranker
    from caxton_models.runtime.splade import SpladeEncoder

M = TypeVar("M")

__all__ = ["load_reranker", "load_sparse", "resolve_task"]


def resolve_task(
    name_or_path: str | os.PathLike[str], task: str, config: Config | None = None
) -> Resolved:
    """The folder of ``name_or_path`` (a folder, a registry name or a Hub
    repo id; downloaded and verified when needed and allowed). The task is
    checked before anything is downloaded."""
    name = os.fspath(name_or_path)
    if config is None and not is_registry_name(name) and Path(name).expanduser().is_dir():
        return resolve(name)
    from caxton_models.acquire.manager import ModelManager, default_manager

    manager = ModelManager(config) if config is not None else default_manager()
    if is_registry_name(name, manager) or not Path(name).expanduser().is_dir():
        # The registry's entry, or a Hub repo id described from its small files.
        check_task(manager.spec(name), task)
    return resolve(name, manager)


def _load_task(
    name_or_path: str | os.PathLike[str],
    task: str,
    config: Config | None,
    options: dict[str, Any],
    from_dir: Callable[..., M],
) -> M:
    """The model of ``task`` at ``name_or_path``, loaded once per process
    and options (keyed by task, so one folder's reranker and encoder differ)."""
    from caxton_models._load import loaded_models

    resolved = resolve_task(name_or_path, task, config)
    kwargs = {"model_id": resolved.spec.model_id} if resolved.spec else {}
    kwargs.update(options)

    def build() -> M:
        return from_dir(resolved.folder, **kwargs)

    key = f"{task}|{resolved.folder}|{sorted(kwargs.items())!r}"
    model: M = loaded_models().get(key, build)
    return model


def load_reranker(
    name_or_path: str | os.PathLike[str], *, config: Config | None = None, **options: Any
) -> Reranker:
    """See :func:`caxton_models.load_reranker`."""
    from caxton_models.runtime.reranker import Reranker

    return _load_task(name_or_path, "rerank", config, options, Reranker.from_dir)


def load_sparse(
    name_or_path: str | os.PathLike[str], *, config: Config | None = None, **options: Any
) -> SpladeEncoder:
    """See :func:`caxton_models.load_sparse`."""
    from caxton_models.runtime.splade import SpladeEncoder

    return _load_task(name_or_path, "sparse", config, options, SpladeEncoder.from_dir)
