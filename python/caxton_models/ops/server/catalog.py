"""What a mirror offers: repositories at commits, their files and what the Hub says about them.

Only files whose size and hashes are known are served: from a caxton cache, the files
listed in ``.caxton_checksum`` of entries marked ``verified`` whose size still matches;
from a folder of repos, the files hashed once at start-up (by the Rust core). A request
path is only ever looked up in that manifest, never joined onto the file system, so it
cannot escape the served folder. A pull-through mirror also lists files it has not
fetched yet (``ServedFile.local is None``): their hashes come from the upstream's listing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from caxton_models._core import git_blob_sha1_file, hash_files

# HEX40: pullthrough (another branch) reads the commit pattern under this name.
from caxton_models._ids import COMMIT as HEX40
from caxton_models._ids import is_commit, is_repo_id, is_revision
from caxton_models.store import (
    CHECKSUM_FILE,
    FileEntry,
    InstalledModel,
    ModelCache,
    folder_revision,
    read_installed,
)

__all__ = [
    "DEFAULT_BRANCH",
    "HEX40",
    "MINILM_COMMIT",
    "MINILM_REPO_ID",
    "Catalog",
    "CatalogError",
    "Missing",
    "ServedFile",
    "Snapshot",
    "cache_entry",
    "claimed_source",
    "git_blob_sha1_bytes",
    "lfs_pointer",
    "now_iso",
    "stamp_of",
]

log = logging.getLogger("caxton_models.ops.server")

MINILM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_COMMIT = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"

# What every Hub client asks for when no revision is given.
DEFAULT_BRANCH = "main"
# The revision ``caxton model install`` records for a folder without one: not a branch.
_NO_BRANCH = "local"
# Files of ours inside a cache entry, and files of a folder that are not repo files.
_PRIVATE_PREFIX = ".caxton_"
_SKIP_NAMES = frozenset({".git", "SHA256SUMS"})
# Without a .gitattributes, files this large are treated as LFS, like the Hub's default.
_LFS_THRESHOLD = 10 * 1024 * 1024


#: What identifies the bytes of a file without reading them: device, inode, size, and the
#: times of the last write and of the last inode change (which no one can set back).
Stamp = tuple[int, int, int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# ``download_source`` of a cache entry installed rather than fetched ("local",
# "local:<folder>", "archive:<file>"; "recovered": rebuilt from files found on disk).
_CLAIMED_SOURCES = frozenset({"local", "archive", "recovered"})


def claimed_source(download_source: str) -> bool:
    """Whether a cache entry's bytes were installed from somewhere, not fetched from a hub."""
    return download_source.split(":", 1)[0] in _CLAIMED_SOURCES


