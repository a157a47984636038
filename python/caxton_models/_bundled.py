"""Where the bundled model lives inside the installed package."""

from __future__ import annotations

from pathlib import Path

from caxton_models.errors import ModelNotFound

BUNDLED_ROOT = Path(__file__).resolve().parent / "bundled"


def bundled_dir(name: str = "bundled-mini") -> Path:
    path = BUNDLED_ROOT / name
    if not (path / "caxton.json").is_file():
        raise ModelNotFound(
            f"the bundled model {name!r} is missing from {BUNDLED_ROOT}: this install of "
            "caxton-models is incomplete; reinstall the wheel",
            model=name,
        )
    return path
