"""The model cache on disk.

Layout (see INTERFACES.md)::

    <root>/registry.json        index of installed models (derived; rebuilt from the dirs)
    <root>/.lock                cross-process lock for registry changes and eviction
    <root>/.inuse/              one lease file per process using a model
    <root>/downloads/           staging dirs, resumable parts
    <root>/<name>/              files at their repo paths
    <root>/<name>/.caxton_metadata
    <root>/<name>/.caxton_checksum

Invariants:

* A model directory appears only complete and verified: it is built aside in
  ``downloads/`` (metadata and manifest written last, inside it) and renamed
  into place. Replacing one moves the old dir aside first; a crash between the
  two renames is undone on the next open (the old dir is put back).
* The model directories are the truth; ``registry.json`` is an index rewritten
  atomically after every change and rebuilt from them when it is unreadable.
  A bad index never deletes a model.
* Nothing is truncated or rewritten in place (a reader may have it mmapped):
  eviction renames the directory away, then deletes it.
* Symlinks inside the cache are never followed; files are never world-writable.
* Correctness does not depend on the lock (unique staging names + rename); the
  lock only avoids duplicated work and racing evictions.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from caxton_models import _core
from caxton_models.errors import (
    CacheFull,
    CaxtonError,
    ChecksumMismatch,
    InsufficientDiskSpace,
    InvalidPath,
    PermissionDenied,
    SizeMismatch,
    ValidationFailed,
)
from caxton_models.paths import RESERVED_PREFIX, check_name, check_unique, display, safe_join

__all__ = [
    "CHECKSUM_FILE",
    "METADATA_FILE",
    "SCHEMA_VERSION",
    "FileEntry",
    "InstalledModel",
    "Metadata",
    "ModelCache",
    "plan_eviction",
]

log = logging.getLogger("caxton_models.cache")

SCHEMA_VERSION = 1
METADATA_FILE = ".caxton_metadata"
CHECKSUM_FILE = ".caxton_checksum"
REGISTRY_FILE = "registry.json"
LOCK_FILE = ".lock"
DOWNLOADS = "downloads"
INUSE = ".inuse"
_HEX = frozenset("0123456789abcdef")
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


def _is_hex(value: object, n: int) -> bool:
    return isinstance(value, str) and len(value) == n and set(value) <= _HEX


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
            or not _is_hex(e.get("sha256"), 64)
            or not (git_oid is None or _is_hex(git_oid, 40))
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
        if d.get("commit") is not None and not _is_hex(d["commit"], 40):
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

    @property
    def size_bytes(self) -> int:
        if self.manifest is not None:
            return sum(e.size for e in self.manifest.values())
        if self.metadata is not None:
            return self.metadata.total_size_bytes
        return 0

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


def _read_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # once, at import: racy only against other umask users
    os.umask(old)
    return old


_UMASK = _read_umask()
FILE_MODE = 0o644 & ~_UMASK
DIR_MODE = 0o755 & ~_UMASK


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# A file we create: never an existing one, never through a symlink (RELIABILITY rows 25, 38).
NEW_FILE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


def write_json_atomic(path: Path, data: object) -> None:
    """tmp (random name, O_EXCL|O_NOFOLLOW) + fsync + rename: a reader sees the
    old file or the new one, never a torn one."""
    payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
    flags = NEW_FILE_FLAGS
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def read_json_nofollow(path: Path, limit: int = 16 << 20) -> object:
    """Read a small JSON file, refusing a symlink or something huge."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path} is not a regular file")
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return json.loads(raw.decode("utf-8"))


def _rmtree(path: Path) -> None:
    """Remove a tree without following links (shutil.rmtree never follows them)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _walk_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``root`` as (repo path, lstat), never following links."""
    stack = [(root, "")]
    while stack:
        d, prefix = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                rel = f"{prefix}{e.name}"
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((Path(e.path), rel + "/"))
                else:
                    yield rel, st


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return True  # no cheap check; age decides there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- lock