class CatalogError(ValueError):
    """The folder to serve is unusable (missing, or holds no servable repository)."""


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def git_blob_sha1_bytes(data: bytes) -> str:
    # Only for an LFS pointer we build ourselves (~130 bytes), never for a file's contents.
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class ServedFile:
    """One repository file: where its bytes are and what the Hub would say about it."""

    path: str  # repo path, '/'-separated
    local: Path | None  # None: listed upstream, not fetched yet (pull-through)
    size: int
    sha256: str  # "" when unknown (a small file not fetched yet: known by git_oid)
    git_oid: str  # git blob sha1 (of the LFS pointer for LFS files), as the Hub's tree "oid"
    lfs: bool
    # The file's identity when its hashes were known good; None: check them on first open.
    # Every open compares it (see sendfile): a file replaced or edited since is re-hashed.
    stamp: Stamp | None = field(default=None, compare=False)
    # Installed from a file or folder (an archive, ``caxton model install``), not fetched
    # from a hub: its repo id and commit are the installer's word, which a pull-through
    # mirror takes only once the hashes match the upstream's listing of that commit.
    claimed: bool = field(default=False, compare=False)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Snapshot:
    """A repository at one commit."""

    repo_id: str
    commit: str
    files: Mapping[str, ServedFile]
    last_modified: str  # ISO 8601 UTC, the Hub's "lastModified"

    def model_info(self) -> dict[str, Any]:
        siblings = []
        for f in sorted(self.files.values(), key=lambda f: f.path):
            sib: dict[str, Any] = {"rfilename": f.path, "size": f.size, "blobId": f.git_oid}
            if f.lfs:
                sib["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sib)
        return {
            "_id": self.commit[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0] if "/" in self.repo_id else None,
            "sha": self.commit,
            "lastModified": self.last_modified,
            "createdAt": self.last_modified,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f.size for f in self.files.values()),
        }

    def tree(self, prefix: str, recursive: bool) -> list[dict[str, Any]] | None:
        """Entries under ``prefix`` as the Hub's tree API lists them; None if no such folder."""
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        files = sorted(
            (f for p, f in self.files.items() if p.startswith(base)), key=lambda f: f.path
        )
        if prefix and not files:
            return None
        out: list[dict[str, Any]] = []
        dirs: dict[str, list[ServedFile]] = {}
        for f in files:
            rest = f.path[len(base) :]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.setdefault(base + "/".join(parts[:i]), []).append(f)
            if recursive or len(parts) == 1:
                out.append(_tree_file(f))
        for d, members in dirs.items():
            # A stable id for the folder; the Hub gives the git tree sha, which we lack.
            digest = hashlib.sha1("\n".join(f"{m.path}\0{m.git_oid}" for m in members).encode())
            out.append({"type": "directory", "oid": digest.hexdigest(), "size": 0, "path": d})
        # The Hub lists folders before files at each level; clients do not depend on it.
        out.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        return out


