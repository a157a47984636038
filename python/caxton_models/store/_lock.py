"""The cache's cross-process lock.

Why not ``filelock`` (installed with huggingface_hub): its ``FileLock`` opens
the lock path with ``O_CREAT|O_TRUNC`` and follows a symlink planted there
(RELIABILITY: planted symlinks), fails instead of proceeding on a read-only
cache, and cannot remove a transient lock file safely (we check, after
locking, that the file we hold is still the one at the path). Correctness
never depends on this lock: it only avoids duplicated work.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from caxton_models.errors import CaxtonError
from caxton_models.store._fs import FILE_MODE

log = logging.getLogger("caxton_models.store")


class FileLock:
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
        if os.environ.get("CAXTON_NO_LOCKS") == "1":
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
