"""Helpers for tests of the Hub mirror and client: the real MiniLM repo, served.

``minilm_catalog`` hashes the real all-MiniLM-L6-v2 files once per session and
serves them as ``sentence-transformers/all-MiniLM-L6-v2`` at the revision they
came from; ``SHA256SUMS`` (ours, not the Hub's) is left out.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from caxton_models.server import MINILM_COMMIT, MINILM_REPO_ID, Catalog

__all__ = [
    "MINILM_COMMIT",
    "MINILM_REPO_ID",
    "folder_catalog",
    "make_cache_entry",
    "minilm_catalog",
    "minilm_sha256s",
]


@functools.lru_cache(maxsize=8)
def folder_catalog(folder: Path, repo_id: str, commit: str) -> Catalog:
    """Hash a folder once per session (the catalog is read-only once built)."""
    return Catalog.from_folder(folder, repo_id, commit=commit)


def minilm_catalog(minilm_dir: Path) -> Catalog:
    return folder_catalog(minilm_dir, MINILM_REPO_ID, MINILM_COMMIT)


def minilm_sha256s(minilm_dir: Path) -> dict[str, str]:
    """The published SHA-256 of every repo file, from the folder's SHA256SUMS."""
    out = {}
    for line in (minilm_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.removeprefix("./")] = digest
    return out


def make_cache_entry(
    cache_dir: Path,
    name: str,
    src: Path,
    repo_id: str,
    commit: str,
    *,
    revision: str = "main",
    status: str = "verified",
    only: list[str] | None = None,
) -> Path:
    """Write a caxton cache entry (INTERFACES.md layout) holding ``src``'s files.

    Files are hard-linked where possible (the real model is 180 MB), else copied.
    """
    import json
    import os
    import shutil

    catalog = folder_catalog(src, repo_id, commit)
    snap = next(iter(catalog.snapshots.values()))
    entry = cache_dir / name
    listed: dict[str, dict[str, Any]] = {}
    for rel, f in sorted(snap.files.items()):
        if only is not None and rel not in only:
            continue
        dest = entry / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f.local, dest)
        except OSError:
            shutil.copyfile(f.local, dest)
        listed[rel] = {
            "size": f.size,
            "sha256": f.sha256,
            "git_oid": f.git_oid,
            "lfs": f.lfs,
        }
    meta = {
        "schema_version": 1,
        "name": name,
        "model_id": repo_id,
        "revision": revision,
        "commit": commit,
        "download_date": "2026-11-27T00:00:00Z",
        "last_validated": "2026-11-27T00:00:00Z",
        "download_source": "test",
        "total_size_bytes": sum(v["size"] for v in listed.values()),
        "file_count": len(listed),
        "validation_status": status,
        "access_count": 0,
        "last_access": "2026-11-27T00:00:00Z",
    }
    (entry / ".caxton_metadata").write_text(json.dumps(meta))
    (entry / ".caxton_checksum").write_text(json.dumps({"schema_version": 1, "files": listed}))
    return entry
