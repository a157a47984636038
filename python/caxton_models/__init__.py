"""caxton-models: embedding models onto a machine, verified, and fast in-process."""

from __future__ import annotations

from caxton_models import errors
from caxton_models._core import __version__, blake3_file, hash_files, sha256_file
from caxton_models.errors import CaxtonError

__all__ = [
    "CaxtonError",
    "__version__",
    "blake3_file",
    "errors",
    "hash_files",
    "sha256_file",
]
