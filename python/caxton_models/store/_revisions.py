"""Revisions of one model side by side.

Layout::

    <root>/<name>/                          the current revision (what ``get`` returns)
    <root>/.revisions/<name>/<key>/         other revisions: the previous one, staged ones
    <root>/.revisions/<name>/state.json     the previous key, the last update check
    <root>/.revisions/<name>/switching.json written before a switch, removed after

``<key>`` is the commit (or ``local-<hash of the manifest>`` for a folder
installed without one). Only finalized folders (metadata written last) are
ever renamed into ``.revisions/``, so every entry there is a whole revision.
Files identical between revisions are hard links (see ``acquire._fetch``).

A switch exchanges the staged folder and the current one in one
``renameat2(RENAME_EXCHANGE)`` where the kernel offers it (Linux >= 3.15), so
a reader always finds a current revision; the exchanged-out folder then gets
its own key. Elsewhere it is two renames with ``switching.json`` written
first: a crash between them is undone by :func:`recover` (the old revision
is put back). A process that has a revision open keeps reading it after a
switch (the inodes live on, even after cleanup deletes the folder).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import secrets
import stat
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from caxton_models.errors import InvalidPath, ModelNotFound
from caxton_models.store._fs import (
    DIR_MODE,
    fsync_dir,
    read_json_nofollow,
    rmtree,
    walk_files,
    write_json_atomic,
)
from caxton_models.store._live import owner_token
from caxton_models.store._read import read_model
from caxton_models.store._records import (
    METADATA_FILE,
    InstalledModel,
    manifest_json,
)

log = logging.getLogger("caxton_models.store")

REVISIONS = ".revisions"
STATE_FILE = "state.json"
SWITCHING_FILE = "switching.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def revision_key(m: InstalledModel) -> str:
    """The folder name of ``m`` under ``.revisions/<name>/``."""
    if m.metadata is not None and m.metadata.commit:
        return m.metadata.commit
    text = json.dumps(manifest_json(m.manifest or {}), sort_keys=True)
    return "local-" + hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _libc() -> Any:
    """The C library, loaded on the first exchange. dlopen(NULL) finds it among the
    interpreter's own libraries: ``ctypes.util.find_library`` would run ``ldconfig -p``
    in a subprocess, which every import of the store paid before."""
    if not sys.platform.startswith("linux"):
        return None
    for name in (None, "libc.so.6"):
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        if hasattr(lib, "renameat2"):
            return lib
    return None


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when this system cannot (then the
    caller falls back to two renames)."""
    if os.environ.get("CAXTON_NO_RENAME_EXCHANGE") == "1":
        return False  # tests exercise the fallback and its recovery
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _no_lock() -> AbstractContextManager[None]:
    return contextlib.nullcontext()


