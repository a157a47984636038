"""Payloads for the download engine's tests: deterministic bytes, their hash,
and what a failed download may have left behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

MIB = 1 << 20


def blob(n: int, seed: int = 1) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out = bytearray()
    h = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def leftovers(d: Path) -> list[str]:
    """Partial or lock files left in ``d``."""
    return sorted(p.name for p in d.iterdir() if ".part" in p.name or p.name.endswith(".lock"))
