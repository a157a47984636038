"""Who is using a model: in-use leases (so no process evicts it) and access
counts (for LRU), both owned by the store.

Leases are files ``<root>/.inuse/<name>.<owner>.<hex>``: a lease whose owner
is alive (it holds the lock on its ``.live`` token, see ``_live``; a PID
would say nothing across containers) protects the model from eviction and
removal in every process sharing the cache; a dead owner's lease is ignored
and reclaimed. Access counts are kept in memory and
written into the metadata at most once per flush interval and at exit, not on
every embed call.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from caxton_models._paths import check_name
from caxton_models.store._fs import FILE_MODE, NEW_FILE_FLAGS
from caxton_models.store._live import owner_alive, owner_of, owner_token

INUSE = ".inuse"


class Leases:
    """This process's leases on the models of one cache root."""

    def __init__(self, root: Path, ensure_dirs: Callable[[], None]) -> None:
        self.root = root
        self.dir = root / INUSE
        self._ensure_dirs = ensure_dirs
        self._counts: dict[str, int] = {}
        self._files: dict[str, Path] = {}
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        self.acquire(name)
        try:
            yield
        finally:
            self.release(name)

    def acquire(self, name: str) -> None:
        check_name(name)
        with self._mutex:
            n = self._counts.get(name, 0)
            self._counts[name] = n + 1
            if n:
                return
            lease = self.dir / f"{name}.{owner_token(self.root)}.{secrets.token_hex(4)}"
            # Best effort: a read-only cache cannot hold leases, and nothing
            # there can be evicted either.
            with contextlib.suppress(OSError):
                self._ensure_dirs()
                os.close(os.open(lease, NEW_FILE_FLAGS, FILE_MODE))
                self._files[name] = lease

    def release(self, name: str) -> None:
        with self._mutex:
            n = self._counts.get(name, 0) - 1
            if n > 0:
                self._counts[name] = n
                return
            self._counts.pop(name, None)
            lease = self._files.pop(name, None)
        if lease is not None:
            with contextlib.suppress(OSError):
                os.unlink(lease)

    def users(self) -> set[str]:
        """Names some live process (this one included) is using."""
        with self._mutex:
            names = {n for n, c in self._counts.items() if c > 0}
        with contextlib.suppress(OSError):
            for lease in os.listdir(self.dir):
                owner = owner_of(lease)
                # A file system that cannot tell keeps the lease: never evict a model in use.
                if owner is not None and owner_alive(self.root, owner) is not False:
                    names.add(lease.rsplit(".", 2)[0])
        return names

    def reclaim_dead(self) -> None:
        """Remove the leases of processes that died holding them."""
        with contextlib.suppress(OSError):
            for lease in os.listdir(self.dir):
                owner = owner_of(lease)
                if owner is not None and owner_alive(self.root, owner) is False:
                    with contextlib.suppress(OSError):
                        os.unlink(self.dir / lease)


Flush = Callable[[dict[str, tuple[int, datetime]]], None]


class AccessLog:
    """Pending access counts of every cache root this process touched, written
    by each root's ``flush`` callback (registered by its ModelCache)."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], tuple[int, datetime]] = {}
        self._flushers: dict[str, Flush] = {}
        self._lock = threading.Lock()

    def register(self, root: str, flush: Flush) -> None:
        with self._lock:
            self._flushers.setdefault(root, flush)

    def count(self, root: str, name: str, when: datetime) -> None:
        with self._lock:
            n, _ = self._pending.get((root, name), (0, when))
            self._pending[(root, name)] = (n + 1, when)

    def pending(self, root: str, name: str) -> tuple[int, datetime] | None:
        with self._lock:
            return self._pending.get((root, name))

    def take(self, root: str) -> dict[str, tuple[int, datetime]]:
        with self._lock:
            mine = {k: v for k, v in self._pending.items() if k[0] == root}
            for k in mine:
                del self._pending[k]
        return {name: v for (_, name), v in mine.items()}

    def flush_all(self) -> None:
        with self._lock:
            flushers = dict(self._flushers)
        for root, flush in flushers.items():
            taken = self.take(root)
            if taken:
                with contextlib.suppress(Exception):  # at exit: never raise
                    flush(taken)


ACCESS = AccessLog()
atexit.register(ACCESS.flush_all)
