"""Helpers for tests of the Hub mirror and client: the real MiniLM repo, served.

``minilm_catalog`` hashes the real all-MiniLM-L6-v2 files once per session and
serves them as ``sentence-transformers/all-MiniLM-L6-v2`` at the revision they
came from; ``SHA256SUMS`` (ours, not the Hub's) is left out.
"""

from __future__ import annotations

import functools
from pathlib import Path

from caxton_models.server import MINILM_COMMIT, MINILM_REPO_ID, Catalog

__all__ = ["MINILM_COMMIT", "MINILM_REPO_ID", "minilm_catalog", "minilm_sha256s"]


@functools.lru_cache(maxsize=2)
def minilm_catalog(minilm_dir: Path) -> Catalog:
    return Catalog.from_folder(minilm_dir, MINILM_REPO_ID, commit=MINILM_COMMIT)


def minilm_sha256s(minilm_dir: Path) -> dict[str, str]:
    """The published SHA-256 of every repo file, from the folder's SHA256SUMS."""
    out = {}
    for line in (minilm_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.removeprefix("./")] = digest
    return out
