"""The graph builder's safetensors reader (tests/support/tensors.py) against
the safetensors package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.tensors import read_safetensors


def test_reader_matches_the_safetensors_package(shared_dir: Path) -> None:
    """The helper reads what the reference reader reads (F32 and F16; the
    package's numpy backend has no bfloat16)."""
    safetensors_numpy = pytest.importorskip(
        "safetensors.numpy", reason="the reference writer (test extra)"
    )
    root = shared_dir / "fixtures" / "architectures"
    for name in ("bert", "distilbert"):
        ours = read_safetensors(root / name / "model.safetensors")
        ref = safetensors_numpy.load_file(str(root / name / "model.safetensors"))
        assert ours.keys() == ref.keys()
        for key, array in ref.items():
            assert ours[key].dtype == np.float32
            np.testing.assert_array_equal(ours[key], array.astype(np.float32))


def test_bf16_is_the_high_half_of_f32(shared_dir: Path) -> None:
    tensors = read_safetensors(
        shared_dir / "fixtures" / "architectures" / "xlm-roberta" / "model.safetensors"
    )
    bits = np.concatenate([a.ravel() for a in tensors.values()]).view(np.uint32)
    assert bits.size and not np.any(bits & 0xFFFF)
