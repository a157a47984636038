"""An in-process stand-in for ``HubClient`` (no sockets): it serves folders as
repositories, answers with the same ``RepoInfo``/``RepoFile`` values the real
client builds, and records every call, so a test can pin down what a
``ModelManager`` fetched, in which order, and when it asked nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from caxton_models import _core
from caxton_models.acquire.hub import RepoFile, RepoInfo
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import Config, parse_config
from caxton_models.errors import ChecksumMismatch, ModelNotFound
from tests.support.hubfaults import MINILM_COMMIT, MINILM_REPO_ID

#: The real all-MiniLM-L6-v2's commit (the files in ../shared/models).
COMMIT = MINILM_COMMIT
__all__ = ["COMMIT", "MINILM_REPO_ID", "FakeHub", "OidHub", "make_config", "manager"]
ENDPOINT = "http://fake.invalid"
# Files above this size are listed as LFS files with their SHA-256, as the Hub
# lists weights; the rest as small git files.
_LFS_ABOVE = 10 << 20


def _in_repo(path: Path) -> bool:
    """A file of the repository: not the checksum list ../shared keeps beside
    the real files, which the mirror (ops/server/catalog.py) does not serve either."""
    return path.is_file() and path.name != "SHA256SUMS"


@dataclass
class FakeHub:
    """Serves folders as repos (``repo_id -> (folder, commit)``); records every call."""

    repos: dict[str, tuple[Path, str]]
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_resolve: BaseException | None = None
    #: Listed after the folder's own files (a hostile or phantom entry).
    extra_files: dict[str, RepoFile] = field(default_factory=dict)

    def resolve(self, repo_id: str, revision: str = "main") -> RepoInfo:
        self.calls.append(("resolve", repo_id))
        if self.fail_resolve is not None:
            raise self.fail_resolve
        if repo_id not in self.repos:
            raise ModelNotFound(f"repo {repo_id} not found")
        folder, commit = self.repos[repo_id]
        files = [self.listed(folder, p) for p in sorted(folder.rglob("*")) if _in_repo(p)]
        files.extend(self.extra_files.values())
        return RepoInfo(repo_id, revision, commit, tuple(files), ENDPOINT)

    def listed(self, folder: Path, path: Path) -> RepoFile:
        """How the tree API lists ``path`` (a subclass may add the git blob id)."""
        size = path.stat().st_size
        lfs = size > _LFS_ABOVE
        rel = path.relative_to(folder).as_posix()
        return RepoFile(rel, size, _core.sha256_file(path) if lfs else None, None, lfs)

    def download_files(
        self,
        info: RepoInfo,
        targets: Mapping[str, Path],
        *,
        expected: Mapping[str, str | None] | None = None,
        progress: Callable[[int], object] | None = None,
        max_concurrent: int = 3,
        time_limit: float | None = None,
        sync: bool = True,
    ) -> dict[str, str]:
        """Like the core: each file lands whole or not at all, its SHA-256 taken
        as it is written and checked against ``expected``."""
        out = {}
        for path, dest in targets.items():
            self.calls.append(("get", path))
            folder, _ = self.repos[info.repo_id]
            data = self.serve(path, (folder / path).read_bytes())
            digest = hashlib.sha256(data).hexdigest()
            want = (expected or {}).get(path)
            if want and want != digest:
                raise ChecksumMismatch(f"{path}: sha256 {digest}, expected {want}",
                                       expected=want, actual=digest, path=path)  # fmt: skip
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            if progress:
                progress(len(data))
            out[path] = digest
        return out

    def serve(self, path: str, data: bytes) -> bytes:
        """The bytes this hub sends for ``path`` (a subclass may corrupt them)."""
        return data

    def gets(self) -> list[str]:
        return [p for kind, p in self.calls if kind == "get"]


class OidHub(FakeHub):
    """Lists each small file's git blob id, as the Hub does."""

    def listed(self, folder: Path, path: Path) -> RepoFile:
        return replace(super().listed(folder, path), git_oid=_core.git_blob_sha1_file(path))


def make_config(tmp_path: Path, text: str = "", **env: str) -> Config:
    """A config read from YAML ``text``, its cache in ``tmp_path/cache``;
    ``offline="1"`` turns the network off."""
    data = yaml.safe_load(text) if text else {}
    data = data or {}
    data.setdefault("memory", {}).setdefault("model_cache", {})["directory"] = str(
        tmp_path / "cache"
    )
    cfg = parse_config(data, tmp_path / "caxton.yaml", environ=False)
    return replace(cfg, offline=env.get("offline") == "1")


def manager(tmp_path: Path, hub: FakeHub | None, text: str = "", **env: str) -> ModelManager:
    """A manager whose every hub is ``hub`` (``None``: building one fails the
    test), with the functional check off."""
    cfg = make_config(tmp_path, text, **env)

    def factory(*a: Any, **k: Any) -> FakeHub:
        if hub is None:
            raise AssertionError("no hub may be built in this test")
        return hub

    return ModelManager(cfg, hub_factory=factory, functional=False)
