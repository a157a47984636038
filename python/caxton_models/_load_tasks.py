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

from caxton_models.errors import InvalidModelFormat
from caxton_models.resolve import Resolved, is_registry_name, resolve

if TYPE_CHECKING:
    from caxton_models.config import Config
    from caxton_models.registry import ModelSpec
    from caxton_models.runtime.reranker import Reranker
    from caxton_models.runtime.splade import SpladeEncoder

M = TypeVar("M")

__all__ = ["check_folder_task", "check_task", "load_reranker", "load_sparse", "resolve_task"]

#: task -> what it is called and the function that loads it.
TASK_NAMES = {
    "embedding": ("an embedding model", "caxton_models.load"),
    "rerank": ("a reranker", "caxton_models.load_reranker"),
    "sparse": ("a sparse encoder", "caxton_models.load_sparse"),
}


def check_task(spec: ModelSpec | None, task: str) -> None:
    """A registry model of another task is refused, naming its loader."""
    if spec is not None and spec.task != task:
        (is_, loader), (not_, _) = TASK_NAMES[spec.task], TASK_NAMES[task]
        raise InvalidModelFormat(
            f"{spec.name} ({spec.model_id}) is {is_}, not {not_}: load it with {loader}()"
        )


def check_folder_task(folder: Path, task: str) -> None:
    """A folder outside the registry is judged by its own files, by the rule
    that describes any Hub repo (acquire/_adhoc.task_of)."""
    from caxton_models.acquire._adhoc import task_of
    from caxton_models.runtime.graph.pipeline import read_json

    config = read_json(folder / "config.json")
    found = task_of(folder, config) if isinstance(config, dict) else task
    if found != task:
        (is_, loader), (not_, _) = TASK_NAMES[found], TASK_NAMES[task]
        raise InvalidModelFormat(f"{folder} is {is_}, not {not_}: load it with {loader}()")


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
