"""caxton-models: embedding models onto a machine, verified, and fast in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models import errors
from caxton_models._core import __version__, blake3_file, hash_files, sha256_file
from caxton_models.errors import CaxtonError

if TYPE_CHECKING:
    from caxton_models.config import Config
    from caxton_models.inference import Embedder

__all__ = [
    "BUNDLED_MODEL",
    "CaxtonError",
    "Embedder",
    "__version__",
    "blake3_file",
    "errors",
    "hash_files",
    "load",
    "sha256_file",
]


#: The model shipped inside the package (same embedding space as all-MiniLM-L6-v2).
BUNDLED_MODEL = "bundled-mini"


def load(
    name_or_path: str | os.PathLike[str],
    *,
    config: Config | None = None,
    fallback: bool | None = None,
    **kwargs: Any,
) -> Embedder:
    """Loads an embedding model: a registry name, ``"bundled-mini"``, or a folder
    in the Hub's layout.

    A registry name goes through the cache: validated, downloaded if missing
    and allowed, repaired if a file is corrupt. If it cannot be had, the
    configured fallback chain is walked (``fallback_models``,
    ``fallback_strategy``; ``fallback=False`` disables it) and a warning names
    the model used; ``Embedder.model_id`` and ``.space`` always say which
    model made the vectors. ``config`` defaults to ``caxton.yaml`` plus the
    environment. ``kwargs`` go to :class:`~caxton_models.inference.Embedder`
    (``threads``, ``quantize``, ``token_budget``, ...).
    """
    name = os.fspath(name_or_path)
    if config is None and name == BUNDLED_MODEL:
        # The fast path: no config file, no cache, no registry scan.
        from caxton_models._bundled import bundled_dir
        from caxton_models.fallback import spec_kwargs
        from caxton_models.inference import Embedder
        from caxton_models.registry import BUILTIN_MODELS

        spec = next(s for s in BUILTIN_MODELS if s.name == BUNDLED_MODEL)
        return Embedder.from_dir(bundled_dir(), **{**spec_kwargs(spec), **kwargs})
    if config is None and Path(name).is_dir() and not _is_builtin_name(name):
        from caxton_models.inference import Embedder

        return Embedder.from_dir(name, **kwargs)
    from caxton_models.fallback import load_with_fallback
    from caxton_models.manager import ModelManager, default_manager

    manager = ModelManager(config) if config is not None else default_manager()
    return load_with_fallback(name, manager=manager, fallback=fallback, **kwargs)


def _is_builtin_name(name: str) -> bool:
    from caxton_models.registry import BUILTIN_MODELS

    return any(s.name == name for s in BUILTIN_MODELS)


def __getattr__(name: str) -> Any:
    # Embedder imports numpy; keep `import caxton_models` light until it is needed.
    if name == "Embedder":
        from caxton_models.inference import Embedder

        return Embedder
    raise AttributeError(f"module 'caxton_models' has no attribute {name!r}")
