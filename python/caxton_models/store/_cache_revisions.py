"""The revision side of :class:`ModelCache`: publishing in place, switching
between stored revisions, rollback and cleanup (see ``_revisions``)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models._paths import check_name
from caxton_models.errors import ModelNotFound
from caxton_models.store._fs import fsync_dir, rmtree
from caxton_models.store._live import owner_token
from caxton_models.store._records import InstalledModel

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from caxton_models.store._graphs import GraphCache
    from caxton_models.store._revisions import RevisionStore


class RevisionOps:
    if TYPE_CHECKING:
        revisions: RevisionStore
        graphs: GraphCache
        root: Path

        @property
        def downloads(self) -> Path: ...

        def lock(self) -> AbstractContextManager[None]: ...
        def model_dir(self, name: str) -> Path: ...
        def _read(self, name: str) -> InstalledModel | None: ...
        def recover(self, *, force: bool = False) -> None: ...
        def rebuild_index(self) -> dict[str, Any]: ...

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
        self.recover()
        return self.revisions.stored(check_name(name))

    def find_revision(self, name: str, key: str) -> InstalledModel | None:
        """The stored revision ``key`` (a commit or folder key) of ``name``, or None."""
        return self.revisions.find(check_name(name), key)

    def revision_state(self, name: str) -> dict[str, Any]:
        """``state.json`` of ``name``: ``previous``, and the last update check's
        ``tracking``, ``latest_commit``, ``available``, ``last_update_check``."""
        return self.revisions.state(check_name(name))

    def record_update_check(self, name: str, **fields: Any) -> None:
        """Merge what an update check found into ``state.json`` (under the
        lock: it never writes back a ``previous`` a switch changed meanwhile)."""
        if "previous" in fields:
            raise ValueError("an update check does not set the previous revision")
        self.revisions.set_state(check_name(name), **fields)

    def remove_revision(self, name: str, key: str) -> list[str]:
        """Delete one stored revision (e.g. a staged one that failed validation)."""
        return self.revisions.remove(check_name(name), key)

    def revision_names(self) -> list[str]:
        """The models that have revisions stored beside the current one."""
        return self.revisions.names()

    def switch(self, name: str, key: str) -> InstalledModel:
        """Make the stored revision ``key`` (a commit) current, atomically;
        the current one is kept beside it for a rollback."""
        check_name(name)
        with self.lock():
            stored = self.revisions.find(name, key)
            if stored is None:
                raise ModelNotFound(
                    f"{name} has no stored revision {key!r}; stored: "
                    f"{', '.join(m.path.name for m in self.revisions.stored(name)) or 'none'}",
                    model=name,
                    kind="revision",
                )
            self.revisions.switch(name, stored.path.name, self._read(name))
            self.graphs.drop(name)
            self.rebuild_index()
        installed = self._read(name)
        assert installed is not None
        return installed

    def rollback(self, name: str) -> InstalledModel:
        """Return ``name`` to the revision it had before the last switch (kept
        until cleanup removes it)."""
        check_name(name)
        with self.lock():
            prev = self.revisions.previous(name)
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
            keys = [m.path.name for m in self.revisions.stored(name)]
            if not dry_run and keys:
                self.revisions.remove(name)
            return keys
