"""``caxton model serve``: a read-only mirror that speaks the Hugging Face Hub's HTTP protocol.

One machine downloads models into its caxton cache; a team points ``HF_ENDPOINT``
(or caxton's mirror list) at this server, and every Hub client -- huggingface_hub,
transformers, caxton itself -- downloads from it as from the Hub. See
``HUB-PROTOCOL.md`` for what clients send and expect; this module implements:

- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}``: ``sha`` and
  ``siblings`` (size, blobId, LFS sha256).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true``: the tree listing.
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (LFS sha256 for
  weights, git blob sha1 for small files), ``X-Linked-Etag``, ``X-Linked-Size``,
  ``Content-Length``, ``Accept-Ranges``, ``Range`` -> 206, ``If-Range``; 404s carry
  ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
- Optionally LFS files answer with a 302 to a second origin (``/lfs/{sha256}``), as the Hub
  does with its CDN, so clients exercise the cross-origin path (and drop Authorization).
- ``GET /metrics`` (Prometheus text) and ``GET /health`` (JSON; 200, or 503 when a check
  fails) for the operator; neither is part of the Hub's protocol.

Only files whose size and hashes are known are served: from a caxton cache, the files
listed in ``.caxton_checksum`` of entries marked ``verified`` whose size still matches;
from a folder of repos, the files hashed once at start-up (by the Rust core). A request
path is only ever looked up in that manifest, never joined onto the file system, so it
cannot escape the served folder. Bytes go out with ``sendfile(2)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import mimetypes
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from caxton_models import _core
from caxton_models.store import FileEntry, folder_revision, read_installed

__all__ = [
    "MINILM_COMMIT",
    "MINILM_REPO_ID",
    "Catalog",
    "ServedFile",
    "ServerThread",
    "Snapshot",
    "make_app",
    "serve",
]

log = logging.getLogger("caxton_models.ops.server")

MINILM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_COMMIT = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# The Hub's repo ids: "name" or "owner/name", letters, digits, '-', '_', '.'.
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID = re.compile(rf"{_REPO_PART}(?:/{_REPO_PART})?")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# Files of ours inside a cache entry, and files of a folder that are not repo files.
_PRIVATE_PREFIX = ".caxton_"
_SKIP_NAMES = frozenset({".git", "SHA256SUMS"})
# Without a .gitattributes, files this large are treated as LFS, like the Hub's default.
_LFS_THRESHOLD = 10 * 1024 * 1024
_SENDFILE_FALLBACK_CHUNK = 1 << 20


class CatalogError(ValueError):
    """The folder to serve is unusable (missing, or holds no servable repository)."""


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _git_blob_sha1_bytes(data: bytes) -> str:
    # Only for an LFS pointer we build ourselves (~130 bytes), never for a file's contents.
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class ServedFile:
    """One repository file: where its bytes are and what the Hub would say about it."""

    path: str  # repo path, '/'-separated
    local: Path
    size: int
    sha256: str
    git_oid: str  # git blob sha1 (of the LFS pointer for LFS files), as the Hub's tree "oid"
    lfs: bool

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))


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


class _Missing(Exception):
    def __init__(self, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.commit = commit


@dataclass
class Catalog:
    """The repositories a server offers: snapshots by (repo, commit) and branch names."""

    snapshots: dict[tuple[str, str], Snapshot] = field(default_factory=dict)
    refs: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> branch -> commit
    source: str = ""
    _blobs: dict[str, ServedFile] | None = field(default=None, repr=False)

    def add(self, snapshot: Snapshot, revisions: Iterable[str] = ("main",)) -> None:
        self.snapshots[(snapshot.repo_id, snapshot.commit)] = snapshot
        self._blobs = None
        branches = self.refs.setdefault(snapshot.repo_id, {})
        for rev in revisions:
            if rev and not _HEX40.fullmatch(rev):
                branches[rev] = snapshot.commit

    def merge(self, other: Catalog) -> Catalog:
        for snap in other.snapshots.values():
            self.snapshots[(snap.repo_id, snap.commit)] = snap
        self._blobs = None
        for repo, branches in other.refs.items():
            self.refs.setdefault(repo, {}).update(branches)
        return self

    def blob(self, sha256: str) -> ServedFile | None:
        """An LFS file by its SHA-256 (what the "CDN" origin serves)."""
        if self._blobs is None:
            self._blobs = {
                f.sha256: f
                for snap in self.snapshots.values()
                for f in snap.files.values()
                if f.lfs
            }
        return self._blobs.get(sha256)

    @property
    def repo_ids(self) -> list[str]:
        return sorted({r for r, _ in self.snapshots})

    def lookup(self, repo_id: str, revision: str) -> Snapshot:
        if repo_id not in self.refs:
            raise _Missing("RepoNotFound", f"Repository {repo_id} not found on this mirror.")
        commit = self.refs[repo_id].get(revision, revision)
        snap = self.snapshots.get((repo_id, commit))
        if snap is None:
            raise _Missing(
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
        if not _REPO_ID.fullmatch(repo_id):
            raise CatalogError(f"{repo_id!r} is not a valid repository id (owner/name)")
        recorded_commit, recorded_revision = folder_revision(root)
        rels = sorted(_walk_regular_files(root))
        if not rels:
            raise CatalogError(f"{root} holds no files to serve")
        paths = [root / r for r in rels]
        # All bytes are hashed by the Rust core, in parallel, with the GIL released.
        to_hash: list[str | os.PathLike[str]] = list(paths)
        sha256s = _core.hash_files(to_hash, algorithm="sha256")
        lfs_rules = _gitattributes_lfs(root / ".gitattributes")
        files: dict[str, ServedFile] = {}
        for rel, local, digest in zip(rels, paths, sha256s, strict=True):
            size = local.stat().st_size
            lfs = _is_lfs(rel, size, lfs_rules)
            oid = (
                _git_blob_sha1_bytes(_lfs_pointer(digest, size))
                if lfs
                else _core.git_blob_sha1_file(local)
            )
            files[rel] = ServedFile(rel, local, size, digest, oid, lfs)
        if commit is None:
            commit = recorded_commit
        if commit is None:
            manifest = "\n".join(f"{p}\0{f.git_oid}" for p, f in sorted(files.items()))
            commit = hashlib.sha1(manifest.encode()).hexdigest()
        if not _HEX40.fullmatch(commit):
            raise CatalogError(f"commit {commit!r} for {repo_id} is not 40 lowercase hex digits")
        extra = [recorded_revision] if recorded_revision else []
        cat = cls(source=str(root))
        cat.add(
            Snapshot(repo_id, commit, files, last_modified or _mtime_iso(root)),
            [*revisions, *extra],
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
        cat = cls(source=str(root))
        for entry in sorted(_safe_subdirs(root)):
            snap, revision = _cache_entry(entry)
            if snap is not None:
                cat.add(snap, [revision] if revision else [])
        return cat


def _cache_entry(entry: Path) -> tuple[Snapshot | None, str | None]:
    installed = read_installed(entry)
    if installed is None or installed.metadata is None or installed.manifest is None:
        return None, None
    meta = installed.metadata
    if installed.status != "verified":
        log.info("not serving %s: its validation status is %r", entry, installed.status)
        return None, None
    if not _REPO_ID.fullmatch(meta.model_id):
        log.warning("not serving %s: bad model_id %r in .caxton_metadata", entry, meta.model_id)
        return None, None
    if meta.commit is None:
        log.warning("not serving %s: no commit in .caxton_metadata", entry)
        return None, None
    files: dict[str, ServedFile] = {}
    for rel, info in installed.manifest.items():
        served = _cache_file(entry, rel, info)
        if served is not None:
            files[rel] = served
    if not files:
        return None, None
    revision = meta.revision if _BRANCH.fullmatch(meta.revision) else None
    return Snapshot(meta.model_id, meta.commit, files, _mtime_iso(entry)), revision


def _cache_file(entry: Path, rel: str, info: FileEntry) -> ServedFile | None:
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
            _git_blob_sha1_bytes(_lfs_pointer(info.sha256, info.size))
            if info.lfs
            else _core.git_blob_sha1_file(local)
        )
    return ServedFile(rel, local, info.size, info.sha256, oid, info.lfs)


def _mtime_iso(path: Path) -> str:
    t = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


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


# -- HTTP ------------------------------------------------------------------------------------


@dataclass
class ServeOptions:
    """Knobs of the app that are not the catalog."""

    # When set, LFS files answer 302 to ``{lfs_origin}/lfs/{sha256}`` (like the Hub's CDN).
    lfs_origin: str | None = None
    # Repos whose files need ``Authorization: Bearer <one of tokens>`` (the Hub's gated repos).
    gated: frozenset[str] = frozenset()
    tokens: frozenset[str] = frozenset()
    # Rescan a cache on a miss at most this often (seconds); None: never.
    rescan_after: float | None = None
    rescan: Any = None  # Callable[[], Catalog]
    # ``GET /health`` runs this (Callable[[], health.HealthReport]) off the event loop.
    health: Any = None
    _last_scan: float = field(default=0.0, repr=False)


CATALOG: web.AppKey[Catalog] = web.AppKey("catalog", Catalog)
OPTIONS: web.AppKey[ServeOptions] = web.AppKey("options", ServeOptions)


def _error(
    status: int, code: str, message: str, commit: str | None = None, head: bool = False
) -> web.Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit:
        headers["X-Repo-Commit"] = commit
    if head:
        return web.Response(status=status, headers=headers)
    return web.json_response({"error": message}, status=status, headers=headers)


def _lookup(request: web.Request, repo_id: str, revision: str) -> Snapshot:
    app = request.app
    if not _REPO_ID.fullmatch(repo_id):
        raise _Missing("RepoNotFound", f"Repository {repo_id!r} not found on this mirror.")
    try:
        return app[CATALOG].lookup(repo_id, revision)
    except _Missing:
        opts: ServeOptions = app[OPTIONS]
        now = time.monotonic()
        if opts.rescan is None or opts.rescan_after is None:
            raise
        if now - opts._last_scan < opts.rescan_after:
            raise
        # A model may have been downloaded into the cache since we started.
        opts._last_scan = now
        app[CATALOG].merge(opts.rescan())
        return app[CATALOG].lookup(repo_id, revision)


async def _model_info(request: web.Request) -> web.StreamResponse:
    repo_id = request.match_info["repo_id"]
    revision = request.match_info.get("revision") or "main"
    try:
        snap = _lookup(request, repo_id, revision)
    except _Missing as exc:
        return _error(404, exc.code, str(exc))
    return web.json_response(snap.model_info())


async def _tree(request: web.Request) -> web.StreamResponse:
    repo_id = request.match_info["repo_id"]
    revision = request.match_info["revision"]
    try:
        snap = _lookup(request, repo_id, revision)
    except _Missing as exc:
        return _error(404, exc.code, str(exc))
    recursive = request.query.get("recursive", "").lower() in ("1", "true")
    entries = snap.tree(request.match_info.get("path", ""), recursive)
    if entries is None:
        return _error(404, "EntryNotFound", "No such folder in this revision", snap.commit)
    return web.json_response(entries)


def _authorized(request: BaseRequest, opts: ServeOptions, repo_id: str) -> int | None:
    """None if the request may read ``repo_id``; else the status to answer (401/403)."""
    if repo_id not in opts.gated:
        return None
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return 401
    return None if auth[len("Bearer ") :] in opts.tokens else 403


async def _resolve(request: web.Request) -> web.StreamResponse:
    head = request.method == "HEAD"
    repo_id = request.match_info["repo_id"]
    revision = request.match_info["revision"]
    path = request.match_info["path"]
    try:
        snap = _lookup(request, repo_id, revision)
    except _Missing as exc:
        return _error(404, exc.code, str(exc), head=head)
    opts: ServeOptions = request.app[OPTIONS]
    denied = _authorized(request, opts, repo_id)
    if denied is not None:
        msg = (
            f"Access to model {repo_id} is restricted. "
            "You must have access to it and be authenticated."
        )
        return _error(denied, "GatedRepo", msg, snap.commit, head=head)
    f = snap.files.get(path)
    if f is None:
        return _error(
            404, "EntryNotFound", f"{path} does not exist at {snap.commit}", snap.commit, head
        )
    headers = {
        "X-Repo-Commit": snap.commit,
        "ETag": f'"{f.etag}"',
        "X-Linked-Etag": f'"{f.etag}"',
        "X-Linked-Size": str(f.size),
        "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag",
    }
    if f.lfs and opts.lfs_origin:
        # The commit rides along so the "CDN" can repeat the Hub's metadata headers:
        # huggingface_hub 1.x follows a redirect to the same host name (any port) and
        # reads them from the final response, where the real CDN is another host.
        headers["Location"] = f"{opts.lfs_origin}/lfs/{f.sha256}?commit={snap.commit}"
        return web.Response(status=302, headers=headers)
    return await _send_file(request, f, headers, snap.commit)


async def _lfs_blob(request: web.Request) -> web.StreamResponse:
    """The "CDN": LFS objects by sha256, no auth (Authorization must never reach it)."""
    f = request.app[CATALOG].blob(request.match_info["sha256"])
    if f is None:
        return web.Response(status=404, text="no such object\n")
    headers = {"ETag": f'"{f.sha256}"'}
    commit = request.query.get("commit", "")
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        headers.update(
            {
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
            }
        )
    return await _send_file(request, f, headers, None)


def _parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """(start, end exclusive); None: ignore the header (serve 200); False: unsatisfiable."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # malformed or multi-range: serving the whole file is allowed (RFC 9110)
    first, last = m.group(1), m.group(2)
    if first == "":
        n = int(last)
        if n == 0:
            return False
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or end <= start:
        return False
    return start, end


