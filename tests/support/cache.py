"""Tiny models installed into a real ``ModelCache`` (JSON configs and an
ONNX-looking weights file), for the store's tests."""

from __future__ import annotations

import json
from pathlib import Path

from caxton_models.acquire._install import install_from_dir
from caxton_models.store import InstalledModel, ModelCache
from tests.support.protobuf import fake_onnx


def make_src(root: Path, size: int = 1000, tag: str = "x") -> Path:
    """A tiny model folder: JSON configs and an ONNX-looking weights file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"hidden_size": 8, "tag": tag}))
    (root / "onnx").mkdir(exist_ok=True)
    (root / "onnx" / "model.onnx").write_bytes(fake_onnx(size, tag.encode()))
    return root


def install(
    cache: ModelCache, tmp_path: Path, name: str, size: int = 1000, **kw: object
) -> InstalledModel:
    src = make_src(tmp_path / f"src-{name}", size, tag=name[:1])
    return install_from_dir(cache, name, src, model_id=f"org/{name}", **kw)  # type: ignore[arg-type]
