"""The revision side of :class:`ModelCache`: publishing (in place, or beside
the current revision), switching between stored revisions, rollback and
cleanup (see ``_revisions``). Built by the cache from the parts it needs."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from caxton_models._paths import check_name
from caxton_models.errors import ModelNotFound, RevisionGone, ValidationFailed
from caxton_models.store._fs import fsync_dir, rmtree
from caxton_models.store._graphs import GraphCache
from caxton_models.store._live import owner_token
from caxton_models.store._read import read_model
from caxton_models.store._records import METADATA_FILE, InstalledModel
from caxton_models.store._revisions import RevisionStore, revision_key


class CacheRevisions:
    """The revisions of one cache root. ``read``: a model's current folder as
    the cache reads it; ``recover``: the cache's crash recovery (run before a
    listing); ``rebuild_index``: rewrites ``registry.json`` after a change;
    ``lock``: the cache's re-entrant cross-process lock; ``update_metadata``:
    rewrites one field of the current revision's record."""

    def __init__(
        self,
        root: Path,
        downloads: Path,
        *,
        lock: Callable[[], AbstractContextManager[None]],
        graphs: GraphCache,
        read: Callable[[str], InstalledModel | None],
        recover: Callable[[], None],
        rebuild_index: Callable[[], Any],
        update_metadata: Callable[..., Any],
    ) -> None:
        self.root = root
        self.downloads = downloads
        self.lock = lock
        self.graphs = graphs
        self.store = RevisionStore(root, lock)
        self._read = read
        self._recover = recover
        self._rebuild_index = rebuild_index
        self._update_metadata = update_metadata

    def model_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def publish(self, name: str, staging: Path, *, switch: bool = True) -> InstalledModel:
        """Put a finalized staging dir in place. A different revision is moved
        beside the current one (``.revisions/``) and, with ``switch``, made
        current, the old one kept for a rollback; the same revision (a repair)
        replaces the current copy. A crash at any point leaves a valid current
        revision. Returns the revision published (current or staged)."""
        check_name(name)
        if not (staging / METADATA_FILE).is_file():
            raise ValidationFailed(f"refusing to publish {staging}: not finalized", model=name)
        with self.lock():
            new = read_model(staging, name)
            current = self._read(name)
            beside = (
                new is not None
                and current is not None
                and current.metadata is not None
                and current.manifest is not None
                and revision_key(current) != revision_key(new)
            )
            if not beside and not switch:
                raise ValidationFailed(
                    f"cannot stage {name} beside its current revision: it is the same revision "
                    "(or the current copy is damaged); publish it in place instead",
                    model=name,
                )
            if beside:
                assert new is not None
                key = revision_key(new)
                stored = self.store.stage(name, staging, key, current)
                if not switch:
                    self._rebuild_index()
                    staged = read_model(stored, name)
                    assert staged is not None
                    return staged
                self.store.switch(name, key, current)
                self.graphs.drop(name)  # derived from the revision that was replaced
            else:
                self._replace(name, staging)
            self._rebuild_index()
            return self._settled(name)

    def _replace(self, name: str, staging: Path) -> None:
        """Rename ``staging`` over the current copy, which is deleted (the
        caller holds the lock)."""
        target = self.model_dir(name)
        # Without a working lock another process may publish between our two
        # renames (last writer wins; both copies are verified): retry.
        olds: list[Path] = []
        for attempt in range(8):
            if os.path.lexists(target):
                old = self.downloads / f"{name}.old.{owner_token(self.root)}.{secrets.token_hex(4)}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(target, old)  # a symlink is moved, never followed
                    olds.append(old)
            try:
                os.rename(staging, target)
                break
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 7:
                    raise
        fsync_dir(self.root)
        if olds:
            self.graphs.drop(name)  # derived from the copy that was replaced
        for old in olds:
            trash = self.downloads / f"{name}.trash.{owner_token(self.root)}.{secrets.token_hex(4)}"
            with contextlib.suppress(OSError):
                os.rename(old, trash)
                rmtree(trash)

    # ----------------------------------------------------------- revisions

    def stored_revisions(self, name: str) -> list[InstalledModel]:
        """The revisions of ``name`` kept beside the current one (previous, staged)."""
        self._recover()
        return self.store.stored(check_name(name))

    def find_revision(self, name: str, key: str) -> InstalledModel | None:
        """The stored revision ``key`` (a commit or folder key) of ``name``, or None."""
        return self.store.find(check_name(name), key)

    def revision_state(self, name: str) -> dict[str, Any]:
        """``state.json`` of ``name``: ``previous``, and the last update check's
        ``tracking``, ``latest_commit``, ``available``, ``last_update_check``."""
        return self.store.state(check_name(name))

    def record_update_check(self, name: str, **fields: Any) -> None:
        """Merge what an update check found into ``state.json`` (under the
        lock: it never writes back a ``previous`` a switch changed meanwhile)."""
        if "previous" in fields:
            raise ValueError("an update check does not set the previous revision")
        self.store.set_state(check_name(name), **fields)

    def remove_revision(self, name: str, key: str) -> list[str]:
        """Delete one stored revision (e.g. a staged one that failed validation)."""
        return self.store.remove(check_name(name), key)

    def revision_names(self) -> list[str]:
        """The models that have revisions stored beside the current one."""
        return self.store.names()

    def switch(self, name: str, key: str) -> InstalledModel:
        """Make the stored revision ``key`` (a commit) current, atomically;
        the current one is kept beside it for a rollback."""
        check_name(name)
        with self.lock():
            stored = self.store.find(name, key)
            if stored is None:
                raise ModelNotFound(
                    f"{name} has no stored revision {key!r}; stored: "
                    f"{', '.join(m.path.name for m in self.store.stored(name)) or 'none'}",
                    model=name,
                    kind="revision",
                )
            current = self._read(name)
            self.store.switch(name, stored.path.name, current)
            self.graphs.drop(name)
            self._keep_pin(name, current)
            self._rebuild_index()
            return self._settled(name)

    def _settled(self, name: str) -> InstalledModel:
        """The copy just put in place, read under the lock. Without a working
        lock (CAXTON_NO_LOCKS=1, or NFS) another process may be between the two
        renames of its own publish of the same model, so the folder is briefly
        absent: wait that out (found by the fault matrix's eight processes, rep
        12 of 20, as an AssertionError)."""
        for _ in range(100):
            installed = self._read(name)
            if installed is not None:
                return installed
            time.sleep(0.01)
        raise RevisionGone(
            f"{name} was replaced by another process while it was being published; "
            "load it again (run with locks to avoid this)",
            model=name,
        )

    def _keep_pin(self, name: str, replaced: InstalledModel | None) -> None:
        """A pin is the model's, not one revision's: the revision switched to
        takes the pin state of the one it replaced (a stored revision keeps
        the state it had when it was stored, which a pin or unpin since made stale)."""
        if replaced is None or replaced.metadata is None:
            return
        now = self._read(name)
        if now is not None and now.metadata is not None and now.pinned != replaced.pinned:
            self._update_metadata(name, pinned=replaced.pinned)

    def rollback(self, name: str) -> InstalledModel:
        """Return ``name`` to the revision it had before the last switch (kept
        until cleanup removes it)."""
        check_name(name)
        with self.lock():
            prev = self.store.previous(name)
            if prev is None:
                raise ModelNotFound(
                    f"{name} has no previous revision to roll back to (none is stored beside "
                    "the current one: it was never updated, or cleanup removed it)",
                    model=name,
                    kind="revision",
                )
            return self.switch(name, prev.path.name)

    def remove_revisions(self, name: str, *, dry_run: bool = False) -> list[str]:
        """Delete every revision stored beside the current one (the cleanup
        after which rollback is no longer possible)."""
        check_name(name)
        with self.lock():
            keys = [m.path.name for m in self.store.stored(name)]
            if not dry_run and keys:
                self.store.remove(name)
            return keys
