"""Every error caxton-models raises.

One base class, :class:`CaxtonError`. The spec's ``DownloadError`` variants
are real classes with their fields; the Rust core raises them by name (see
``rust/src/py/errors.rs``), so renaming a class here means renaming it there.
Messages say what failed, where, and what to do, and never contain a token.

Each class also carries its category, in one place: the CLI's exit code, the
``status`` label of ``caxton_model_download_duration_seconds``, the
``failure_type`` of ``caxton_model_validation_failures_total`` when an
integrity check of fresh bytes fails, and whether trying again may help.
Fields are declared on the class; constructing an error with an undeclared
field is a ``TypeError``, so a typo cannot hide a field.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OFFLINE",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_VERIFY_FAILED",
    "AccessDenied",
    "ArchiveError",
    "BackpressureError",
    "CacheFull",
    "CaxtonError",
    "ChecksumMismatch",
    "ConfigError",
    "DownloadError",
    "DownloadIncomplete",
    "InsufficientDiskSpace",
    "InvalidArgument",
    "InvalidModelFormat",
    "InvalidPath",
    "ModelInUse",
    "ModelLoadError",
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
    "download_status",
    "exit_code",
    "scrub_tokens",
]


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY_FAILED = 3
EXIT_NOT_FOUND = 4
EXIT_OFFLINE = 5
EXIT_INTERRUPTED = 130


class CaxtonError(Exception):
    """Base class of every caxton-models error."""

    #: The ``caxton`` CLI's exit status for this error.
    exit_code: ClassVar[int] = EXIT_FAILED
    #: The ``status`` label of a download that ended with this error.
    metric_status: ClassVar[str] = "failed"
    #: ``failure_type`` of ``caxton_model_validation_failures_total`` when the
    #: error is an integrity check of fresh bytes; None for anything else.
    failure_type: ClassVar[str | None] = None
    #: Whether the same call may succeed later (a passing network fault).
    transient: ClassVar[bool] = False

    model: str | None = None
    path: str | None = None

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        unknown = set(fields) - _declared(type(self))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        self.message = message
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message

    @property
    def retryable(self) -> bool:
        return self.transient


def _declared(cls: type) -> frozenset[str]:
    """The fields a class declares (annotations that are not ClassVar), with its bases'."""
    cached = cls.__dict__.get("_fields_cache")
    if cached is not None:
        return cached  # type: ignore[no-any-return,unused-ignore]
    names = {
        name
        for klass in cls.__mro__
        for name, ann in vars(klass).get("__annotations__", {}).items()
        if "ClassVar" not in str(ann)
    }
    fields = frozenset(names)
    type.__setattr__(cls, "_fields_cache", fields)
    return fields


class ConfigError(CaxtonError, ValueError):
    """A bad ``caxton.yaml`` key or value; names the key, the file and the valid choices."""

    exit_code = EXIT_USAGE
    key: str | None = None
    file: str | None = None
    choices: list[str] | None = None


class ModelNotFound(CaxtonError, LookupError):
    """The model name is not in the registry, or the repository/revision/file does not exist.

    From the hub client, ``kind`` says which: ``"repo"``, ``"revision"`` or ``"file"``."""

    exit_code = EXIT_NOT_FOUND
    metric_status = "refused"
    kind: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    endpoint: str | None = None
    files: list[str] | None = None
    suggestions: list[str] | None = None
    status: int | None = None


class ValidationFailed(CaxtonError):
    """A cached model failed one of the validation steps."""

    exit_code = EXIT_VERIFY_FAILED
    files: list[str] | None = None
    report: Any = None


class OfflineError(CaxtonError):
    """Offline mode is on and the model is not (completely) in the cache."""

    exit_code = EXIT_OFFLINE
    reason: str | None = None


class UnsafeModel(CaxtonError):
    """Pickle weights (``*.bin``, ``*.pt``, ``*.pkl``, ``*.ckpt``), refused unless allowed."""

    metric_status = "refused"
    files: list[str] | None = None
    allow_pickle: bool = False


class InvalidPath(CaxtonError, ValueError):
    """A file name from a listing, manifest or archive that could escape its directory."""

    repo_id: str | None = None
    reason: str | None = None


class ArchiveError(CaxtonError):
    """An archive to install is hostile or malformed (links, devices, ``..``, bombs)."""

    reason: str | None = None


class BackpressureError(CaxtonError):
    """The embedding queue is full and the batcher is configured not to wait."""

    transient = True
    queue_size: int | None = None
    on_full: str | None = None


class DownloadError(CaxtonError):
    """Base of the spec's ``DownloadError`` variants."""

    url: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    endpoint: str | None = None
    status: int | None = None


class NetworkTimeout(DownloadError, TimeoutError):
    """No bytes arrived within the timeout, after all retries."""

    exit_code = EXIT_OFFLINE
    metric_status = "timeout"
    transient = True


