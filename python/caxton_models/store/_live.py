"""Who is alive among the processes sharing a cache: a lock each one holds,
never a PID.

A cache on one volume may be shared by containers in different PID
namespaces: PID 7 here is another process there, and ``kill(7, 0)`` says
nothing about it. So every process that leaves something in a cache root
(a staging or download folder, a lease) names it with its *owner token*
``<pid>-<8 hex>`` (the pid only for people reading the names; the same shape
as the Rust core's ``.part`` names) and holds an exclusive lock on
``<root>/.live/<token>`` for as long as it runs. The kernel drops the lock
when the process ends, however it ends (SIGKILL, OOM, power cut), so
``owner_alive`` is true exactly while the owner is alive, in any namespace
on the same kernel. The Rust core follows the same rule for its ``.part``
files: it holds a lock on the ``.part`` it writes. Both ask one function
whether a file's owner is alive, the core's ``_core.lock_held`` (through
``_fs.held``): any lock held on the file is a living owner, and where locks
do not work the answer is "cannot tell" (None), never "dead".
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import threading
from pathlib import Path

from caxton_models.store._fs import (
    DIR_MODE,
    FILE_MODE,
    NEW_FILE_FLAGS,
    held,
    remove_if_dead,
    try_lock,
)

LIVE = ".live"
TOKEN = re.compile(r"^\d+-[0-9a-f]{8}$")

_mutex = threading.Lock()
_mine: dict[str, tuple[str, int | None]] = {}  # root -> (token, fd holding the lock)


def _forget_after_fork() -> None:
    # The child shares the parent's locks through inherited descriptors:
    # closing ours keeps the parent's (the lock lives while any holder does),
    # and the child takes its own token on first use.
    global _mutex
    _mutex = threading.Lock()
    for _, fd in _mine.values():
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _mine.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def owner_token(root: Path) -> str:
    """This process's token in ``root``, its lock taken on first use (best
    effort: on a read-only cache nothing of ours is there to protect)."""
    key = str(root)
    with _mutex:
        if key in _mine:
            return _mine[key][0]
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        _mine[key] = (token, _hold(root, token))
        return token


def _hold(root: Path, token: str) -> int | None:
    live = root / LIVE
    try:
        try:
            st = os.lstat(live)
        except FileNotFoundError:
            root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            with contextlib.suppress(FileExistsError):
                os.mkdir(live, DIR_MODE)
            st = os.lstat(live)
        if not stat.S_ISDIR(st.st_mode):
            return None  # a planted symlink: never written through
        # Locked under a temp name, then renamed: whatever is at .live/<token>
        # is locked from its first instant, so no checker reads it as dead.
        tmp = live / f".{token}.new"
        fd = os.open(tmp, NEW_FILE_FLAGS, FILE_MODE)
    except OSError:
        return None
    try:
        if try_lock(fd) is False:  # a fresh file nobody else has open
            raise OSError("locked")
        os.rename(tmp, live / token)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return None
    return fd


def owner_alive(root: Path, token: str) -> bool | None:
    """Whether the process that took ``token`` in ``root`` is still running;
    None when this file system cannot tell (then age decides)."""
    with _mutex:
        if _mine.get(str(root), ("",))[0] == token:
            return True
    if not TOKEN.fullmatch(token):
        return None
    return held(root / LIVE / token)


def owner_of(entry: str) -> str | None:
    """The owner token in a name ``<...>.<token>.<hex>``, or None."""
    parts = entry.split(".")
    return parts[-2] if len(parts) >= 3 and TOKEN.fullmatch(parts[-2]) else None


def reclaim_dead_owners(root: Path) -> list[str]:
    """Remove the token files of processes that have ended."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.listdir(root / LIVE):
            token = entry.removeprefix(".").removesuffix(".new")
            # remove_if_dead checks again under its own lock: never a live one's.
            if TOKEN.fullmatch(token) and remove_if_dead(root / LIVE / entry):
                removed.append(entry)
    return removed
