"""Where the tests' real data and side installs are, and what happens when one
is absent: a skip that says how to get it, or a failure under
``CAXTON_REQUIRE_DATA=1`` (CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def require(path: Path, what: str, how: str | None = None) -> Path:
    """``path`` if it exists; else skip (fail in CI) saying what is missing and how to get it."""
    if path.exists():
        return path
    how = how or (
        "set CAXTON_TEST_DATA to the folder that holds models/ and corpora/ "
        "(see ../shared/models/README.md)"
    )
    msg = f"{what} not found at {path}: {how}"
    if os.environ.get("CAXTON_REQUIRE_DATA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def hfhub2_dir() -> Path:
    """huggingface_hub 2.x installed beside the test command's 1.x (scripts/test.sh)."""
    env = os.environ.get("CAXTON_HFHUB2_DIR")
    return Path(env) if env else REPO / ".cache" / "hfhub2"
