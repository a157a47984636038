"""Every error caxton-models raises.

One base class, :class:`CaxtonError`. The spec's ``DownloadError`` variants
are real classes with their fields; the Rust core raises them by name (see
``rust/src/py/errors.rs``), so renaming a class here means renaming it there.
Messages say what failed, where, and what to do, and never contain a token.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ArchiveError",
    "BackpressureError",
    "CacheFull",
    "CaxtonError",
    "ChecksumMismatch",
    "ConfigError",
    "DownloadError",
    "DownloadIncomplete",
    "InsufficientDiskSpace",
    "InvalidModelFormat",
    "InvalidPath",
    "ModelNotFound",
    "ModelUnavailable",
    "NetworkError",
    "NetworkTimeout",
    "OfflineError",
    "PermissionDenied",
    "ServerError",
    "SizeMismatch",
    "UnsafeModel",
    "ValidationFailed",
    "scrub_tokens",
]


class CaxtonError(Exception):
    """Base class of every caxton-models error."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


class ConfigError(CaxtonError, ValueError):
    """A bad ``caxton.yaml`` key or value; names the key, the file and the valid choices."""


class ModelNotFound(CaxtonError, LookupError):
    """The model name is not in the registry, or the repository/revision/file does not exist.

    From the hub client, ``kind`` says which: ``"repo"``, ``"revision"`` or ``"file"``."""

    model: str
    kind: str
    repo_id: str


class ValidationFailed(CaxtonError):
    """A cached model failed one of the validation steps."""


class OfflineError(CaxtonError):
    """Offline mode is on and the model is not (completely) in the cache."""


class UnsafeModel(CaxtonError):
    """Pickle weights (``*.bin``, ``*.pt``, ``*.pkl``, ``*.ckpt``), refused unless allowed."""


class InvalidPath(CaxtonError, ValueError):
    """A file name from a listing, manifest or archive that could escape its directory."""


class ArchiveError(CaxtonError):
    """An archive to install is hostile or malformed (links, devices, ``..``, bombs)."""


class BackpressureError(CaxtonError):
    """The embedding queue is full and the batcher is configured not to wait."""


class DownloadError(CaxtonError):
    """Base of the spec's ``DownloadError`` variants."""


class NetworkTimeout(DownloadError, TimeoutError):
    """No bytes arrived within the timeout, after all retries."""


class NetworkError(DownloadError, ConnectionError):
    """Connection refused, reset, DNS failure, TLS failure, after all retries."""


class ServerError(DownloadError):
    """The server answered with an HTTP error status (``status``)."""

    status: int


class ChecksumMismatch(DownloadError):
    """The bytes' SHA-256 (``actual``) is not the expected one (``expected``)."""

    expected: str
    actual: str


class SizeMismatch(DownloadError):
    """The server sent more or fewer bytes than expected (``expected``, ``actual``)."""

    expected: int
    actual: int


class DownloadIncomplete(DownloadError):
    """The transfer kept failing; the bytes so far are kept for a resume."""


class InsufficientDiskSpace(DownloadError, OSError):
    """Not enough free space: ``required`` bytes needed, ``available`` free."""

    required: int
    available: int


class PermissionDenied(DownloadError, PermissionError):
    """The cache or destination cannot be written (or the server said 401/403:
    ``status``, and ``gated`` when the repository needs an accepted licence or a token)."""

    status: int
    gated: bool


class InvalidModelFormat(DownloadError):
    """A model file is not what its name says (bad JSON, bad safetensors header, bad ONNX)."""


class CacheFull(CaxtonError):
    """The cache limits (``max_size_gb``, ``max_models``) cannot be met without
    evicting a pinned or in-use model, or the policy is ``manual``."""


class ModelUnavailable(CaxtonError):
    """Neither the model nor any model of its fallback chain could be loaded;
    ``tried`` lists each candidate and why it was passed over."""

    tried: list[str]


_HF_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")


def scrub_tokens(text: str, token: str | None = None) -> str:
    """``text`` with ``token`` and anything shaped like a Hub token (even a
    foreign one) replaced by ``<TOKEN>``: the last line of defence for every
    message shown to a user."""
    if token:
        text = text.replace(token, "<TOKEN>")
    return _HF_TOKEN_RE.sub("<TOKEN>", text)
