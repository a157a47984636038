"""What a pull-through mirror learned from its upstream, kept beside the models.

Layout::

    <root>/.upstream/<owner>--<name>.json
        {"schema_version": 1, "repo_id": "owner/name",
         "refs": {"main": {"commit": "<40 hex>", "recorded": "<ISO 8601 UTC>"}},
         "listings": {"<commit>": {"<path>": {"size": N, "sha256": "<64 hex>"|null,
                                              "git_oid": "<40 hex>"|null, "lfs": bool}}}}

``refs`` answer a branch or tag name with the commit the upstream gave for it (and when);
``listings`` are the upstream's file lists, so a mirror still answers ``model_info`` and
the tree of a repo it fetched part of while the upstream is down. Files themselves are
ordinary cache entries. Records are read strictly (a malformed one is ignored, never
trusted) and written atomically under a lock; a lost record only costs an upstream call.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from caxton_models._ids import is_commit, is_repo_id, is_revision
from caxton_models.store._fs import DIR_MODE, read_json_nofollow, write_json_atomic
from caxton_models.store._lock import FileLock
from caxton_models.store._records import format_time, is_hex, now_utc, parse_time

__all__ = ["UPSTREAM", "ListedFile", "RefRecord", "UpstreamRecords"]

UPSTREAM = ".upstream"
_SCHEMA = 1


@dataclass(frozen=True)
class RefRecord:
    commit: str
    recorded: datetime


@dataclass(frozen=True)
class ListedFile:
    """One file as the upstream's tree listing gave it."""

    path: str
    size: int
    sha256: str | None
    git_oid: str | None
    lfs: bool


class UpstreamRecords:
    """The records of one cache root; cheap to construct, safe across processes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.dir = Path(root).absolute() / UPSTREAM

    def _file(self, repo_id: str) -> Path:
        if not is_repo_id(repo_id):
            raise ValueError(f"{repo_id!r} is not a repository id")
        name = repo_id.replace("/", "--")
        if len(name) > 200:  # file-name limits: a digest stands in for very long ids
            name = name[:150] + "-" + hashlib.sha256(repo_id.encode()).hexdigest()[:16]
        return self.dir / f"{name}.json"

    def _read(self, repo_id: str) -> dict[str, Any]:
        try:
            data = read_json_nofollow(self._file(repo_id), limit=64 << 20)
        except (OSError, ValueError):
            return {}
        ok = (
            isinstance(data, dict)
            and data.get("schema_version") == _SCHEMA
            and data.get("repo_id") == repo_id
        )
        return data if ok else {}  # type: ignore[return-value]

    def ref(self, repo_id: str, ref: str) -> RefRecord | None:
        raw = self._read(repo_id).get("refs", {})
        entry = raw.get(ref) if isinstance(raw, dict) else None
        if not isinstance(entry, dict) or not is_hex(entry.get("commit"), 40):
            return None
        try:
            when = parse_time(entry.get("recorded"))
        except ValueError:
            return None
        return RefRecord(str(entry["commit"]), when)

    def listing(self, repo_id: str, commit: str) -> list[ListedFile] | None:
        raw = self._read(repo_id).get("listings", {})
        files = raw.get(commit) if isinstance(raw, dict) else None
        if not isinstance(files, dict):
            return None
        out = []
        for path, e in files.items():
            f = _listed(path, e)
            if f is None:
                return None  # one bad entry: the whole listing is not trusted
            out.append(f)
        return out

    def record(
        self, repo_id: str, commit: str, files: list[ListedFile], ref: str | None = None
    ) -> None:
        """Remember ``files`` as the listing of ``commit``, and ``ref`` -> ``commit`` (now)."""
        if not is_hex(commit, 40):
            raise ValueError(f"{commit!r} is not a commit")
        if ref is not None and (not is_revision(ref) or is_commit(ref)):
            ref = None
        path = self._file(repo_id)
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.dir, DIR_MODE)
        with FileLock(path.with_name(path.name + ".lock"), timeout=30.0, transient=True).hold():
            data = self._read(repo_id) or {"schema_version": _SCHEMA, "repo_id": repo_id}
            listings = data.setdefault("listings", {})
            listings[commit] = {
                f.path: {"size": f.size, "sha256": f.sha256, "git_oid": f.git_oid, "lfs": f.lfs}
                for f in files
            }
            if ref is not None:
                data.setdefault("refs", {})[ref] = {
                    "commit": commit,
                    "recorded": format_time(now_utc()),
                }
            write_json_atomic(path, data)


def _listed(path: object, e: object) -> ListedFile | None:
    if not isinstance(path, str) or not path or not isinstance(e, dict):
        return None
    size, sha, oid, lfs = e.get("size"), e.get("sha256"), e.get("git_oid"), e.get("lfs")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    if (sha is not None and not is_hex(sha, 64)) or (oid is not None and not is_hex(oid, 40)):
        return None
    if (sha is None and oid is None) or not isinstance(lfs, bool):
        return None
    return ListedFile(path, size, sha, oid, lfs)