def _tree_file(f: ServedFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
    if f.lfs:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    return entry


class Missing(Exception):
    """A repo, revision or file this mirror cannot serve: ``code`` is the Hub's X-Error-Code."""

    def __init__(
        self, code: str | None, message: str, commit: str | None = None, status: int = 404
    ) -> None:
        super().__init__(message)
        self.code = code
        self.commit = commit
        self.status = status


@dataclass
class Catalog:
    """The repositories a server offers: snapshots by (repo, commit) and branch names."""

    snapshots: dict[tuple[str, str], Snapshot] = field(default_factory=dict)
    refs: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> branch -> commit
    pinned: dict[str, dict[str, str]] = field(default_factory=dict)  # set by the operator
    # repo -> (commit, when installed) of the cache's current revision: what ``main``
    # names when no branch was recorded (a model installed from an archive or a folder).
    current: dict[str, tuple[str, str]] = field(default_factory=dict)
    source: str = ""
    # Builds this catalog again from its source (the cache, the folder of repos): what a
    # server calls when a file changed under it, and on a miss (``rescan_after``).
    rebuild: Callable[[], Catalog] | None = field(default=None, repr=False, compare=False)
    _blobs: dict[str, ServedFile] | None = field(default=None, repr=False)

    def add(self, snapshot: Snapshot, revisions: Iterable[str] = ("main",)) -> None:
        key = (snapshot.repo_id, snapshot.commit)
        old = self.snapshots.get(key)
        if old is not None:
            # Two verified copies of one commit (e.g. a registry install and the files a
            # pull-through fetched): serve the union, the newer copy's paths first.
            snapshot = Snapshot(
                snapshot.repo_id, snapshot.commit, {**old.files, **snapshot.files},
                snapshot.last_modified,
            )  # fmt: skip
        self.snapshots[key] = snapshot
        self._blobs = None
        branches = self.refs.setdefault(snapshot.repo_id, {})
        for rev in revisions:
            if rev and not is_commit(rev):
                branches[rev] = snapshot.commit

    def merge(self, other: Catalog) -> Catalog:
        for snap in other.snapshots.values():
            self.add(snap, ())
        for repo, branches in other.refs.items():
            self.refs.setdefault(repo, {}).update(branches)
        for repo, newest in other.current.items():
            self.set_current(repo, *newest)
        return self

    def set_current(self, repo_id: str, commit: str, installed: str) -> None:
        """``commit`` is a current revision of ``repo_id`` (the newest install wins)."""
        have = self.current.get(repo_id)
        if have is None or have[1] <= installed:
            self.current[repo_id] = (commit, installed)

    def replace_with(self, fresh: Catalog) -> None:
        """Take ``fresh``'s snapshots and refs (the operator's ``--ref`` pins stay): what
        is no longer in the source is no longer served."""
        self.snapshots = dict(fresh.snapshots)
        self.refs = {repo: dict(branches) for repo, branches in fresh.refs.items()}
        self.current = dict(fresh.current)
        self._blobs = None

    def blob(self, sha256: str) -> ServedFile | None:
        """An LFS file by its SHA-256 (what the "CDN" origin serves)."""
        if self._blobs is None:
            self._blobs = {
                f.sha256: f
                for snap in self.snapshots.values()
                for f in snap.files.values()
                if f.lfs and f.local is not None
            }
        return self._blobs.get(sha256)

    @property
    def repo_ids(self) -> list[str]:
        return sorted({r for r, _ in self.snapshots})

    def pin_ref(self, repo_id: str, ref: str, commit: str) -> None:
        """An operator's ``--ref``: ``ref`` of ``repo_id`` is ``commit``, whatever was recorded."""
        if not is_repo_id(repo_id) or not is_revision(ref) or is_commit(ref):
            raise CatalogError(f"--ref {repo_id}@{ref}: not a repository id and a branch/tag name")
        if not is_commit(commit):
            raise CatalogError(f"--ref {repo_id}@{ref}={commit}: the commit must be 40 hex digits")
        self.pinned.setdefault(repo_id, {})[ref] = commit

    def commit_of(self, repo_id: str, revision: str) -> str | None:
        """The commit ``revision`` names here: an operator's ref, then a recorded one."""
        if is_commit(revision):
            return revision
        pinned = self.pinned.get(repo_id, {}).get(revision)
        return pinned or self.refs.get(repo_id, {}).get(revision)

    def ref_source(self, repo_id: str, revision: str) -> str | None:
        """``"current-revision"`` when ``revision`` is the default branch of a repo that
        recorded no branch (an operator's ``--ref``, or any recorded one, wins): the
        commit is then the current revision's, which the mirror says in a header."""
        if revision != DEFAULT_BRANCH or self.commit_of(repo_id, revision) is not None:
            return None
        if self.refs.get(repo_id) or repo_id not in self.current:
            return None
        return "current-revision"

    def lookup(self, repo_id: str, revision: str) -> Snapshot:
        if repo_id not in self.refs:
            raise Missing("RepoNotFound", f"Repository {repo_id} not found on this mirror.")
        commit = self.commit_of(repo_id, revision) or revision
        if self.ref_source(repo_id, revision) is not None:
            commit = self.current[repo_id][0]
        snap = self.snapshots.get((repo_id, commit))
        if snap is None:
            raise Missing(
                "RevisionNotFound", f"Invalid rev id: {revision} (not on this mirror for {repo_id})"
            )
        return snap

    # -- builders -------------------------------------------------------------------------

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        repo_id: str,
        *,
        commit: str | None = None,
        revisions: Iterable[str] = ("main",),
        last_modified: str | None = None,
    ) -> Catalog:
        """Serve one folder in the Hub's layout as ``repo_id``; files are hashed once, here.

        ``commit`` defaults to the folder's ``.caxton_metadata`` commit, else a sha1 of the
        manifest (stable as long as the files are).
        """
        root = Path(folder)
        if not root.is_dir():
            raise CatalogError(f"{root} is not a folder: pass a folder in the Hub's layout")
        if not is_repo_id(repo_id):
            raise CatalogError(f"{repo_id!r} is not a valid repository id (owner/name)")
        recorded_commit, recorded_revision = folder_revision(root)
        rels = sorted(_walk_regular_files(root))
        if not rels:
            raise CatalogError(f"{root} holds no files to serve")
        paths = [root / r for r in rels]
        # Taken before hashing: a write during hashing changes the stamp, so it is re-hashed.
        stamps = [stamp_of(p.lstat()) for p in paths]
        # All bytes are hashed by the Rust core, in parallel, with the GIL released.
        to_hash: list[str | os.PathLike[str]] = list(paths)
        sha256s = hash_files(to_hash, algorithm="sha256")
        lfs_rules = _gitattributes_lfs(root / ".gitattributes")
        files: dict[str, ServedFile] = {}
        for rel, local, digest, stamp in zip(rels, paths, sha256s, stamps, strict=True):
            size = stamp[2]
            lfs = _is_lfs(rel, size, lfs_rules)
            oid = (
                git_blob_sha1_bytes(lfs_pointer(digest, size)) if lfs else git_blob_sha1_file(local)
            )
            files[rel] = ServedFile(rel, local, size, digest, oid, lfs, stamp)
        if commit is None:
            commit = recorded_commit
        if commit is None:
            manifest = "\n".join(f"{p}\0{f.git_oid}" for p, f in sorted(files.items()))
            commit = hashlib.sha1(manifest.encode()).hexdigest()
        if not is_commit(commit):
            raise CatalogError(f"commit {commit!r} for {repo_id} is not 40 lowercase hex digits")
        extra = [recorded_revision] if recorded_revision else []
        cat = cls(source=str(root))
        cat.add(
            Snapshot(repo_id, commit, files, last_modified or _mtime_iso(root)),
            [*revisions, *extra],
        )
        pinned_commit = commit
        cat.rebuild = lambda: cls.from_folder(
            root, repo_id, commit=pinned_commit, revisions=revisions, last_modified=last_modified
        )
        return cat

    @classmethod
    def from_repos(cls, folder: str | os.PathLike[str]) -> Catalog:
        """Serve ``folder/<owner>/<name>/...`` (and ``folder/<name>/...``) repositories."""
        root = Path(folder)
        if not root.is_dir():
            raise CatalogError(f"{root} is not a folder: pass DIR holding <owner>/<name>/ repos")
        cat = cls(source=str(root))
        for first in sorted(_safe_subdirs(root)):
            if _looks_like_repo(first):
                cat.merge(cls.from_folder(first, first.name))
                continue
            for second in sorted(_safe_subdirs(first)):
                cat.merge(cls.from_folder(second, f"{first.name}/{second.name}"))
        if not cat.snapshots:
            raise CatalogError(f"no repositories under {root}: expected {root}/<owner>/<name>/")
        cat.rebuild = lambda: cls.from_repos(root)
        return cat

    @classmethod
    def from_cache(cls, cache_dir: str | os.PathLike[str]) -> Catalog:
        """Serve the verified entries of a caxton cache (see INTERFACES.md, cache layout).

        Hashes come from each entry's ``.caxton_checksum`` (the cache verified them); a file
        whose size no longer matches, or that is missing or not a regular file, is left out.
        """
        root = Path(cache_dir)
        if not root.is_dir():
            raise CatalogError(f"cache folder {root} does not exist: run `caxton model download`")
        cat = cls(source=str(root), rebuild=lambda: cls.from_cache(root))
        revisions = ModelCache(root).revisions
        for entry in sorted(_safe_subdirs(root)):
            # Each stored revision (the previous one, staged ones) is served by its own
            # commit from its own folder; the current one is added last, so where both
            # hold one commit, the current copy's files are the ones served.
            for stored in revisions.stored(entry.name):
                snap, _ = installed_snapshot(stored)
                if snap is not None:
                    cat.add(snap, ())
            snap, revision = cache_entry(entry)
            if snap is not None:
                cat.add(snap, [revision] if revision else [])
                cat.set_current(snap.repo_id, snap.commit, snap.last_modified)
        return cat