class _FileLock:
    """A re-entrant (per thread group in this process) exclusive lock on
    ``<root>/.lock``: fcntl.flock on POSIX, msvcrt on Windows. If the platform
    lock is unavailable or a silent no-op, the cache is still correct."""

    def __init__(self, path: Path, timeout: float = 120.0, *, transient: bool = False) -> None:
        self.path = path
        self.timeout = timeout
        # A transient lock file is removed on release; whoever acquires checks
        # that the file it locked is still the one at ``path`` (else retries).
        self.transient = transient
        self._mutex = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def _acquire_os(self) -> None:
        if os.environ.get("CAXTON_TEST_DISABLE_LOCKS") == "1":
            return  # tests prove correctness does not depend on the lock (NFS, Lustre)
        while True:
            self._acquire_once()
            if not self.transient or self._fd is None:
                return
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return
            self._release_os(unlink=False)

    def _acquire_once(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, FILE_MODE)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return  # read-only cache: reads proceed without the lock
            if e.errno != errno.ELOOP:
                raise
            # A symlink planted at the lock path: remove the link (never follow it).
            log.warning("removing a symlink planted at the lock file %s", self.path)
            os.unlink(self.path)
            fd = os.open(self.path, flags | os.O_EXCL, FILE_MODE)
        deadline = time.monotonic() + self.timeout
        try:
            if sys.platform == "win32":
                import msvcrt

                while True:
                    try:
                        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            else:
                import fcntl

                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise CaxtonError(
                                f"timed out after {self.timeout:.0f} s waiting for the cache lock "
                                f"{self.path}; another caxton process holds it",
                                path=str(self.path),
                            ) from None
                        time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _release_os(self, *, unlink: bool = True) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if unlink and self.transient:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        try:
            if sys.platform == "win32":
                import msvcrt

                with contextlib.suppress(OSError):
                    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._mutex:
            if self._depth == 0:
                self._acquire_os()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release_os()


# --------------------------------------------------------------------------- eviction


def plan_eviction(
    models: Iterable[InstalledModel],
    *,
    policy: str,
    max_bytes: int | None,
    max_models: int | None,
    incoming_bytes: int = 0,
    incoming_name: str | None = None,
    free_bytes: int = 0,
    protected: Iterable[str] = (),
) -> list[str]:
    """Which models to evict so that, after adding one of ``incoming_bytes``,
    the cache is within ``max_bytes``/``max_models`` and at least ``free_bytes``
    are released. Pure. Raises :class:`CacheFull` (before anything is evicted)
    when that is impossible without touching a protected (pinned, in-use or
    read-only) model, or when the policy is ``manual``."""
    protect = set(protected)
    present = [m for m in models if m.name != incoming_name]
    total = sum(m.size_bytes for m in present) + incoming_bytes
    count = len(present) + (1 if incoming_name is not None else 0)

    def satisfied(t: int, c: int, freed: int) -> bool:
        return (
            (max_bytes is None or t <= max_bytes)
            and (max_models is None or c <= max_models)
            and freed >= free_bytes
        )

    if satisfied(total, count, 0):
        return []
    if max_bytes is not None and incoming_bytes > max_bytes:
        raise CacheFull(
            f"the model needs {incoming_bytes} bytes but max_size_gb allows only {max_bytes}: "
            "raise memory.model_cache.max_size_gb",
            required=incoming_bytes,
            limit=max_bytes,
        )
    if policy == "manual":
        raise CacheFull(
            "the model cache is full and cleanup_policy is 'manual': remove models with "
            "'caxton model remove', or raise max_size_gb / max_models",
            required=incoming_bytes,
            limit=max_bytes,
        )
    candidates = [m for m in present if m.name not in protect and not m.pinned and not m.read_only]
    if policy == "fifo":
        candidates.sort(key=lambda m: (m.installed_at(), m.name))
    else:  # lru; ties broken by how often it was used, then by name
        candidates.sort(
            key=lambda m: (m.last_access(), m.metadata.access_count if m.metadata else 0, m.name)
        )
    chosen: list[str] = []
    freed = 0
    for m in candidates:
        if satisfied(total, count, freed):
            break
        chosen.append(m.name)
        total -= m.size_bytes
        freed += m.size_bytes
        count -= 1
    if not satisfied(total, count, freed):
        raise CacheFull(
            "cannot make room in the model cache without evicting pinned or in-use models "
            f"(need {incoming_bytes} bytes, limit {max_bytes} bytes / {max_models} models): "
            "unpin or remove a model, or raise the limits",
            required=incoming_bytes,
            limit=max_bytes,
        )
    return chosen


# --------------------------------------------------------------------------- the cache

