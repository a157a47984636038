"""ModelCache: one cache directory, and the only reader and writer of its files.

Invariants:

* A model directory appears only complete and verified: it is built aside in
  ``downloads/`` (metadata and manifest written last, inside it) and renamed
  into place. Replacing one moves the old dir aside first; a crash between the
  two renames is undone on the next open (the old dir is put back). A
  published model directory is never written again, except its metadata.
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

import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from caxton_models._paths import check_name
from caxton_models.errors import (
    CacheFull,
    CaxtonError,
    InsufficientDiskSpace,
    InvalidPath,
    ModelInUse,
    PermissionDenied,
)
from caxton_models.store._cache_revisions import CacheRevisions
from caxton_models.store._evict import evictable, plan_eviction
from caxton_models.store._finalize import finalize, fresh_metadata
from caxton_models.store._fs import (
    DIR_MODE,
    read_json_nofollow,
    rmtree,
    walk_files,
    write_json_atomic,
)
from caxton_models.store._graphs import GRAPHS, GraphCache
from caxton_models.store._leases import ACCESS, INUSE, Leases
from caxton_models.store._limits import CacheLimits
from caxton_models.store._live import owner_token, reclaim_dead_owners
from caxton_models.store._lock import FileLock
from caxton_models.store._read import read_model
from caxton_models.store._records import (
    METADATA_FILE,
    SCHEMA_VERSION,
    InstalledModel,
    Metadata,
    format_time,
    now_utc,
)
from caxton_models.store._recovery import recover_entry, remove_dead_temps, stale_entries

log = logging.getLogger("caxton_models.store")

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".lock"
DOWNLOADS = "downloads"


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
        self._lock = FileLock(self.root / LOCK_FILE, lock_timeout)
        self._disk_free = disk_free or (lambda p: shutil.disk_usage(p).free)
        self._last_flush = time.monotonic()
        self.leases = Leases(self.root, self.ensure_dirs)
        self.graphs = GraphCache(self.root)
        self.revision_ops = CacheRevisions(
            self.root,
            self.downloads,
            lock=self.lock,
            graphs=self.graphs,
            read=self._read,
            recover=self.recover,
            rebuild_index=self.rebuild_index,
            update_metadata=self.update_metadata,
        )
        # Takes the cache lock itself for every change of revision state.
        self.revisions = self.revision_ops.store
        self._recovered = False
        ACCESS.register(str(self.root), self._write_access)

    # ----------------------------------------------------------- basics

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS

    def ensure_dirs(self) -> None:
        """Create the root and downloads/ (0755 & ~umask), refusing a symlinked
        downloads/ (someone could point our writes elsewhere)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            for sub in (DOWNLOADS, INUSE, GRAPHS):
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
        return read_model(self.model_dir(name), name, self.graphs.bytes_for(name))

    def get(self, name: str) -> InstalledModel | None:
        """The installed model ``name``, or None. Applies pending access counts."""
        self.recover()
        m = self._read(name)
        if m is not None and m.metadata is not None:
            pend = ACCESS.pending(str(self.root), name)
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
        with contextlib.suppress(OSError):
            remove_dead_temps(self.root)
            for entry in os.listdir(self.root):
                if not entry.startswith(".") and entry != DOWNLOADS:
                    remove_dead_temps(self.root / entry)
        with contextlib.suppress(OSError), self.lock():
            for entry in os.listdir(self.downloads):
                recover_entry(self.root, self.downloads, entry)
            for name in self.revisions.names():
                with contextlib.suppress(OSError, InvalidPath):
                    self.revisions.recover(check_name(name))

    def reclaim_temp(self, max_age: float, *, dry_run: bool = False) -> list[str]:
        """Remove leftovers in downloads/ older than ``max_age`` seconds, and the
        leases of dead processes. ``dry_run`` only lists them."""
        if not self.downloads.is_dir():
            return []
        with self.lock():
            removed = stale_entries(self.downloads, max_age)
            if not dry_run:
                for entry in removed:
                    rmtree(self.downloads / entry)
                self.leases.reclaim_dead()
                reclaim_dead_owners(self.root)
        return removed

    def temp_bytes(self) -> int:
        total = 0
        if self.downloads.is_dir():
            with contextlib.suppress(OSError):
                for _, st in walk_files(self.downloads):
                    total += st.st_size
        return total

    # ----------------------------------------------------------- in use / pins

    def in_use(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Mark ``name`` as in use (by this process) so no process evicts it."""
        return self.leases.hold(name)

    def acquire(self, name: str) -> None:
        self.leases.acquire(name)

    def release(self, name: str) -> None:
        self.leases.release(name)

    def users(self) -> set[str]:
        """Names some live process (this one included) is using."""
        return self.leases.users()

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

    def restore_metadata(
        self, name: str, *, model_id: str, revision: str, commit: str | None
    ) -> Metadata | None:
        """Write fresh metadata (status verified, source ``recovered``) for a
        model whose record was lost but whose files the caller verified in
        full. Best effort: None when it cannot (read-only, gone, or the record
        is back)."""
        with contextlib.suppress(OSError), self.lock():
            m = self._read(name)
            if m is None or m.manifest is None or m.metadata is not None or m.read_only:
                return None
            meta = fresh_metadata(
                name, model_id, revision, commit, "recovered", m.files_bytes, len(m.manifest)
            )
            write_json_atomic(m.path / METADATA_FILE, meta.to_json())
            self.rebuild_index()
            return meta
        return None

    def touch(self, name: str, *, when: datetime | None = None) -> None:
        """Count one access. Kept in memory and written at most once per
        ``access_flush_interval`` (and at exit), not on every embed call."""
        ACCESS.count(str(self.root), name, when or now_utc())
        if time.monotonic() - self._last_flush >= self.access_flush_interval:
            self.flush_access()

    def flush_access(self) -> None:
        self._last_flush = time.monotonic()
        taken = ACCESS.take(str(self.root))
        if taken:
            self._write_access(taken)

    def _write_access(self, taken: Mapping[str, tuple[int, datetime]]) -> None:
        with contextlib.suppress(OSError, CaxtonError), self.lock():
            for name, (count, when) in taken.items():
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
        path = self.downloads / f"{name}.staging.{owner_token(self.root)}.{secrets.token_hex(6)}"
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

    # Needs nothing of the cache: the staging folder is private until published.
    finalize = staticmethod(finalize)

    def publish(self, name: str, staging: Path, *, switch: bool = True) -> InstalledModel:
        """Put a finalized staging dir in place (see :meth:`CacheRevisions.publish`)."""
        return self.revision_ops.publish(name, staging, switch=switch)

    # ----------------------------------------------------------- revisions (CacheRevisions)

    def stored_revisions(self, name: str) -> list[InstalledModel]:
        return self.revision_ops.stored_revisions(name)

    def find_revision(self, name: str, key: str) -> InstalledModel | None:
        return self.revision_ops.find_revision(name, key)

    def revision_state(self, name: str) -> dict[str, Any]:
        return self.revision_ops.revision_state(name)

    def record_update_check(self, name: str, **fields: Any) -> None:
        self.revision_ops.record_update_check(name, **fields)

    def remove_revision(self, name: str, key: str) -> list[str]:
        return self.revision_ops.remove_revision(name, key)

    def revision_names(self) -> list[str]:
        return self.revision_ops.revision_names()

    def switch(self, name: str, key: str) -> InstalledModel:
        return self.revision_ops.switch(name, key)

    def rollback(self, name: str) -> InstalledModel:
        return self.revision_ops.rollback(name)

    def remove_revisions(self, name: str, *, dry_run: bool = False) -> list[str]:
        return self.revision_ops.remove_revisions(name, dry_run=dry_run)

    def remove(self, name: str, *, force: bool = False) -> bool:
        """Remove one model (rename away, then delete). Refuses an in-use model
        unless ``force``."""
        with self.lock():
            target = self.model_dir(name)
            if not os.path.lexists(target):
                return False
            if not force and name in self.users():
                raise ModelInUse(
                    f"model {name!r} is in use by a running process; not removed. Stop that "
                    "process first, or remove with force",
                    model=name,
                )
            self.ensure_dirs()
            trash = self.downloads / f"{name}.trash.{owner_token(self.root)}.{secrets.token_hex(4)}"
            self.revisions.remove(name)  # first: a crash leaves the current one alone
            os.rename(target, trash)
            rmtree(trash)
            self.graphs.drop(name)
            self.rebuild_index()
            return True

    # ----------------------------------------------------------- eviction

    def make_room(
        self,
        limits: CacheLimits,
        *,
        incoming_bytes: int = 0,
        incoming_name: str | None = None,
        free_bytes: int = 0,
        dry_run: bool = False,
    ) -> list[str]:
        """Evict (under the lock) what :func:`plan_eviction` chooses under
        ``limits``. Returns the evicted names. Nothing is evicted when the plan
        is impossible, or with ``dry_run``."""
        with self.lock():
            victims = plan_eviction(
                self.installed(),
                limits,
                incoming_bytes=incoming_bytes,
                incoming_name=incoming_name,
                free_bytes=free_bytes,
                in_use=self.users(),
            )
            for v in victims:
                if dry_run:
                    continue
                log.info("evicting %s (policy %s)", v, limits.policy)
                self.remove(v, force=True)
            return victims

    def ensure_disk_space(
        self, required: int, limits: CacheLimits, *, incoming_name: str | None = None
    ) -> None:
        """Make sure ``required`` bytes (plus ``limits.reserve_bytes``) are free
        on the cache's filesystem, evicting by ``limits.policy`` if needed (the
        size and count limits do not apply here, the pins do); else
        InsufficientDiskSpace."""
        self.ensure_dirs()
        wanted = required + limits.reserve_bytes
        available = self._disk_free(self.root)
        if available >= wanted:
            return
        if limits.policy != "manual":
            with contextlib.suppress(CacheFull):
                self.make_room(
                    limits.unbounded(),
                    free_bytes=wanted - available,
                    incoming_name=incoming_name,
                )
            available = self._disk_free(self.root)
            if available >= wanted:
                return
        raise InsufficientDiskSpace(
            f"not enough disk space in {self.root}: {required} bytes needed, {available} free. "
            "Free space, remove models with 'caxton model remove', or move the cache "
            "(CAXTON_CACHE_DIR).",
            required=required,
            available=available,
        )

    def cleanup_unused(
        self, older_than: float, limits: CacheLimits, *, dry_run: bool = False
    ) -> list[str]:
        """Remove models not used for ``older_than`` seconds, never one that
        eviction would keep (pinned by ``limits``, in use, read-only).
        ``dry_run`` only lists them."""
        self.flush_access()
        cutoff = now_utc().timestamp() - older_than
        removed = []
        with self.lock():
            in_use = self.users()
            for m in self.installed():
                if not evictable(m, limits, in_use):
                    continue
                if m.last_access().timestamp() < cutoff:
                    if not dry_run:
                        self.remove(m.name, force=True)
                    removed.append(m.name)
        return removed