def cache_entry(entry: Path) -> tuple[Snapshot | None, str | None]:
    """The snapshot a current cache entry serves, and the branch it recorded."""
    installed = read_installed(entry)
    if installed is None:
        return None, None
    return installed_snapshot(installed)


def installed_snapshot(installed: InstalledModel) -> tuple[Snapshot | None, str | None]:
    entry = installed.path
    if installed.metadata is None or installed.manifest is None:
        return None, None
    meta = installed.metadata
    if installed.status != "verified":
        log.info("not serving %s: its validation status is %r", entry, installed.status)
        return None, None
    if not is_repo_id(meta.model_id):
        log.warning("not serving %s: bad model_id %r in .caxton_metadata", entry, meta.model_id)
        return None, None
    if meta.commit is None:
        log.warning("not serving %s: no commit in .caxton_metadata", entry)
        return None, None
    files: dict[str, ServedFile] = {}
    try:
        recorded_ns = (entry / CHECKSUM_FILE).lstat().st_mtime_ns
    except OSError:
        return None, None
    claimed = claimed_source(meta.download_source)
    for rel, info in installed.manifest.items():
        served = _cache_file(entry, rel, info, recorded_ns, claimed)
        if served is not None:
            files[rel] = served
    if not files:
        return None, None
    revision = meta.revision if is_revision(meta.revision) else None
    if revision == _NO_BRANCH:
        revision = None
    return Snapshot(meta.model_id, meta.commit, files, _mtime_iso(entry)), revision