class RevisionStore:
    """The revisions of the models of one cache root. Every change of state
    (stage, switch, state.json, removal, recovery) takes ``lock`` itself (the
    cache's re-entrant cross-process lock), so no caller can change one
    without it: a read-modify-write of ``state.json`` by a background update
    check cannot interleave with a switch and write back a stale
    ``previous``. Reads take no lock (every change is a rename)."""

    def __init__(
        self, root: Path, lock: Callable[[], AbstractContextManager[None]] = _no_lock
    ) -> None:
        self.root = root
        self._lock = lock

    def folder(self, name: str) -> Path:
        return self.root / REVISIONS / name

    def path(self, name: str, key: str) -> Path:
        return self.folder(name) / key

    def stored(self, name: str) -> list[InstalledModel]:
        """Every revision of ``name`` beside the current one, oldest first."""
        out = []
        try:
            entries = os.listdir(self.folder(name))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            if entry.startswith(".") or entry.endswith(".json"):
                continue
            m = read_model(self.folder(name) / entry, name)
            if m is not None and m.metadata is not None:
                out.append(m)
        return sorted(out, key=lambda m: (m.installed_at(), m.path.name))

    def find(self, name: str, key: str) -> InstalledModel | None:
        for m in self.stored(name):
            if m.path.name == key or (m.metadata and m.metadata.commit == key):
                return m
        return None

    # ----------------------------------------------------------------- state

    def state(self, name: str) -> dict[str, Any]:
        try:
            data = read_json_nofollow(self.folder(name) / STATE_FILE, limit=1 << 20)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def set_state(self, name: str, **changes: Any) -> None:
        """Merge ``changes`` into ``state.json`` (read and write under the lock)."""
        with self._lock():
            self._make(name)
            write_json_atomic(self.folder(name) / STATE_FILE, {**self.state(name), **changes})

    # ----------------------------------------------------------------- moves

    def stage(
        self, name: str, staging: Path, key: str, current: InstalledModel | None = None
    ) -> Path:
        """Move a finalized staging folder beside the current revision (a
        revision already stored under ``key`` is replaced). Its files that
        another revision already has (same size and SHA-256) become hard links
        to that copy: stored once."""
        with self._lock():
            return self._stage(name, staging, key, current)

    def _stage(self, name: str, staging: Path, key: str, current: InstalledModel | None) -> Path:
        self._make(name)
        new = read_model(staging, name)
        if new is not None and new.manifest is not None:
            others = [current] if current is not None else []
            _dedupe(staging, new, [*others, *self.stored(name)])
        dest = self.path(name, key)
        if os.path.lexists(dest):
            self._discard(dest)
        os.rename(staging, dest)
        fsync_dir(self.folder(name))
        return dest

    def _make(self, name: str) -> None:
        """Create ``.revisions/<name>/``, refusing a symlink planted on the way."""
        for p in (self.root / REVISIONS, self.folder(name)):
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(p, DIR_MODE)
                st = os.lstat(p)
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidPath(f"{p} is not a directory (a symlink?); remove it", path=str(p))

    def _discard(self, path: Path) -> None:
        trash = path.with_name(f".trash.{owner_token(self.root)}.{secrets.token_hex(4)}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
        rmtree(trash)

    def switch(self, name: str, key: str, current: InstalledModel | None) -> str | None:
        """Make the stored revision ``key`` current. Returns the key the old
        current revision is now stored under (None when there was none)."""
        with self._lock():
            return self._switch(name, key, current)

    def _switch(self, name: str, key: str, current: InstalledModel | None) -> str | None:
        src = self.path(name, key)
        if not (src / METADATA_FILE).is_file():
            raise ModelNotFound(f"{name} has no stored revision {key}", model=name)
        target = self.root / name
        old_key = revision_key(current) if current is not None else None
        if current is None or not os.path.lexists(target):
            os.rename(src, target)
        elif exchange(src, target):
            # src now holds the old revision under the new one's key.
            self._settle(name, src, old_key or key)
        else:
            marker = self.folder(name) / SWITCHING_FILE
            write_json_atomic(marker, {"from": old_key, "to": key})
            parked = self.path(name, f".old.{secrets.token_hex(4)}")
            os.rename(target, parked)
            os.rename(src, target)
            self._settle(name, parked, old_key or key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)
        fsync_dir(self.root)
        if old_key is not None and old_key != key:
            with contextlib.suppress(OSError):
                os.utime(self.path(name, old_key))  # its mtime: when it stopped being current
            self.set_state(name, previous=old_key)
        return old_key

    def _settle(self, name: str, path: Path, key: str) -> None:
        dest = self.path(name, key)
        if path == dest:
            return
        if os.path.lexists(dest):
            self._discard(dest)
        os.rename(path, dest)

    def previous(self, name: str) -> InstalledModel | None:
        """The revision a rollback returns to: the one recorded as previous,
        else the one most recently replaced."""
        recorded = self.state(name).get("previous")
        if isinstance(recorded, str):
            m = self.find(name, recorded)
            if m is not None:
                return m
        stored = self.stored(name)
        return max(stored, key=lambda m: m.path.stat().st_mtime) if stored else None

    def remove(self, name: str, key: str | None = None) -> list[str]:
        """Delete one stored revision, or every one (``key`` None)."""
        with self._lock():
            return self._remove(name, key)

    def _remove(self, name: str, key: str | None) -> list[str]:
        removed = []
        for m in self.stored(name):
            if key is None or m.path.name == key:
                self._discard(m.path)
                removed.append(m.path.name)
        if key is None:
            rmtree(self.folder(name))
        elif self.state(name).get("previous") in removed:
            self.set_state(name, previous=None)
        return removed

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root / REVISIONS))
        except FileNotFoundError:
            return []

    def recover(self, name: str) -> None:
        """Undo a switch a crash interrupted."""
        with self._lock():
            self._recover(name)

    def _recover(self, name: str) -> None:
        folder = self.folder(name)
        target = self.root / name
        marker = folder / SWITCHING_FILE
        parked = sorted(p for p in _listdir(folder) if p.startswith(".old."))
        if parked and not os.path.lexists(target):
            log.warning("restoring %s after an interrupted revision switch", name)
            os.rename(folder / parked[0], target)
            parked = parked[1:]
        for entry in parked:  # the new one is in place: keep the old one stored
            m = read_model(folder / entry, name)
            if m is not None and m.metadata is not None:
                self._settle(name, folder / entry, revision_key(m))
            else:
                rmtree(folder / entry)
        for entry in _listdir(folder):
            if entry.startswith(".trash."):
                rmtree(folder / entry)
                continue
            if entry.startswith(".") or entry.endswith(".json"):
                continue
            # After an exchange, before the rename: the folder is under the wrong key.
            m = read_model(folder / entry, name)
            if m is not None and m.metadata is not None and revision_key(m) != entry:
                self._settle(name, folder / entry, revision_key(m))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)

    def bytes_beside(self, name: str, current: InstalledModel | None) -> int:
        """Disk used by the stored revisions beyond what they share (hard
        links) with the current one."""
        seen: set[tuple[int, int]] = set()
        if current is not None:
            seen |= _inodes(current.path)
        total = 0
        for m in self.stored(name):
            for ident, size in _sized_inodes(m.path):
                if ident not in seen:
                    seen.add(ident)
                    total += size
        return total


Revisions = RevisionStore  # the name the first callers used


def _dedupe(staging: Path, new: InstalledModel, others: list[InstalledModel]) -> None:
    """Replace files of ``staging`` by hard links to identical files of
    ``others`` (staging is private: nobody reads it yet)."""
    assert new.manifest is not None
    have: dict[tuple[int, str], Path] = {}
    for m in others:
        for rel, e in (m.manifest or {}).items():
            have.setdefault((e.size, e.sha256), m.path / rel)
    for rel, e in new.manifest.items():
        src = have.get((e.size, e.sha256))
        if src is None:
            continue
        dst = staging / rel
        tmp = dst.with_name(f".{dst.name}.link.{secrets.token_hex(4)}")
        try:
            if os.lstat(src).st_size != e.size or not stat.S_ISREG(os.lstat(src).st_mode):
                continue
            os.link(src, tmp, follow_symlinks=False)
            os.replace(tmp, dst)
        except OSError as err:  # another file system, no hard links: keep the copy
            log.debug("not linking %s: %s", rel, err)
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _sized_inodes(path: Path) -> list[tuple[tuple[int, int], int]]:
    out = []
    with contextlib.suppress(OSError):
        for _, st in walk_files(path):
            out.append(((st.st_dev, st.st_ino), st.st_size))
    return out


def _inodes(path: Path) -> set[tuple[int, int]]:
    return {ident for ident, _ in _sized_inodes(path)}
