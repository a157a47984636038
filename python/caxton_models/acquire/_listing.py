"""What a repository is at a commit, as the Hub's API lists it: the files
with their sizes and hashes (the manifest every download is checked
against), and the strict parsing of the API's answers that builds it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caxton_models._ids import is_commit, is_sha256
from caxton_models._paths import check_repo_path
from caxton_models.acquire._endpoints import _origin, redact_url
from caxton_models.errors import InvalidPath, ModelNotFound, ServerError


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository at a commit, as the Hub's tree API lists it."""

    path: str
    size: int
    sha256: str | None  # LFS files: the SHA-256 of the content; small files: None
    git_oid: str | None  # git blob SHA-1 (of the LFS pointer for LFS files)
    lfs: bool


@dataclass(frozen=True)
class RepoInfo:
    """A repository resolved to a commit: the manifest every download is checked against."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[RepoFile, ...]
    endpoint: str  # the endpoint that answered

    def file(self, path: str) -> RepoFile:
        for f in self.files:
            if f.path == path:
                return f
        raise ModelNotFound(
            f"{path} is not a file of {self.repo_id} at {self.commit}: "
            f"the repository has {len(self.files)} files (see `caxton model info`)",
            kind="file",
            repo_id=self.repo_id,
            revision=self.revision,
            path=path,
            endpoint=self.endpoint,
        )

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class FileMetadata:
    """What a ``HEAD .../resolve/...`` says about one file."""

    commit: str
    etag: str  # LFS SHA-256 or git blob SHA-1, without quotes
    size: int | None
    location: str  # where the bytes are (the redirect target, or the resolve URL)


@dataclass
class _Target:
    """One file to fetch: where it lands first, and the SHA-256 it must have."""

    file: RepoFile
    dest: Path
    sha256: str | None

    @property
    def landing(self) -> Path:
        # Known only by git blob id: land beside dest, checked before the move.
        if self.sha256 is None and self.file.git_oid is not None:
            return self.dest.with_name(self.dest.name + ".caxton-verify")
        return self.dest


def _check_repo_path(path: Any, repo_id: str) -> str:
    """A listed path must stay inside the model folder on every OS, or the
    snapshot is refused (the rules of :func:`caxton_models._paths.check_repo_path`)."""
    try:
        return check_repo_path(path)
    except InvalidPath as e:
        raise InvalidPath(
            f"the listing of {repo_id} names an unsafe file path {path!r}: refusing the whole "
            f"snapshot ({e})",
            path=str(path),
            repo_id=repo_id,
        ) from None


def _json(resp: Any, ep: str) -> Any:
    try:
        return json.loads(bytes(resp.body))
    except ValueError:
        ctype = resp.headers.get("content-type", "unknown")
        raise ServerError(
            f"{redact_url(ep)} answered {redact_url(str(resp.url))} with {ctype}, not JSON: "
            "is it a Hugging Face Hub endpoint?",
            status=int(resp.status),
        ) from None


def _next_link(link: str, ep: str) -> str | None:
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    if not m:
        return None
    url = m.group(1)
    if url.startswith("/"):
        url = ep + url
    if _origin(url) != _origin(ep):
        raise ServerError(f"{redact_url(ep)}: tree pagination points to another origin")
    return url


def _tree_entry(entry: Any, repo_id: str) -> RepoFile | None:
    if not isinstance(entry, dict):
        raise ServerError(f"tree of {repo_id}: an entry is not an object")
    if entry.get("type") != "file":
        return None
    path = _check_repo_path(entry.get("path"), repo_id)
    size = entry.get("size")
    oid = entry.get("oid")
    lfs = entry.get("lfs")
    sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
    if isinstance(lfs, dict) and isinstance(lfs.get("size"), int):
        size = lfs["size"]
    _check_hashes(repo_id, path, size, sha256, oid)
    assert isinstance(size, int)  # checked by _check_hashes
    return RepoFile(path, size, sha256, oid, isinstance(lfs, dict))


def _check_hashes(repo_id: str, path: str, size: Any, sha256: Any, oid: Any) -> None:
    bad = []
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        bad.append(f"size {size!r}")
    if sha256 is not None and not is_sha256(sha256):
        bad.append(f"sha256 {sha256!r}")
    if oid is not None and not is_commit(oid):
        bad.append(f"oid {oid!r}")
    if bad:
        raise ServerError(
            f"the listing of {repo_id} has an invalid {', '.join(bad)} for {path}: refusing it"
        )


def _files_from_siblings(siblings: Any, repo_id: str) -> tuple[RepoFile, ...]:
    if not isinstance(siblings, list):
        raise ServerError(f"the endpoint lists no files for {repo_id}")
    out: dict[str, RepoFile] = {}
    for s in siblings:
        if not isinstance(s, dict):
            continue
        path = _check_repo_path(s.get("rfilename"), repo_id)
        lfs = s.get("lfs")
        sha256 = lfs.get("sha256") if isinstance(lfs, dict) else None
        size, oid = s.get("size"), s.get("blobId")
        _check_hashes(repo_id, path, size, sha256, oid)
        assert isinstance(size, int)  # checked by _check_hashes
        out[path] = RepoFile(path, size, sha256, oid, isinstance(lfs, dict))
    return tuple(sorted(out.values(), key=lambda f: f.path))


@dataclass(frozen=True)
class RepoRefs:
    """A repository's branches and tags (``GET /api/models/{repo}/refs``), name -> commit."""

    repo_id: str
    branches: dict[str, str]
    tags: dict[str, str]

    def all(self) -> dict[str, str]:
        return {**self.branches, **self.tags}


def parse_refs(data: Any, repo_id: str, ep: str) -> RepoRefs:
    """The Hub's refs answer; a malformed entry is a :class:`ServerError`."""
    if not isinstance(data, dict):
        raise ServerError(f"{ep}: the refs of {repo_id} are not a JSON object")
    out: dict[str, dict[str, str]] = {"branches": {}, "tags": {}}
    for kind, found in out.items():
        entries = data.get(kind) or []
        if not isinstance(entries, list):
            raise ServerError(f"{ep}: the {kind} of {repo_id} are not a list")
        for e in entries:
            name = e.get("name") if isinstance(e, dict) else None
            commit = e.get("targetCommit") if isinstance(e, dict) else None
            if not isinstance(name, str) or not isinstance(commit, str):
                raise ServerError(f"{ep}: a malformed entry in the {kind} of {repo_id}")
            if not is_commit(commit):
                raise ServerError(f"{ep}: {kind} {name!r} of {repo_id} has a bad commit")
            found[name] = commit
    return RepoRefs(repo_id, out["branches"], out["tags"])