def _cache_file(
    entry: Path, rel: str, info: FileEntry, recorded_ns: int, claimed: bool
) -> ServedFile | None:
    if not _safe_relpath(rel):
        log.warning("not serving %r from %s: unsafe entry", rel, entry)
        return None
    local = entry.joinpath(*rel.split("/"))
    if not _no_symlinks(entry, rel):
        log.warning("not serving %s: it is (or is reached through) a symlink", local)
        return None
    try:
        st = local.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size != info.size:
        log.warning("not serving %s: size %d, expected %d", local, st.st_size, info.size)
        return None
    oid = info.git_oid
    if oid is None:
        oid = (
            git_blob_sha1_bytes(lfs_pointer(info.sha256, info.size))
            if info.lfs
            else git_blob_sha1_file(local)
        )
    # Written after the manifest recorded its digest: trusted only once hashed again.
    stamp = stamp_of(st) if st.st_mtime_ns <= recorded_ns else None
    return ServedFile(rel, local, info.size, info.sha256, oid, info.lfs, stamp, claimed)


def _mtime_iso(path: Path) -> str:
    t = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _safe_relpath(rel: str) -> bool:
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or ":" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts) and not parts[-1].startswith(
        _PRIVATE_PREFIX
    )


def _no_symlinks(root: Path, rel: str) -> bool:
    cur = root
    for part in rel.split("/"):
        cur = cur / part
        try:
            if stat.S_ISLNK(cur.lstat().st_mode):
                return False
        except OSError:
            return False
    return True


def _safe_subdirs(folder: Path) -> Iterator[Path]:
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False) and not e.name.startswith("."):
                yield Path(e.path)


def _looks_like_repo(folder: Path) -> bool:
    """A top-level folder is itself a repo (id without owner) if it holds regular files."""
    with os.scandir(folder) as it:
        return any(e.is_file(follow_symlinks=False) and e.name != ".DS_Store" for e in it)


def _walk_regular_files(root: Path) -> Iterator[str]:
    """Repo paths of the regular files under ``root``; symlinks and our own files are skipped."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if d not in _SKIP_NAMES]
        for name in filenames:
            if name in _SKIP_NAMES or name.startswith(_PRIVATE_PREFIX):
                continue
            full = Path(dirpath) / name
            if not stat.S_ISREG(full.lstat().st_mode):
                log.warning(
                    "not serving %s: not a regular file (symlinks are never followed)", full
                )
                continue
            rel = (rel_dir / name).as_posix()
            if _safe_relpath(rel):
                yield rel


def _gitattributes_lfs(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    rules = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            rules.append(parts[0])
    return rules


def _is_lfs(rel: str, size: int, rules: list[str]) -> bool:
    if not rules:
        return size >= _LFS_THRESHOLD
    name = rel.rsplit("/", 1)[-1]
    for pattern in rules:
        # git: a pattern without '/' matches the file name at any depth.
        target = rel if "/" in pattern.strip("/") else name
        if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
            return True
    return False
