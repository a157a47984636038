"""Crash recovery in ``downloads/``: what a dead process left behind is handed
back for resume, restored, or removed; a live process's work is never touched.

Names there carry their owner's token (``_live``: alive while it holds a
lock, in any PID namespace): ``<name>@<commit>.<owner>.<hex>`` (a model's
private download folder), ``<name>.old|staging|trash.<owner>.<hex>``. A name
whose owner cannot be told (no token, a file system without locks) is left
to age.
Per-file ``.part`` files and their resume state belong to the Rust core,
which claims them itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from pathlib import Path

from caxton_models._paths import check_name
from caxton_models.errors import InvalidPath
from caxton_models.store._fs import held, remove_if_dead, rmtree, walk_files
from caxton_models.store._live import owner_alive, owner_of
from caxton_models.store._records import METADATA_FILE

log = logging.getLogger("caxton_models.store")


def recover_entry(root: Path, downloads: Path, entry: str) -> None:
    """Undo one interrupted step of a dead process (caller holds the lock)."""
    parts = entry.split(".")
    p = downloads / entry
    owner = owner_of(entry)
    if owner is None or owner_alive(root, owner) is not False:
        return  # its owner is still at work (perhaps between two renames), or unknown
    if "@" in entry:
        stable = downloads / ".".join(parts[:-2])
        if not os.path.lexists(stable) and not os.path.islink(p):
            os.rename(p, stable)  # the next download of that commit resumes from it
        else:
            rmtree(p)
    elif len(parts) >= 4 and parts[-3] == "old":
        name = ".".join(parts[:-3])
        try:
            check_name(name)
        except InvalidPath:
            return
        target = root / name
        if not os.path.lexists(target) and (p / METADATA_FILE).is_file():
            log.warning("restoring %s after an interrupted replacement", name)
            os.rename(p, target)
        else:
            rmtree(p)
    elif len(parts) >= 4 and parts[-3] in ("staging", "trash"):
        rmtree(p)


def stale_entries(downloads: Path, max_age: float) -> list[str]:
    """Entries of ``downloads/`` untouched for ``max_age`` seconds whose owner,
    if named, is dead: crash loops must not fill the disk, but younger parts
    are kept for resume."""
    out: list[str] = []
    cutoff = time.time() - max_age
    root = downloads.parent
    for entry in os.listdir(downloads):
        owner = owner_of(entry)
        if owner is not None and owner_alive(root, owner):
            continue  # a live process's private dir, however long it takes
        p = downloads / entry
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and held(p):
            continue  # a lock file someone holds (a download of that commit is running)
        newest = st.st_mtime
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                newest = max([newest, *(fst.st_mtime for _, fst in walk_files(p))])
        if newest < cutoff:
            out.append(entry)
    return out


# write_json_atomic's temporary files: ".<name>.tmp.<pid>.<8 hex>".
_JSON_TEMP = re.compile(r"\..+\.tmp\.(\d+)\.[0-9a-f]{8}")  # fullmatch: "$" takes a "\n"


def remove_dead_temps(folder: Path) -> list[str]:
    """Remove the half-written JSON records (registry.json, metadata) that a
    process killed mid-write left in ``folder``; a live writer's are kept (it
    holds a lock on its temp while writing)."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            m = _JSON_TEMP.fullmatch(entry)
            # Ours are never dead (where locks are POSIX locks, as on NFS, our
            # own lock would not stop us from taking another thread's temp).
            if m is None or m.group(1) == str(os.getpid()):
                continue
            if remove_if_dead(folder / entry):
                removed.append(entry)
    return removed
