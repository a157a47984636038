"""The six validation steps, quick and full, on the real model files."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

from caxton_models.acquire._install import install_from_dir
from caxton_models.acquire.validate import ValidationStatus, check_file_formats, validate_model
from caxton_models.errors import InvalidModelFormat, ValidationFailed
from caxton_models.registry import ModelSpec, Registry
from caxton_models.store import InstalledModel, ModelCache


@pytest.fixture
def installed(tmp_path: Path, minilm_dir: Path) -> tuple[InstalledModel, ModelSpec]:
    spec = Registry().get("all-MiniLM-L6-v2")
    cache = ModelCache(tmp_path / "cache")
    m = install_from_dir(
        cache,
        spec.name,
        minilm_dir,
        model_id=spec.model_id,
        revision=spec.revision,
        expected=spec.checksums,
        required_files=spec.required_files,
    )
    return m, spec


def steps(report: object) -> dict[str, bool | None]:
    return {s.name: s.ok for s in report.steps}  # type: ignore[attr-defined]


def test_clean_model_passes_both_modes(installed: tuple[InstalledModel, ModelSpec]) -> None:
    m, spec = installed
    quick = validate_model(m, spec, mode="quick")
    assert quick.ok and steps(quick)["checksum"] is None  # quick: sizes and manifest only
    full = validate_model(m, spec, mode="full")
    assert full.ok, full.summary()
    assert steps(full) == {
        "existence": True,
        "size": True,
        "checksum": True,
        "format": True,
        "compatibility": True,
        "functional": None,
    }
    assert all(f.status is ValidationStatus.VALID for f in full.files.values())
    assert full.files["model.safetensors"].actual_sha256 == spec.checksums["model.safetensors"]


def test_flipped_byte_found_only_by_full(installed: tuple[InstalledModel, ModelSpec]) -> None:
    m, spec = installed
    p = m.path / "tokenizer.json"
    data = bytearray(p.read_bytes())
    data[1000] ^= 0x01
    os.chmod(p, 0o644)
    p.write_bytes(bytes(data))
    assert validate_model(m, spec, mode="quick").ok
    full = validate_model(m, spec, mode="full")
    assert not full.ok and full.bad_files == ["tokenizer.json"]
    assert full.files["tokenizer.json"].status is ValidationStatus.INVALID
    with pytest.raises(ValidationFailed) as exc:
        full.raise_for_status()
    assert exc.value.files == ["tokenizer.json"]


def test_truncated_and_missing_found_by_quick(installed: tuple[InstalledModel, ModelSpec]) -> None:
    m, spec = installed
    with open(m.path / "onnx" / "model.onnx", "r+b") as f:
        f.truncate(100)
    (m.path / "config.json").unlink()
    q = validate_model(m, spec, mode="quick")
    assert not q.ok
    assert q.bad_files == ["config.json", "onnx/model.onnx"]
    assert q.files["config.json"].status is ValidationStatus.MISSING


def test_symlink_in_place_of_file_is_corrupted(
    installed: tuple[InstalledModel, ModelSpec], tmp_path: Path
) -> None:
    m, spec = installed
    target = tmp_path / "elsewhere.json"
    target.write_bytes((m.path / "config.json").read_bytes())
    (m.path / "config.json").unlink()
    os.symlink(target, m.path / "config.json")
    r = validate_model(m, spec, mode="full")
    assert (
        r.files["config.json"].status is ValidationStatus.CORRUPTED and "config.json" in r.bad_files
    )


def test_compatibility_and_functional(installed: tuple[InstalledModel, ModelSpec]) -> None:
    m, spec = installed
    from dataclasses import replace

    wrong_dims = replace(spec, dimensions=768)
    r = validate_model(m, wrong_dims, mode="full")
    assert steps(r)["compatibility"] is False and "768" in r.summary()

    def good(path: Path, s: ModelSpec) -> Sequence[float]:
        assert path == m.path
        return [0.1] * s.dimensions

    def short(path: Path, s: ModelSpec) -> Sequence[float]:
        return [0.1] * 10

    def broken(path: Path, s: ModelSpec) -> Sequence[float]:
        raise RuntimeError("onnxruntime could not load the graph")

    assert steps(validate_model(m, spec, mode="full", functional=good))["functional"] is True
    r = validate_model(m, spec, mode="full", functional=short)
    assert steps(r)["functional"] is False and "10 dimensions" in r.summary()
    r = validate_model(m, spec, mode="full", functional=broken)
    assert steps(r)["functional"] is False and "could not load" in r.summary()
    assert (
        steps(validate_model(m, spec, mode="full", functional=lambda p, s: [0.0] * 384))[
            "functional"
        ]
        is False
    )


def test_default_functional_uses_embedder_when_present(
    installed: tuple[InstalledModel, ModelSpec],
) -> None:
    m, spec = installed
    r = validate_model(m, spec, mode="full", functional=True)
    try:
        import caxton_models.runtime.embedder  # noqa: F401
    except ImportError:
        assert steps(r)["functional"] is None  # no engine in this build: step skipped, not failed
    else:
        assert steps(r)["functional"] is True and r.embedding_dimensions == 384


def _safetensors(path: Path, header: object, data: bytes = b"", n: int | None = None) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if n is None else n) + raw + data)


def test_format_checks(tmp_path: Path) -> None:
    good = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    _safetensors(tmp_path / "ok.safetensors", good, b"\0" * 8)
    check_file_formats(tmp_path, ["ok.safetensors"])
    cases = {
        "huge.safetensors": (good, b"\0" * 8, 2**63),
        "past.safetensors": (
            {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}},
            b"\0" * 8,
            None,
        ),
        "dtype.safetensors": (
            {"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 8,
            None,
        ),
        "list.safetensors": ([1, 2], b"", None),
    }
    for name, (header, data, n) in cases.items():
        _safetensors(tmp_path / name, header, data, n)
        with pytest.raises(InvalidModelFormat, match=name.split(".")[0]):
            check_file_formats(tmp_path, [name])
    (tmp_path / "model.onnx").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(InvalidModelFormat, match="ONNX"):
        check_file_formats(tmp_path, ["model.onnx"])
    (tmp_path / "t.json").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidModelFormat):
        check_file_formats(tmp_path, ["t.json"])


def test_real_files_pass_format_checks(minilm_dir: Path) -> None:
    check_file_formats(
        minilm_dir, ["model.safetensors", "onnx/model.onnx", "tokenizer.json", "config.json"]
    )