_pending_access: dict[tuple[str, str], tuple[int, datetime]] = {}
_pending_lock = threading.Lock()


def _flush_all_at_exit() -> None:
    with _pending_lock:
        roots = {root for root, _ in _pending_access}
    for root in roots:
        with contextlib.suppress(Exception):
            ModelCache(root).flush_access()


atexit.register(_flush_all_at_exit)


@dataclass
class _InUse:
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


class ModelCache:
    """One cache directory. Cheap to construct; thread-safe; several processes
    may share the directory."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        access_flush_interval: float = 60.0,
        lock_timeout: float = 120.0,
        disk_free: Callable[[Path], int] | None = None,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.access_flush_interval = access_flush_interval
        self._lock = _FileLock(self.root / LOCK_FILE, lock_timeout)
        self._disk_free = disk_free or (lambda p: shutil.disk_usage(p).free)
        self._last_flush = time.monotonic()
        self._inuse = _InUse()
        self._inuse_mutex = threading.Lock()
        self._recovered = False

    # ----------------------------------------------------------- basics

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS

    def ensure_dirs(self) -> None:
        """Create the root and downloads/ (0755 & ~umask), refusing a symlinked
        downloads/ (someone could point our writes elsewhere)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            for sub in (DOWNLOADS, INUSE):
                p = self.root / sub
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    with contextlib.suppress(FileExistsError):  # another process won the race
                        os.mkdir(p, DIR_MODE)
                    st = os.lstat(p)
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidPath(
                        f"{p} is not a directory (a symlink?); remove it so caxton can recreate it",
                        path=str(p),
                    )
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            raise PermissionDenied(
                f"cannot create the model cache at {self.root}: {e.strerror}. "
                "Set CAXTON_CACHE_DIR or memory.model_cache.directory to a writable place.",
                path=str(self.root),
            ) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive cross-process lock for registry changes and eviction."""
        if self.root.exists():
            with self._lock.hold():
                yield
        else:
            yield

    def model_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    # ----------------------------------------------------------- reading

    def _read(self, name: str) -> InstalledModel | None:
        path = self.model_dir(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None  # a symlink or a stray file is never a model
        meta: Metadata | None = None
        manifest: dict[str, FileEntry] | None = None
        problems: list[str] = []
        read_only = False
        try:
            meta = Metadata.from_json(read_json_nofollow(path / METADATA_FILE))
            if meta.name != name:
                problems.append(f"metadata names {meta.name!r}")
                meta = replace(meta, name=name, validation_status="unverified")
        except NewerSchema as e:
            problems.append(str(e))
            read_only = True
        except FileNotFoundError:
            problems.append("no .caxton_metadata")
        except (OSError, ValueError, TypeError, InvalidPath) as e:
            problems.append(f"bad .caxton_metadata: {e}")
        try:
            manifest = parse_manifest(read_json_nofollow(path / CHECKSUM_FILE))
        except FileNotFoundError:
            problems.append("no .caxton_checksum")
        except (OSError, ValueError, TypeError, InvalidPath) as e:
            problems.append(f"bad .caxton_checksum: {e}")
        if meta is not None and problems and meta.validation_status == "verified":
            meta = replace(meta, validation_status="unverified")
        return InstalledModel(name, path, meta, manifest, "; ".join(problems) or None, read_only)

    def get(self, name: str) -> InstalledModel | None:
        """The installed model ``name``, or None. Applies pending access counts."""
        self.recover()
        m = self._read(name)
        if m is not None and m.metadata is not None:
            with _pending_lock:
                pend = _pending_access.get((str(self.root), name))
            if pend:
                m = replace(
                    m,
                    metadata=replace(
                        m.metadata,
                        access_count=m.metadata.access_count + pend[0],
                        last_access=format_time(pend[1]),
                    ),
                )
        return m

    def installed(self) -> list[InstalledModel]:
        """Every model directory, from a scan (the index is never trusted)."""
        self.recover()
        out = []
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.startswith(".") or entry in (DOWNLOADS, REGISTRY_FILE):
                continue
            try:
                check_name(entry)
            except InvalidPath:
                continue
            m = self.get(entry)
            if m is not None:
                out.append(m)
        return out

    def total_size(self) -> int:
        return sum(m.size_bytes for m in self.installed())

    # ----------------------------------------------------------- index

    def read_index(self) -> dict[str, Any]:
        """registry.json, or a rebuilt one when it is missing, truncated, not JSON
        or of the wrong shape. Rebuilding never deletes a model."""
        path = self.root / REGISTRY_FILE
        try:
            data = read_json_nofollow(path)
            if (
                isinstance(data, dict)
                and data.get("schema_version") == SCHEMA_VERSION
                and isinstance(data.get("models"), dict)
            ):
                return data
            log.warning(
                "%s has an unexpected shape; rebuilding it from the model directories", path
            )
        except FileNotFoundError:
            pass
        except (OSError, ValueError, UnicodeDecodeError) as e:
            log.warning("%s is unreadable (%s); rebuilding it from the model directories", path, e)
        return self.rebuild_index()

    def _index_from_scan(self) -> dict[str, Any]:
        models: dict[str, Any] = {}
        for m in self.installed():
            meta = m.metadata
            models[m.name] = {
                "model_id": meta.model_id if meta else None,
                "revision": meta.revision if meta else None,
                "commit": meta.commit if meta else None,
                "path": str(m.path),
                "size_bytes": m.size_bytes,
                "pinned": m.pinned,
                "installed_at": meta.download_date if meta else None,
                "validation_status": m.status,
            }
        return {"schema_version": SCHEMA_VERSION, "models": models}

    def rebuild_index(self) -> dict[str, Any]:
        """Rewrite registry.json from the model directories (also resyncs models
        added or deleted behind our back)."""
        data = self._index_from_scan()
        # On a read-only cache the write fails quietly: the scan is still right.
        with contextlib.suppress(OSError), self.lock():
            if self.root.is_dir():
                write_json_atomic(self.root / REGISTRY_FILE, data)
        return data

    # ----------------------------------------------------------- recovery

    def recover(self, *, force: bool = False) -> None:
        """Undo a crash between 'move old aside' and 'rename new in', and reclaim
        staging dirs of dead processes. Runs once per cache object."""
        if self._recovered and not force:
            return
        self._recovered = True
        if not self.downloads.is_dir():
            return
        with contextlib.suppress(OSError), self.lock():
            for entry in os.listdir(self.downloads):
                parts = entry.split(".")
                p = self.downloads / entry
                if "@" in entry and len(parts) >= 3 and parts[-2].isdigit():
                    # A private download dir ("<name>@<commit>.<pid>.<hex>") of a
                    # dead process: hand it back for resume, else drop it.
                    if _pid_alive(int(parts[-2])):
                        continue
                    stable = self.downloads / ".".join(parts[:-2])
                    if not os.path.lexists(stable) and not os.path.islink(p):
                        os.rename(p, stable)
                    else:
                        _rmtree(p)
                elif len(parts) >= 4 and parts[-3] == "old" and parts[-2].isdigit():
                    if _pid_alive(int(parts[-2])):
                        continue  # its owner is between two renames right now
                    name = ".".join(parts[:-3])
                    try:
                        check_name(name)
                    except InvalidPath:
                        continue
                    target = self.root / name
                    if not os.path.lexists(target) and (p / METADATA_FILE).is_file():
                        log.warning("restoring %s after an interrupted replacement", name)
                        os.rename(p, target)
                    else:
                        _rmtree(p)
                elif len(parts) >= 4 and parts[-3] in ("staging", "trash"):
                    pid = int(parts[-2]) if parts[-2].isdigit() else -1
                    if parts[-3] == "trash" or not _pid_alive(pid):
                        _rmtree(p)

    def reclaim_temp(self, max_age: float, *, dry_run: bool = False) -> list[str]:
        """Remove leftovers in downloads/ older than ``max_age`` seconds (crash
        loops must not fill the disk). Younger parts are kept for resume.
        ``dry_run`` only lists them."""
        removed: list[str] = []
        if not self.downloads.is_dir():
            return removed
        cutoff = time.time() - max_age
        with self.lock():
            for entry in os.listdir(self.downloads):
                p = self.downloads / entry
                parts = entry.split(".")
                if len(parts) >= 3 and parts[-2].isdigit() and _pid_alive(int(parts[-2])):
                    continue  # a live process's private dir, however long it takes
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue
                newest = st.st_mtime
                if stat.S_ISDIR(st.st_mode):
                    with contextlib.suppress(OSError):
                        for _, fst in _walk_files(p):
                            newest = max(newest, fst.st_mtime)
                if newest < cutoff:
                    if not dry_run:
                        _rmtree(p)
                    removed.append(entry)
            if dry_run:
                return removed
            inuse = self.root / INUSE
            if inuse.is_dir():
                for lease in os.listdir(inuse):
                    pid = lease.rsplit(".", 2)[-2] if lease.count(".") >= 2 else ""
                    if pid.isdigit() and not _pid_alive(int(pid)):
                        with contextlib.suppress(OSError):
                            os.unlink(inuse / lease)
        return removed

    def temp_bytes(self) -> int:
        total = 0
        if self.downloads.is_dir():
            with contextlib.suppress(OSError):
                for _, st in _walk_files(self.downloads):
                    total += st.st_size
        return total

    # ----------------------------------------------------------- in use / pins

    @contextlib.contextmanager
    def in_use(self, name: str) -> Iterator[None]:
        """Mark ``name`` as in use (by this process) so no process evicts it."""
        self.acquire(name)
        try:
            yield
        finally:
            self.release(name)

    def acquire(self, name: str) -> None:
        check_name(name)
        with self._inuse_mutex:
            n = self._inuse.counts.get(name, 0)
            self._inuse.counts[name] = n + 1
            if n == 0:
                lease = self.root / INUSE / f"{name}.{os.getpid()}.{secrets.token_hex(4)}"
                with contextlib.suppress(OSError):
                    self.ensure_dirs()
                    fd = os.open(
                        lease,
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                        FILE_MODE,
                    )
                    os.close(fd)
                    self._inuse.files[name] = lease

    def release(self, name: str) -> None:
        with self._inuse_mutex:
            n = self._inuse.counts.get(name, 0) - 1
            if n > 0:
                self._inuse.counts[name] = n
                return
            self._inuse.counts.pop(name, None)
            lease = self._inuse.files.pop(name, None)
        if lease is not None:
            with contextlib.suppress(OSError):
                os.unlink(lease)

    def users(self) -> set[str]:
        """Names some live process (this one included) is using."""
        names = {n for n, c in self._inuse.counts.items() if c > 0}
        inuse = self.root / INUSE
        with contextlib.suppress(OSError):
            for lease in os.listdir(inuse):
                parts = lease.rsplit(".", 2)
                if len(parts) == 3 and parts[1].isdigit() and _pid_alive(int(parts[1])):
                    names.add(parts[0])
        return names

    def set_pinned(self, name: str, pinned: bool) -> None:
        self.update_metadata(name, pinned=pinned)

    # ----------------------------------------------------------- metadata updates

    def update_metadata(self, name: str, **changes: Any) -> Metadata | None:
        """Rewrite one model's metadata (atomically, under the lock). Best
        effort on a read-only cache; never touches a newer-schema entry."""
        with self.lock():
            m = self._read(name)
            if m is None or m.metadata is None or m.read_only:
                return None
            meta = replace(m.metadata, **changes)
            try:
                write_json_atomic(m.path / METADATA_FILE, meta.to_json())
            except OSError as e:
                log.debug("could not update metadata of %s: %s", name, e)
                return None
            if "pinned" in changes:
                self.rebuild_index()
            return meta

    def touch(self, name: str, *, when: datetime | None = None) -> None:
        """Count one access. Kept in memory and written at most once per
        ``access_flush_interval`` (and at exit), not on every embed call."""
        key = (str(self.root), name)
        when = when or now_utc()
        with _pending_lock:
            count, _ = _pending_access.get(key, (0, when))
            _pending_access[key] = (count + 1, when)
        if time.monotonic() - self._last_flush >= self.access_flush_interval:
            self.flush_access()

    def flush_access(self) -> None:
        self._last_flush = time.monotonic()
        prefix = str(self.root)
        with _pending_lock:
            mine = {k: v for k, v in _pending_access.items() if k[0] == prefix}
            for k in mine:
                del _pending_access[k]
        if not mine:
            return
        with contextlib.suppress(OSError, CaxtonError), self.lock():
            for (_, name), (count, when) in mine.items():
                m = self._read(name)
                if m is None or m.metadata is None or m.read_only:
                    continue
                meta = replace(
                    m.metadata,
                    access_count=m.metadata.access_count + count,
                    last_access=format_time(when),
                )
                with contextlib.suppress(OSError):
                    write_json_atomic(m.path / METADATA_FILE, meta.to_json())

    # ----------------------------------------------------------- staging & publishing

    def new_staging(self, name: str) -> Path:
        """A fresh, uniquely named directory in downloads/ for building ``name``."""
        check_name(name)
        self.ensure_dirs()
        path = self.downloads / f"{name}.staging.{os.getpid()}.{secrets.token_hex(6)}"
        try:
            os.mkdir(path, DIR_MODE)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise PermissionDenied(
                    f"the model cache {self.root} is read-only ({e.strerror}): installed models "
                    "still load, but nothing can be added. Point CAXTON_CACHE_DIR at a "
                    "writable directory.",
                    path=str(self.root),
                ) from None
            raise
        return path

    def finalize(
        self,
        staging: Path,
        *,
        name: str,
        files: Mapping[str, FileEntry],
        model_id: str,
        revision: str,
        commit: str | None,
        source: str,
        pinned: bool = False,
        previous: Metadata | None = None,
    ) -> Metadata:
        """Check that ``staging`` holds exactly ``files`` (regular files, right
        sizes), remove anything else (resume state), fix modes, then write the
        manifest and, last, the metadata."""
        expected = set(files)
        for rel, st in list(_walk_files(staging)):
            if rel not in expected:
                _rmtree(staging / rel)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise InvalidPath(f"{rel} in {staging} is not a regular file", path=rel)
            if st.st_size != files[rel].size:
                raise SizeMismatch(
                    f"{rel}: {st.st_size} bytes on disk, {files[rel].size} expected",
                    expected=files[rel].size,
                    actual=st.st_size,
                    path=rel,
                )
            os.chmod(staging / rel, FILE_MODE)
            expected.discard(rel)
        if expected:
            raise ValidationFailed(
                f"files missing after staging {name}: {', '.join(sorted(expected))}",
                model=name,
                files=sorted(expected),
            )
        for dirpath, dirnames, _ in os.walk(staging):
            for d in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, d), DIR_MODE)
        with contextlib.suppress(OSError):
            os.chmod(staging, DIR_MODE)
        now = format_time(now_utc())
        meta = Metadata(
            name=name,
            model_id=model_id,
            revision=revision,
            commit=commit,
            download_date=now,
            last_validated=now,
            download_source=source,
            total_size_bytes=sum(e.size for e in files.values()),
            file_count=len(files),
            validation_status="verified",
            access_count=previous.access_count if previous else 0,
            last_access=previous.last_access if previous else None,
            pinned=pinned or bool(previous and previous.pinned),
            last_update_check=now,
        )
        write_json_atomic(staging / CHECKSUM_FILE, manifest_json(files))
        write_json_atomic(staging / METADATA_FILE, meta.to_json())
        return meta

    def publish(self, name: str, staging: Path) -> InstalledModel:
        """Rename a finalized staging dir into place (replacing an older copy).
        A crash at any point leaves the old model or the new one."""
        check_name(name)
        target = self.model_dir(name)
        if not (staging / METADATA_FILE).is_file():
            raise ValidationFailed(f"refusing to publish {staging}: not finalized", model=name)
        with self.lock():
            # Without a working lock another process may publish between our two
            # renames (last writer wins; both copies are verified): retry.
            olds: list[Path] = []
            for attempt in range(8):
                if os.path.lexists(target):
                    old = self.downloads / f"{name}.old.{os.getpid()}.{secrets.token_hex(4)}"
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(target, old)  # a symlink is moved, never followed
                        olds.append(old)
                try:
                    os.rename(staging, target)
                    break
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 7:
                        raise
            _fsync_dir(self.root)
            for old in olds:
                trash = self.downloads / f"{name}.trash.{os.getpid()}.{secrets.token_hex(4)}"
                with contextlib.suppress(OSError):
                    os.rename(old, trash)
                    _rmtree(trash)
            self.rebuild_index()
        installed = self._read(name)
        assert installed is not None
        return installed

    def remove(self, name: str, *, force: bool = False) -> bool:
        """Remove one model (rename away, then delete). Refuses an in-use model
        unless ``force``."""
        with self.lock():
            target = self.model_dir(name)
            if not os.path.lexists(target):
                return False
            if not force and name in self.users():
                raise CacheFull(
                    f"model {name!r} is in use by a running process; not removed", model=name
                )
            self.ensure_dirs()
            trash = self.downloads / f"{name}.trash.{os.getpid()}.{secrets.token_hex(4)}"
            os.rename(target, trash)
            _rmtree(trash)
            self.rebuild_index()
            return True

    # ----------------------------------------------------------- eviction

    def make_room(
        self,
        *,
        policy: str,
        max_bytes: int | None,
        max_models: int | None,
        incoming_bytes: int = 0,
        incoming_name: str | None = None,
        free_bytes: int = 0,
        pinned_names: Iterable[str] = (),
        dry_run: bool = False,
    ) -> list[str]:
        """Evict (under the lock) what :func:`plan_eviction` chooses. Returns the
        evicted names. Nothing is evicted when the plan is impossible, or with
        ``dry_run``."""
        with self.lock():
            models = self.installed()
            protected = set(self.users()) | set(pinned_names)
            victims = plan_eviction(
                models,
                policy=policy,
                max_bytes=max_bytes,
                max_models=max_models,
                incoming_bytes=incoming_bytes,
                incoming_name=incoming_name,
                free_bytes=free_bytes,
                protected=protected,
            )
            for v in victims:
                if dry_run:
                    continue
                log.info("evicting %s (policy %s)", v, policy)
                self.remove(v, force=True)
            return victims

    def ensure_disk_space(
        self,
        required: int,
        *,
        policy: str,
        pinned_names: Iterable[str] = (),
        incoming_name: str | None = None,
        margin: int = 16 << 20,
    ) -> None:
        """Make sure ``required`` bytes (plus a margin) are free on the cache's
        filesystem, evicting by policy if needed; else InsufficientDiskSpace."""
        self.ensure_dirs()
        available = self._disk_free(self.root)
        if available >= required + margin:
            return
        if policy != "manual":
            with contextlib.suppress(CacheFull):
                self.make_room(
                    policy=policy,
                    max_bytes=None,
                    max_models=None,
                    free_bytes=required + margin - available,
                    incoming_name=incoming_name,
                    pinned_names=pinned_names,
                )
            available = self._disk_free(self.root)
            if available >= required + margin:
                return
        raise InsufficientDiskSpace(
            f"not enough disk space in {self.root}: {required} bytes needed, {available} free. "
            "Free space, remove models with 'caxton model remove', or move the cache "
            "(CAXTON_CACHE_DIR).",
            required=required,
            available=available,
        )

    def cleanup_unused(
        self, older_than: float, *, pinned_names: Iterable[str] = (), dry_run: bool = False
    ) -> list[str]:
        """Remove models not used for ``older_than`` seconds (never pinned or in use).
        ``dry_run`` only lists them."""
        self.flush_access()
        cutoff = now_utc().timestamp() - older_than
        removed = []
        with self.lock():
            protected = self.users() | set(pinned_names)
            for m in self.installed():
                if m.pinned or m.read_only or m.name in protected:
                    continue
                if m.last_access().timestamp() < cutoff:
                    if not dry_run:
                        self.remove(m.name, force=True)
                    removed.append(m.name)
        return removed

    # ----------------------------------------------------------- install from a folder

    def install_from_dir(
        self,
        name: str,
        src_dir: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        revision: str = "local",
        commit: str | None = None,
        expected: Mapping[str, str] | None = None,
        required_files: Iterable[str] = (),
        source: str = "local",
        allow_pickle: bool = False,
        pinned: bool = False,
        policy: str = "lru",
        max_bytes: int | None = None,
        max_models: int | None = None,
        check_formats: bool = True,
        exclude: Iterable[str] = (),
    ) -> InstalledModel:
        """Install the regular files of ``src_dir`` as model ``name``: copy them
        into a staging dir, hash the copies (``_core.hash_files``), check them
        against ``expected`` (registry checksums) and against a
        ``.caxton_checksum`` the folder carries (an export), check formats,
        then rename into place (``exclude``: paths not to install, such as an
        export's manifest). Symlinks, devices and unsafe names in the
        folder are refused before anything is copied."""
        from caxton_models.registry import is_pickle
        from caxton_models.validate import check_file_formats

        check_name(name)
        src = Path(src_dir)
        if not src.is_dir():
            raise InvalidPath(f"{src} is not a directory", path=str(src))
        listing: dict[str, int] = {}
        carried: dict[str, FileEntry] = {}
        carried_meta: Metadata | None = None
        skip = set(exclude)
        for rel, st in _walk_files(src):
            if rel in skip:
                continue
            top = rel.split("/", 1)[0]
            if top in (".git", ".cache") or rel.startswith(".git/"):
                continue
            if rel == CHECKSUM_FILE:
                with contextlib.suppress(OSError, ValueError, TypeError, InvalidPath):
                    carried = parse_manifest(read_json_nofollow(src / rel))
                continue
            if rel == METADATA_FILE:
                with contextlib.suppress(OSError, ValueError, TypeError, InvalidPath):
                    carried_meta = Metadata.from_json(read_json_nofollow(src / rel))
                continue
            if stat.S_ISLNK(st.st_mode):
                raise InvalidPath(
                    f"{display(rel)} in {src} is a symlink; install copies only regular files "
                    "inside the folder (copy the target in instead)",
                    path=rel,
                )
            if not stat.S_ISREG(st.st_mode):
                raise InvalidPath(f"{display(rel)} in {src} is not a regular file", path=rel)
            if rel.split("/")[-1].startswith(RESERVED_PREFIX):
                raise InvalidPath(f"{display(rel)} uses a name reserved for caxton", path=rel)
            listing[rel] = st.st_size
        check_unique(listing, what="file name")
        missing = [f for f in required_files if f not in listing]
        if missing:
            raise ValidationFailed(
                f"{src} lacks files model {name!r} needs: {', '.join(missing)}",
                model=name,
                files=missing,
            )
        pickles = [p for p in listing if is_pickle(p)]
        if pickles and not allow_pickle:
            from caxton_models.errors import UnsafeModel

            raise UnsafeModel(
                f"{src} contains pickle weights ({', '.join(pickles)}), which can run code when "
                "loaded; remove them (keep safetensors/ONNX) or pass allow_pickle=True",
                model=name,
                files=pickles,
            )
        total = sum(listing.values())
        if max_bytes is not None or max_models is not None:
            self.make_room(
                policy=policy,
                max_bytes=max_bytes,
                max_models=max_models,
                incoming_bytes=total,
                incoming_name=name,
            )
        self.ensure_disk_space(total, policy=policy, incoming_name=name)
        staging = self.new_staging(name)
        try:
            paths = sorted(listing)
            for rel in paths:
                dst = safe_join(staging, rel)
                dst.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
                _copy_nofollow(src / rel, dst)
            digests = _core.hash_files([staging / p for p in paths], "sha256")
            files: dict[str, FileEntry] = {}
            for rel, digest in zip(paths, digests, strict=False):
                size = os.lstat(staging / rel).st_size
                want = (expected or {}).get(rel) or (
                    carried[rel].sha256 if rel in carried else None
                )
                if want is not None and want != digest:
                    raise ChecksumMismatch(
                        f"{rel} of model {name!r} from {src}: sha256 {digest}, expected {want}. "
                        "The folder is corrupt or a different version; nothing was installed.",
                        expected=want,
                        actual=digest,
                        path=rel,
                    )
                if rel in carried and carried[rel].size != size:
                    raise SizeMismatch(
                        f"{rel}: {size} bytes, the folder's manifest says {carried[rel].size}",
                        expected=carried[rel].size,
                        actual=size,
                        path=rel,
                    )
                prev = carried.get(rel)
                files[rel] = FileEntry(
                    size, digest, prev.git_oid if prev else None, prev.lfs if prev else False
                )
            if check_formats:
                check_file_formats(staging, paths, model=name)
            previous = self._read(name)
            meta_src = carried_meta
            self.finalize(
                staging,
                name=name,
                files=files,
                model_id=model_id or (meta_src.model_id if meta_src else f"local/{name}"),
                revision=revision if revision != "local" or meta_src is None else meta_src.revision,
                commit=commit or (meta_src.commit if meta_src else None),
                source=source,
                pinned=pinned,
                previous=previous.metadata if previous else None,
            )
            return self.publish(name, staging)
        except BaseException:
            _rmtree(staging)
            raise


def _copy_nofollow(src: Path, dst: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(src, flags)
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise InvalidPath(f"{src} is not a regular file", path=str(src))
        out = os.open(dst, NEW_FILE_FLAGS, FILE_MODE)
        with os.fdopen(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
