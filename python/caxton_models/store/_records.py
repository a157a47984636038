"""What the cache records about a model: the metadata and manifest schemas, and time.

Parsers are strict: a hand-edited or torn file is a ``ValueError`` (a newer
schema is :class:`NewerSchema`, read but never rewritten), never a crash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from caxton_models._ids import is_hex
from caxton_models._paths import check_name, check_unique

SCHEMA_VERSION = 1
METADATA_FILE = ".caxton_metadata"
CHECKSUM_FILE = ".caxton_checksum"
_STATUSES = ("verified", "unverified", "corrupt")
# --------------------------------------------------------------------------- time


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def format_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object, *, now: datetime | None = None) -> datetime:
    """ISO 8601 -> aware UTC datetime, clamped to [1970, now] so a clock that
    went backwards or a hand-edited future date cannot pin or starve a model."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a timestamp")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    now = now or now_utc()
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return max(epoch, min(t, now))


# --------------------------------------------------------------------------- schema


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str
    git_oid: str | None = None
    lfs: bool = False


def parse_manifest(data: object) -> dict[str, FileEntry]:
    """Strict ``.caxton_checksum`` parser; ``ValueError`` on anything off."""
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError("not a schema_version 1 manifest")
    files = data.get("files")
    if not isinstance(files, dict) or set(data) != {"schema_version", "files"}:
        raise ValueError("manifest needs exactly 'schema_version' and 'files'")
    out: dict[str, FileEntry] = {}
    for path in check_unique(list(files), what="manifest entry"):
        e = files[path]
        if not isinstance(e, dict) or not set(e) <= {"size", "sha256", "git_oid", "lfs"}:
            raise ValueError(f"manifest entry {path!r} is malformed")
        git_oid = e.get("git_oid")
        if (
            not _uint(e.get("size"))
            or not is_hex(e.get("sha256"), 64)
            or not (git_oid is None or is_hex(git_oid, 40))
            or not isinstance(e.get("lfs", False), bool)
        ):
            raise ValueError(f"manifest entry {path!r} has a bad size, sha256, git_oid or lfs")
        out[path] = FileEntry(e["size"], e["sha256"], git_oid, e.get("lfs", False))
    return out


def manifest_json(files: Mapping[str, FileEntry]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "files": {p: asdict(e) for p, e in sorted(files.items())},
    }


@dataclass(frozen=True)
class Metadata:
    """The spec's ``.caxton_metadata``, plus ``name``, ``commit`` and ``pinned``."""

    name: str
    model_id: str
    revision: str
    commit: str | None
    download_date: str
    last_validated: str | None
    download_source: str
    total_size_bytes: int
    file_count: int
    validation_status: str = "verified"
    access_count: int = 0
    last_access: str | None = None
    pinned: bool = False
    last_update_check: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Metadata:
        """Strict: wrong types, negative sizes, bad hashes or missing fields are a
        ``ValueError``; a newer schema is :class:`NewerSchema`."""
        if not isinstance(data, dict):
            raise ValueError("metadata is not a JSON object")
        version = data.get("schema_version")
        if _uint(version) and isinstance(version, int) and version > SCHEMA_VERSION:
            raise NewerSchema(version)
        if version != SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {version!r}")
        known = {f for f in cls.__dataclass_fields__}
        if not set(data) <= known:
            raise ValueError(f"unknown metadata fields: {sorted(set(data) - known)}")
        d = dict(data)
        for key in ("name", "model_id", "revision", "download_date", "download_source"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ValueError(f"metadata field {key!r} missing or not a string")
        check_name(d["name"])
        if d.get("commit") is not None and not is_hex(d["commit"], 40):
            raise ValueError("metadata commit is not 40 hex digits")
        for key in ("total_size_bytes", "file_count", "access_count"):
            if not _uint(d.get(key, 0)) or (key != "access_count" and key not in d):
                raise ValueError(f"metadata field {key!r} is not a non-negative integer")
        if d.get("validation_status", "verified") not in _STATUSES:
            raise ValueError("bad validation_status")
        if not isinstance(d.get("pinned", False), bool):
            raise ValueError("pinned is not a boolean")
        for key in ("download_date", "last_validated", "last_access", "last_update_check"):
            if d.get(key) is not None:
                parse_time(d[key])
        d.setdefault("commit", None)
        d.setdefault("last_validated", None)
        return cls(**d)


class NewerSchema(ValueError):
    def __init__(self, version: int) -> None:
        super().__init__(f"written by a newer caxton-models (schema_version {version})")
        self.version = version


@dataclass(frozen=True)
class InstalledModel:
    """One model directory as found on disk."""

    name: str
    path: Path
    metadata: Metadata | None
    manifest: dict[str, FileEntry] | None
    problem: str | None = None  # why metadata/manifest could not be read
    read_only: bool = False  # newer schema: never rewritten, never evicted
    derived_bytes: int = 0  # graphs the runtime derived from it (the graph cache)

    @property
    def files_bytes(self) -> int:
        if self.manifest is not None:
            return sum(e.size for e in self.manifest.values())
        if self.metadata is not None:
            return self.metadata.total_size_bytes
        return 0

    @property
    def size_bytes(self) -> int:
        """What the model occupies: its files plus its derived graphs."""
        return self.files_bytes + self.derived_bytes

    @property
    def status(self) -> str:
        if self.manifest is None:
            return "corrupt"
        if self.metadata is None:
            return "unverified"
        return self.metadata.validation_status

    @property
    def pinned(self) -> bool:
        return bool(self.metadata and self.metadata.pinned)

    def last_access(self) -> datetime:
        m = self.metadata
        for value in (m and m.last_access, m and m.download_date):
            if value:
                with contextlib.suppress(ValueError):
                    return parse_time(value)
        return datetime(1970, 1, 1, tzinfo=timezone.utc)

    def installed_at(self) -> datetime:
        if self.metadata:
            with contextlib.suppress(ValueError):
                return parse_time(self.metadata.download_date)
        return datetime(1970, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- files