async def _send_file(
    request: web.Request, f: ServedFile, headers: dict[str, str], commit: str | None
) -> web.StreamResponse:
    """Send ``f`` (or a range of it) with sendfile; our ETag, not aiohttp's mtime-size one.

    aiohttp's FileResponse does the same sendfile call but sets its own ETag and
    understands If-Range only as a date, and would serve a precompressed ``.gz`` sibling
    when the client accepts gzip; a mirror must send exactly the repo's bytes.
    """
    loop = asyncio.get_running_loop()
    try:
        fobj = await loop.run_in_executor(None, _open_checked, f)
    except OSError as exc:
        log.warning("cannot serve %s: %s", f.local, exc)
        head = request.method == "HEAD"
        return _error(404, "EntryNotFound", f"{f.path} is unavailable on this mirror", commit, head)
    try:
        size = f.size
        start, end, status = 0, size, 200
        rng = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if rng is not None and (if_range is None or if_range.strip() == headers.get("ETag")):
            parsed = _parse_range(rng, size)
            if parsed is False:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if isinstance(parsed, tuple):
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if request.headers.get("If-None-Match", "").strip() == headers.get("ETag") and rng is None:
            return web.Response(status=304, headers=headers)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = mimetypes.guess_type(f.path)[0] or "application/octet-stream"
        resp.content_length = end - start
        resp.headers["Accept-Ranges"] = "bytes"
        await resp.prepare(request)
        if request.method == "HEAD" or end == start:
            await resp.write_eof()
            return resp
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        try:
            await loop.sendfile(transport, fobj, start, end - start)
        except NotImplementedError:  # e.g. a TLS transport: copy through user space
            await _copy_chunks(loop, resp, fobj, start, end)
        await resp.write_eof()
        return resp
    finally:
        fobj.close()


