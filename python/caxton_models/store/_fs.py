"""File primitives of the cache: modes, atomic JSON, no-follow reads and copies,
tree removal, and locks that tell whether whoever left a file is alive."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from caxton_models._core import lock_held
from caxton_models.errors import InvalidPath


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


def boot_id() -> str | None:
    """This boot of the machine (Linux), or None: a record written in another
    boot may describe bytes a power cut never let reach the disk."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def fsync_dir(path: Path) -> None:
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
    tmp, fd = _locked_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # before close: the lock marks the temp live until here
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _locked_temp(path: Path) -> tuple[Path, int]:
    """A new temp beside ``path``, locked while we write it: that lock, not the
    pid in its name, tells :func:`remove_if_dead` its writer is alive."""
    while True:
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, NEW_FILE_FLAGS, FILE_MODE)
        lock_wait(fd)
        try:
            if os.lstat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except FileNotFoundError:
            pass
        # Removed as dead between our create and our lock: take another name.
        os.close(fd)


# Reading a file of ours: never through a symlink (swapped in by someone else).
# O_NONBLOCK: opening a FIFO planted in the cache returns at once (then refused as not
# regular) instead of waiting for a writer forever; it changes nothing for a regular file.
READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` open for reading, the one way this package opens a file it did not just
    create: a symlink is refused (OSError, ELOOP), and a FIFO, device or directory is an
    :class:`InvalidPath` (checked on the open descriptor, so nothing can swap it after)."""
    f = os.fdopen(os.open(path, READ_FLAGS), "rb")
    try:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InvalidPath(f"{path} is not a regular file", path=str(path))
    except BaseException:
        f.close()
        raise
    return f


def read_json_nofollow(path: Path, limit: int = 16 << 20) -> object:
    """Read a small JSON file, refusing a symlink or something huge."""
    with open_regular(path) as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return json.loads(raw.decode("utf-8"))


def rmtree(path: Path) -> None:
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


def walk_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
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


# ------------------------------------------------------------------ liveness
#
# The rule (one for the store and the Rust core): whoever owns a file holds a
# lock on it for as long as it runs, and the kernel drops the lock when it
# ends, however it ends. Whether the owner is alive is asked of the core,
# ``_core.lock_held`` (rust/src/download/claim.rs): one test, one answer when
# locks do not work ("cannot tell", never "dead"). The helpers below only take
# locks: to hold a file, or to remove one under our own lock.


def try_lock(fd: int) -> bool | None:
    """Lock ``fd`` exclusively without waiting: True when taken, False when
    another open file holds a lock on it, None when this file system has no
    locks."""
    try:
        if sys.platform == "win32":
            import msvcrt

            # Byte-range locks, one per handle: only ever on files nobody reads.
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if sys.platform == "win32" and e.errno in (errno.EACCES, errno.EDEADLK):
            return False
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            return None
        raise
    return True


def lock_wait(fd: int) -> None:
    """Lock ``fd`` exclusively, waiting (only ever for a checker's instant);
    nothing on a file system without locks."""
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)


def remove_if_dead(path: Path) -> bool:
    """Remove the file ``path`` unless a living writer holds its lock (checked
    and removed under our own lock, so a writer that locks after us sees it
    gone). False when kept."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        if try_lock(fd) is not True:
            return False
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def held(path: Path) -> bool | None:
    """Whether a living process holds a lock on ``path`` (the rule for every
    "is its owner still at work?" question: a PID says nothing across PID
    namespaces, and a lock dies with its holder, however it ends). False when
    the file is gone, a symlink or unlocked; None when this file system cannot
    tell (callers then keep the file, or leave it to age). The core's test, so
    that a ``.part`` it writes and an owner file the store holds are judged
    alike."""
    return lock_held(path)


def copy_nofollow(src: Path, dst: Path) -> None:
    with open_regular(src) as fin:
        out = os.open(dst, NEW_FILE_FLAGS, FILE_MODE)
        with os.fdopen(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            # On disk before it is published as verified (the caller renames
            # the folder into place): a power cut must not leave zeros there.
            os.fsync(fout.fileno())
