"""File primitives of the cache: modes, atomic JSON, no-follow reads and copies,
tree removal, and whether a process that left something behind is alive."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

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
    fsync_dir(path.parent)


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


def pid_alive(pid: int) -> bool:
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


def copy_nofollow(src: Path, dst: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(src, flags)
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise InvalidPath(f"{src} is not a regular file", path=str(src))
        out = os.open(dst, NEW_FILE_FLAGS, FILE_MODE)
        with os.fdopen(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
