"""caxton-models: embedding models onto a machine, verified, and fast in-process."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from caxton_models import errors
from caxton_models._core import __version__, blake3_file, hash_files, sha256_file
from caxton_models._lazy import lazy_exports
from caxton_models.errors import CaxtonError

if TYPE_CHECKING:
    from caxton_models._load import aload, load
    from caxton_models.acquire.hub import HubClient
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.config import Config
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


# Importing these pulls numpy, onnxruntime or the HTTP layer: `import caxton_models`
# stays light until one is needed.
__getattr__ = lazy_exports(
    __name__,
    {
        "Embedder": "caxton_models.runtime.embedder",
        "ModelManager": "caxton_models.acquire.manager",
        "HubClient": "caxton_models.acquire.hub",
        "load": "caxton_models._load",
        "aload": "caxton_models._load",
        "migrate": "caxton_models.ops.migrate",
        "MigrationReport": "caxton_models.ops.migrate",
        "Reranker": "caxton_models.runtime.reranker",
        "SpladeEncoder": "caxton_models.runtime.splade",
    },
)


def _register_prometheus() -> object:
    from caxton_models.prometheus import register

    return register()


# metrics sits below the prometheus integration: the package hands it the hook, so
# neither module imports the other's layer (prometheus_client is still imported only
# by the application).
from caxton_models import metrics as _metrics  # noqa: E402

_metrics.set_prometheus_hook(_register_prometheus)