class NetworkError(DownloadError, ConnectionError):
    """Connection refused, reset, DNS failure, TLS failure, after all retries."""

    exit_code = EXIT_OFFLINE
    metric_status = "network"
    transient = True


class ServerError(DownloadError):
    """The server answered with an HTTP error status (``status``)."""

    metric_status = "network"
    sha: str | None = None

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in (408, 429)


class AccessDenied(DownloadError):
    """The server refused the request: HTTP 401/403 (``status``); ``gated`` when
    the repository needs an accepted licence or a token."""

    metric_status = "refused"
    gated: bool = False


class ChecksumMismatch(DownloadError):
    """The bytes' SHA-256 (``actual``) is not the expected one (``expected``)."""

    metric_status = "invalid"
    failure_type = "checksum"
    expected: str | None = None
    actual: str | None = None


class SizeMismatch(DownloadError):
    """The server sent more or fewer bytes than expected (``expected``, ``actual``)."""

    metric_status = "invalid"
    failure_type = "size"
    expected: int | None = None
    actual: int | None = None


class DownloadIncomplete(DownloadError):
    """The transfer kept failing; the bytes so far are kept for a resume."""

    metric_status = "network"
    transient = True
    have: int | None = None
    total: int | None = None


class InsufficientDiskSpace(DownloadError, OSError):
    """Not enough free space: ``required`` bytes needed, ``available`` free."""

    metric_status = "disk_full"
    required: int | None = None
    available: int | None = None


class PermissionDenied(DownloadError, PermissionError):
    """The cache or a destination on this machine cannot be written (a read-only
    cache, a folder without write permission). A server's 401/403 is
    :class:`AccessDenied`."""


class InvalidModelFormat(DownloadError):
    """A model file is not what its name says (bad JSON, bad safetensors header, bad ONNX),
    or the model's architecture or modules are not supported."""

    metric_status = "invalid"
    failure_type = "format"


class CacheFull(CaxtonError):
    """The cache limits (``max_size_gb``, ``max_models``) cannot be met without
    evicting a pinned or in-use model, or the policy is ``manual``."""

    metric_status = "disk_full"
    required: int | None = None
    limit: int | None = None


class ModelInUse(CaxtonError):
    """A model that a running process is using cannot be removed."""


class ModelUnavailable(CaxtonError):
    """Neither the model nor any model of its fallback chain could be loaded;
    ``tried`` lists each candidate and why it was passed over."""

    tried: list[str] | None = None


class MigrationError(CaxtonError):
    """A re-embedding run cannot start or resume: its corpus, output or state
    file do not match (``caxton_models.migrate``)."""

    exit_code = EXIT_USAGE
    state_file: str | None = None


class ModelLoadError(CaxtonError):
    """ONNX Runtime refused a model's graph (``path``) when the session was
    created: ``ort_error`` is its error class (InvalidProtobuf, InvalidGraph,
    Fail, ...) and the message quotes what it said. ``out_of_memory`` when the
    load ran out of memory (a smaller model may still load, and the same one
    may once memory is freed). The fallback chain repairs the files, tries the
    repo's other weights format, then the next model."""

    exit_code = EXIT_FAILED
    metric_status = "invalid"
    failure_type = None  # not an integrity check of fresh bytes
    ort_error: str | None = None
    out_of_memory: bool = False

    @property
    def retryable(self) -> bool:
        return self.out_of_memory


class InvalidArgument(CaxtonError, ValueError):
    """A bad argument to ``embed``/``encode``/``load``: a prompt name the model
    does not have, more dimensions than the model makes, an option that needs
    torch; or to the core (a bad URL, an unknown ``download_many`` item key)."""

    exit_code = EXIT_USAGE


def exit_code(exc: BaseException) -> int:
    """The ``caxton`` CLI's exit status for ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return exc.exit_code if isinstance(exc, CaxtonError) else EXIT_FAILED


def download_status(error: BaseException | None) -> str:
    """The ``status`` label of a download: a few fixed values, so the number
    of series stays small whatever the error messages say."""
    if error is None:
        return "ok"
    if isinstance(error, KeyboardInterrupt):
        return "cancelled"
    return error.metric_status if isinstance(error, CaxtonError) else "failed"


_HF_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")


def scrub_tokens(text: str, token: str | None = None) -> str:
    """``text`` with ``token`` and anything shaped like a Hub token (even a
    foreign one) replaced by ``<TOKEN>``: the last line of defence for every
    message shown to a user."""
    if token:
        text = text.replace(token, "<TOKEN>")
    return _HF_TOKEN_RE.sub("<TOKEN>", text)


class RevisionGone(CaxtonError):
    """A revision being staged or switched to was removed meanwhile (a
    concurrent cleanup); the current revision is unchanged: try again."""

    transient = True
