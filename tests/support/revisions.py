"""Revisions of one small model ("m") installed by commit: shared by the
store's revision tests."""

from __future__ import annotations

import json
from pathlib import Path

from caxton_models.acquire._install import install_from_dir
from caxton_models.store import METADATA_FILE, ModelCache
from tests.support.protobuf import fake_onnx

A, B, C = "a" * 40, "b" * 40, "c" * 40


def make_src(root: Path, tag: str) -> Path:
    """A model folder whose weights are shared by every tag; config.json differs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"hidden_size": 8, "tag": tag}))
    (root / "onnx").mkdir(exist_ok=True)
    (root / "onnx" / "model.onnx").write_bytes(fake_onnx(4002))
    return root


def put(cache: ModelCache, tmp_path: Path, commit: str, **kw: object) -> None:
    src = make_src(tmp_path / f"src-{commit[:1]}", commit[:1])
    install_from_dir(
        cache,
        "m",
        src,
        model_id="org/m",
        revision="main",
        commit=commit,
        **kw,  # type: ignore[arg-type]
    )


def commit_of(path: Path) -> str:
    return str(json.loads((path / METADATA_FILE).read_text())["commit"])
