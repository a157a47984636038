"""caxton-models: embedding models onto a machine, verified, and fast in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models import errors
from caxton_models._core import __version__, blake3_file, hash_files, sha256_file
from caxton_models.errors import CaxtonError, ModelNotFound

if TYPE_CHECKING:
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


def _resolve_model_dir(name_or_path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Turns a name or path into a model folder plus Embedder keyword
    arguments (model_id, prefixes, space, ...).

    Handles paths and ``bundled-mini``. Registry names are the hook for the
    cache manager: it replaces the final ``raise`` with "look the name up in
    the registry, make sure it is installed, return its folder and spec".
    """
    if str(name_or_path) == BUNDLED_MODEL:
        from caxton_models._bundled import bundled_dir

        return bundled_dir(), {}
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, {}
    raise ModelNotFound(
        f"{str(name_or_path)!r} is neither a model folder nor a known model name: pass a "
        f"folder in the Hub layout, {BUNDLED_MODEL!r}, or a registry name",
        model=str(name_or_path),
    )


def load(name_or_path: str | os.PathLike[str], **kwargs: Any) -> Embedder:
    """Loads an embedding model: a folder, ``"bundled-mini"``, or a registry name.

    ``kwargs`` go to :class:`~caxton_models.inference.Embedder` (``prefixes``,
    ``threads``, ``quantize``, ``token_budget``, ...) and override the spec's.
    """
    from caxton_models.inference import Embedder

    model_dir, spec = _resolve_model_dir(name_or_path)
    return Embedder.from_dir(model_dir, **{**spec, **kwargs})


def __getattr__(name: str) -> Any:
    # Embedder imports numpy; keep `import caxton_models` light until it is needed.
    if name == "Embedder":
        from caxton_models.inference import Embedder

        return Embedder
    raise AttributeError(f"module 'caxton_models' has no attribute {name!r}")