def _open_checked(f: ServedFile) -> Any:
    # O_NOFOLLOW: a file swapped for a symlink after start-up is refused, not followed.
    fd = os.open(f.local, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    fobj = os.fdopen(fd, "rb")
    st = os.fstat(fobj.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_size != f.size:
        fobj.close()
        raise OSError(f"{f.local} changed since it was verified ({st.st_size} != {f.size} bytes)")
    return fobj


async def _copy_chunks(
    loop: asyncio.AbstractEventLoop, resp: web.StreamResponse, fobj: Any, start: int, end: int
) -> None:
    pos = start
    while pos < end:
        n = min(_SENDFILE_FALLBACK_CHUNK, end - pos)
        chunk = await loop.run_in_executor(None, os.pread, fobj.fileno(), n, pos)
        if not chunk:
            raise OSError("file shrank while being served")
        await resp.write(chunk)
        pos += len(chunk)


async def _metrics(request: web.Request) -> web.StreamResponse:
    from caxton_models import metrics

    # The cache gauge reads the cache's manifests: not on the event loop.
    text = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": metrics.CONTENT_TYPE})


async def _health(request: web.Request) -> web.StreamResponse:
    """200 when nothing fails (warnings included), 503 otherwise: what a load
    balancer or an orchestrator's probe expects."""
    from caxton_models.ops.health import CheckResult, HealthReport

    catalog: Catalog = request.app[CATALOG]
    opts: ServeOptions = request.app[OPTIONS]
    report = HealthReport()
    if opts.health is not None:
        report = await asyncio.get_running_loop().run_in_executor(None, opts.health)
    repos = catalog.repo_ids
    detail = (
        f"serving {len(repos)} repositories"
        if repos
        else "nothing to serve yet: download or install a model into the served cache"
    )
    served = CheckResult(
        "mirror_catalog", "ok" if repos else "warn", detail, data={"repositories": repos}
    )
    report.checks.insert(0, served)
    return web.json_response(report.to_json(), status=200 if report.ok else 503)


async def _not_found(request: web.Request) -> web.StreamResponse:
    return _error(
        404, "RepoNotFound", "Repository not found on this mirror.", head=request.method == "HEAD"
    )


class _AccessLogger(AbstractAccessLogger):
    """Method, path without the query (which may hold a token), status, bytes, time."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )


def make_app(catalog: Catalog, options: ServeOptions | None = None) -> web.Application:
    """The aiohttp application of the mirror (no sockets yet)."""
    app = web.Application()
    app[CATALOG] = catalog
    app[OPTIONS] = options or ServeOptions()
    repo = r"{repo_id:[^/]+(?:/[^/]+)?}"
    r = app.router
    r.add_get(f"/api/models/{repo}/revision/{{revision}}", _model_info)
    r.add_get(f"/api/models/{repo}/tree/{{revision}}", _tree)
    r.add_get(f"/api/models/{repo}/tree/{{revision}}/{{path:.+}}", _tree)
    r.add_get(f"/api/models/{repo}", _model_info)
    r.add_route("HEAD", f"/{repo}/resolve/{{revision}}/{{path:.+}}", _resolve)
    r.add_get(f"/{repo}/resolve/{{revision}}/{{path:.+}}", _resolve, allow_head=False)
    r.add_route("HEAD", "/lfs/{sha256:[0-9a-f]{64}}", _lfs_blob)
    r.add_get("/lfs/{sha256:[0-9a-f]{64}}", _lfs_blob, allow_head=False)
    r.add_get("/metrics", _metrics)
    r.add_get("/health", _health)
    r.add_route("*", "/{tail:.*}", _not_found)
    return app


# -- running it ------------------------------------------------------------------------------


class ServerThread:
    """Runs the mirror on 127.0.0.1 (port 0 by default) in a background thread.

    ``with ServerThread(catalog) as srv: hf_hub_download(..., endpoint=srv.url)``.
    ``lfs_redirect=True`` opens a second origin (``srv.lfs_url``) that LFS files redirect to.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lfs_redirect: bool = False,
        options: ServeOptions | None = None,
    ) -> None:
        self.catalog = catalog
        self.host = host
        self.port = port
        self.lfs_redirect = lfs_redirect
        self.options = options or ServeOptions()
        self.url = ""
        self.lfs_url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="caxton-serve", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise RuntimeError("caxton model server did not start within 30 s")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            loop.close()

    async def _start(self) -> None:
        app = make_app(self.catalog, self.options)
        self._runner = web.AppRunner(app, access_log_class=_AccessLogger)
        await self._runner.setup()
        self.url, self.lfs_url = await _open_sites(
            self._runner, self.host, self.port, self.lfs_redirect, self.options
        )

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)


async def _open_sites(
    runner: web.AppRunner, host: str, port: int, lfs_redirect: bool, options: ServeOptions
) -> tuple[str, str | None]:
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    url = _site_url(site, host)
    lfs_url = None
    if lfs_redirect:
        # Another port is another origin, so clients treat it like the Hub's CDN.
        cdn = web.TCPSite(runner, host, 0, backlog=1024)
        await cdn.start()
        lfs_url = _site_url(cdn, host)
        options.lfs_origin = lfs_url
    return url, lfs_url


def _site_url(site: web.TCPSite, host: str) -> str:
    server = site._server  # the asyncio Server: the only way to learn the bound port
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(
    catalog: Catalog,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    lfs_redirect: bool = False,
    options: ServeOptions | None = None,
    on_ready: Any = None,
) -> None:
    """Serve until interrupted (Ctrl-C). ``on_ready(url, lfs_url)`` is called once listening."""
    opts = options or ServeOptions()

    async def main() -> None:
        runner = web.AppRunner(make_app(catalog, opts), access_log_class=_AccessLogger)
        await runner.setup()
        try:
            url, lfs_url = await _open_sites(runner, host, port, lfs_redirect, opts)
            if on_ready is not None:
                on_ready(url, lfs_url)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
