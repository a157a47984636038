"""``_core.SafeTensors`` and ``_core.safetensors_header``: the header is
validated in full (RELIABILITY row 40), tensors are read-only views of the
memory map, and values match the reference ``safetensors`` reader."""

from __future__ import annotations

import gc
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models import _core
from caxton_models.errors import InvalidModelFormat

pytest.importorskip("safetensors", reason="the reference reader (pip install safetensors)")
from safetensors.numpy import load_file, save

ARCHITECTURES = [
    "bert",
    "distilbert",
    "mpnet",
    "roberta",
    "st-bert-mean-normalize",
    "st-distilbert-mean-dense-tanh",
    "xlm-roberta",
]


def _raw_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def _reference(path: Path) -> dict[str, np.ndarray]:
    """Every tensor as the reference reads it; BF16 (which its numpy reader
    refuses) widened by the definition: the 16 bits are the top of an f32."""
    header = _raw_header(path)
    start = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    blob = path.read_bytes()
    if any(v.get("dtype") == "BF16" for k, v in header.items() if k != "__metadata__"):
        out = {}
        for name, t in header.items():
            if name == "__metadata__":
                continue
            s, e = t["data_offsets"]
            assert t["dtype"] == "BF16", "mixed BF16 files are not among the fixtures"
            bits = np.frombuffer(blob[start + s : start + e], dtype="<u2").astype("<u4") << 16
            out[name] = bits.view("<f4").reshape(t["shape"])
        return out
    return load_file(str(path))


def _compare_all(path: Path) -> int:
    st = _core.SafeTensors(path)
    ref = _reference(path)
    assert st.keys() == sorted(ref)
    assert len(st) == len(ref)
    for name, want in ref.items():
        dtype, shape = st.info(name)
        assert shape == want.shape
        if dtype in ("F16", "BF16"):
            got = st.tensor(name, as_f32=True)
            assert got.dtype == np.float32
            # Exact: F16 and BF16 widen to f32 without rounding.
            np.testing.assert_array_equal(got, want.astype(np.float32), strict=True)
        if dtype == "BF16":
            with pytest.raises(ValueError, match="as_f32=True"):
                st.tensor(name)
            continue
        view = st.tensor(name)
        assert view.dtype == want.dtype
        np.testing.assert_array_equal(view, want, strict=True)
    return len(ref)


# ------------------------------------------------------------------ real files


def test_minilm_matches_reference(minilm_dir: Path) -> None:
    path = minilm_dir / "model.safetensors"
    assert _compare_all(path) > 50
    header = _core.safetensors_header(path)
    assert header == _raw_header(path)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fixture_matches_reference(shared_dir: Path, arch: str) -> None:
    path = shared_dir / "fixtures" / "architectures" / arch / "model.safetensors"
    if not path.exists():
        pytest.skip(f"{path} not found: the architecture fixtures are incomplete")
    assert _compare_all(path) > 0
    assert _core.safetensors_header(path) == _raw_header(path)


def test_distilbert_is_f16_and_xlm_roberta_bf16(shared_dir: Path) -> None:
    arch = shared_dir / "fixtures" / "architectures"
    if not (arch / "distilbert").exists():
        pytest.skip(f"{arch} has no distilbert fixture")
    f16 = _core.SafeTensors(arch / "distilbert" / "model.safetensors")
    assert {f16.info(k)[0] for k in f16} == {"F16"}
    name = f16.keys()[0]
    view = f16.tensor(name)
    assert view.dtype == np.float16
    assert not view.flags.writeable
    bf16 = _core.SafeTensors(arch / "xlm-roberta" / "model.safetensors")
    assert {bf16.info(k)[0] for k in bf16} == {"BF16"}


# ------------------------------------------------------------------ zero copy, lifetime


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "f16": rng.standard_normal((4, 2)).astype(np.float16),
        "i64": rng.integers(-(2**60), 2**60, (2, 3), dtype=np.int64),
        "i32": rng.integers(-(2**30), 2**30, 5, dtype=np.int32),
        "i16": rng.integers(-(2**14), 2**14, 5, dtype=np.int16),
        "i8": rng.integers(-100, 100, 9, dtype=np.int8),
        "u8": rng.integers(0, 255, 9, dtype=np.uint8),
        "u16": rng.integers(0, 2**16 - 1, 3, dtype=np.uint16),
        "u32": rng.integers(0, 2**32 - 1, 3, dtype=np.uint32),
        "u64": rng.integers(0, 2**63, 3, dtype=np.uint64),
        "bool": rng.integers(0, 2, (3, 3)).astype(np.bool_),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    path = tmp_path / "small.safetensors"
    path.write_bytes(save(tensors, metadata={"format": "np", "note": "ü"}))
    return path, tensors


def test_every_numpy_dtype_round_trips(small: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, tensors = small
    st = _core.SafeTensors(path)
    assert st.metadata() == {"format": "np", "note": "ü"}
    assert st.keys() == sorted(tensors) == list(st)
    assert "f32" in st and "nope" not in st
    for name, want in tensors.items():
        got = st.tensor(name)
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, strict=True)
    assert st.info("f32") == ("F32", (3, 5))
    assert st.path == str(path)
    assert repr(st) == f"SafeTensors({str(path)!r}, {len(tensors)} tensors)".replace("'", '"')


def test_views_share_the_map_and_are_read_only(small: tuple[Path, Any]) -> None:
    path, _ = small
    st = _core.SafeTensors(path)
    a, b = st.tensor("f32"), st.tensor("f32")
    assert a is not b and np.shares_memory(a, b)
    assert a.base is st
    assert not a.flags.writeable and not a.flags.owndata and a.flags.c_contiguous
    with pytest.raises(ValueError, match="read-only"):
        a[0, 0] = 1.0
    # The map is PROT_READ: numpy must refuse to flip the flag back.
    with pytest.raises(ValueError):
        a.setflags(write=True)
    # as_f32 on F32 is the same view, not a copy.
    assert np.shares_memory(st.tensor("f32", as_f32=True), a)
    # A widened F16 is a new array.
    assert not np.shares_memory(st.tensor("f16", as_f32=True), st.tensor("f16"))


def test_view_outlives_the_file_object(small: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, tensors = small
    view = _core.SafeTensors(path).tensor("f64")
    sliced = view[2:5]
    del view
    gc.collect()
    np.testing.assert_array_equal(sliced, tensors["f64"][2:5])
    owner = sliced.base
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, _core.SafeTensors)
    # Unlinking the file does not unmap it either.
    os.unlink(path)
    gc.collect()
    assert float(sliced.sum()) == float(tensors["f64"][2:5].sum())


def _file(header: bytes | dict[str, Any], data: bytes = b"", n: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def test_unaligned_tensors_are_views_with_aligned_false(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32) * 1.5
    halfs = np.arange(5, dtype=np.float16) / 3
    # One U8 byte first: every tensor after it starts at an odd address.
    header = {
        "pad": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "x": {"dtype": "F32", "shape": [2, 3], "data_offsets": [1, 25]},
        "h": {"dtype": "F16", "shape": [5], "data_offsets": [25, 35]},
    }
    path = tmp_path / "odd.safetensors"
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # data section 8-aligned, as the reference writes
    path.write_bytes(_file(raw, b"\x07" + values.tobytes() + halfs.tobytes()))
    st = _core.SafeTensors(path)
    x = st.tensor("x")
    assert not x.flags.aligned
    np.testing.assert_array_equal(x, values.reshape(2, 3))
    assert float(x.sum()) == float(values.sum())
    np.testing.assert_array_equal(st.tensor("h", as_f32=True), halfs.astype(np.float32))
    assert np.shares_memory(x, st.tensor("x"))


def test_bf16_needs_as_f32_and_other_dtypes_refuse_it(tmp_path: Path) -> None:
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0x0001], dtype="<u2")  # 1, -2, inf, tiny
    header = {
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},
        "i": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]},
        "f8": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [16, 18]},
    }
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(_file(header, bits.tobytes() + b"\0" * 10))
    st = _core.SafeTensors(path)
    want = (bits.astype("<u4") << 16).view("<f4")
    np.testing.assert_array_equal(st.tensor("b", as_f32=True), want, strict=True)
    with pytest.raises(ValueError, match=r"bfloat16.*as_f32=True"):
        st.tensor("b")
    with pytest.raises(ValueError, match="converts only F16 and BF16"):
        st.tensor("i", as_f32=True)
    with pytest.raises(ValueError, match="F8_E4M3"):
        st.tensor("f8")
    with pytest.raises(KeyError, match="nope"):
        st.tensor("nope")
    with pytest.raises(KeyError):
        st.info("nope")


def test_more_dimensions_than_numpy_holds_is_a_value_error(tmp_path: Path) -> None:
    """A valid file numpy cannot represent: a clean ValueError, no crash."""
    header = {
        "f": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]},
        "h": {"dtype": "F16", "shape": [1] * 65, "data_offsets": [4, 6]},
        "huge": {"dtype": "F32", "shape": [0, 2**63 + 1], "data_offsets": [6, 6]},
    }
    path = tmp_path / "dims.safetensors"
    path.write_bytes(_file(header, b"\0" * 6))
    st = _core.SafeTensors(path)
    with pytest.raises(ValueError, match="dimension"):
        st.tensor("f")
    with pytest.raises(ValueError, match="dimension"):
        st.tensor("h", as_f32=True)
    with pytest.raises(ValueError, match="dimension"):
        st.tensor("huge")


def test_header_only_validation(small: tuple[Path, Any]) -> None:
    path, _ = small
    header = _core.safetensors_header(path)
    assert header == _raw_header(path)
    assert next(iter(header)) == "__metadata__"
    offsets = [v["data_offsets"] for k, v in header.items() if k != "__metadata__"]
    assert offsets == sorted(offsets)


# ------------------------------------------------------------------ malformed files

GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
TWO = {
    "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
    "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]},
}

MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty file": (b"", "shorter than the 8-byte"),
    "header length huge": (_file(GOOD, b"\0" * 8, n=2**63), "over the 100000000-byte cap"),
    "header length u64 max": (_file(GOOD, b"\0" * 8, n=2**64 - 1), "cap"),
    "header length just over cap": (_file(GOOD, b"\0" * 8, n=100_000_001), "cap"),
    "header length past end": (_file(GOOD, b"\0" * 8, n=10_000), "runs past the end"),
    "non-UTF-8": (_file(b'{"\xff":1}'), "not UTF-8"),
    "JSON array": (_file(b"[]"), "does not begin with '{'"),
    "leading space": (_file(b" " + json.dumps(GOOD).encode(), b"\0" * 8), "begin with '{'"),
    "not JSON": (_file(b"{nope"), "header:"),
    "trailing garbage": (_file(json.dumps(GOOD).encode() + b"x", b"\0" * 8), "header:"),
    "unknown dtype": (
        _file({"a": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
        "unknown variant `F17`",
    ),
    "shape x dtype mismatch": (
        _file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
        r'tensor "a": F32 x \[3\] needs 12 bytes',
    ),
    "overlapping offsets": (
        _file({**TWO, "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6),
        "invalid offset",
    ),
    "gap between tensors": (
        _file({**TWO, "b": {"dtype": "U8", "shape": [4], "data_offsets": [5, 9]}}, b"\0" * 9),
        "invalid offset",
    ),
    "gap before the first": (
        _file({"a": {"dtype": "U8", "shape": [4], "data_offsets": [1, 5]}}, b"\0" * 5),
        "invalid offset",
    ),
    "end before start": (
        _file({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}, b"\0" * 4),
        "invalid offset",
    ),
    "offsets past the end": (_file(GOOD, b"\0" * 4), "offsets past the end of the file"),
    "trailing bytes": (_file(GOOD, b"\0" * 9), "trailing bytes after the last tensor"),
    "negative shape": (
        _file({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}),
        "header:",
    ),
    "negative offset": (
        _file({"a": {"dtype": "U8", "shape": [0], "data_offsets": [-4, 0]}}),
        "header:",
    ),
    "offset over u64": (
        _file({"a": {"dtype": "U8", "shape": [0], "data_offsets": [2**64, 2**64]}}),
        "header:",
    ),
    "float offset": (
        _file({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4.0]}}, b"\0" * 4),
        "header:",
    ),
    "shape product overflows": (
        _file({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8),
        "more than usize::MAX",
    ),
    "offsets near u64 max": (
        _file(
            {
                f"t{i}": {
                    "dtype": "U8",
                    "shape": [2**61 - 1],
                    "data_offsets": [i * (2**61 - 1), (i + 1) * (2**61 - 1)],
                }
                for i in range(8)
            }
        ),
        "offsets past the end",
    ),
    "duplicate tensor": (
        _file(
            b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
            b'"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}',
            b"\0" * 4,
        ),
        'key "a" twice',
    ),
    "duplicate metadata key": (_file(b'{"__metadata__":{"k":"1","k":"2"}}'), "twice"),
    "duplicate field": (
        _file(b'{"a":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
        "duplicate field",
    ),
    "metadata not strings": (_file({"__metadata__": {"k": 1}}), "header:"),
    "tensor not an object": (_file({"a": [1, 2]}), "header:"),
    "missing field": (_file({"a": {"dtype": "U8", "shape": [0]}}), "data_offsets"),
    "deep nesting in a tensor": (
        _file(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "header:",
    ),
    "deep nesting": (
        _file(b'{"__metadata__":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "header:",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_raises_invalid_model_format(tmp_path: Path, case: str) -> None:
    data, match = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    for opener in (_core.SafeTensors, _core.safetensors_header):
        with pytest.raises(InvalidModelFormat, match=match) as info:
            opener(path)
        # errors.py declares no `path` on InvalidModelFormat (yet); the core sets it.
        assert getattr(info.value, "path", None) == str(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("where", ["prefix", "header", "data", "last byte"])
def test_truncated_file_raises_invalid_model_format(
    small: tuple[Path, Any], tmp_path: Path, where: str
) -> None:
    path, _ = small
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    cut = {"prefix": 5, "header": 8 + n // 2, "data": 8 + n + 3, "last byte": len(data) - 1}[where]
    short = tmp_path / "short.safetensors"
    short.write_bytes(data[:cut])
    with pytest.raises(InvalidModelFormat):
        _core.SafeTensors(short)


def test_valid_edge_cases_are_accepted(tmp_path: Path) -> None:
    cases = {
        "no tensors": _file(b"{}"),
        "only metadata": _file({"__metadata__": {"k": "v"}}),
        "null metadata": _file({"__metadata__": None}),
        "padded header": _file(json.dumps(GOOD).encode() + b"   ", b"\0" * 8),
        "two empty tensors at one offset": _file(
            {
                "a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
                "b": {"dtype": "F32", "shape": [2, 0], "data_offsets": [0, 0]},
            }
        ),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        st = _core.SafeTensors(path)
        for key in st:
            assert st.tensor(key).shape == st.info(key)[1], name


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _core.SafeTensors(tmp_path / "missing.safetensors")
    with pytest.raises(IsADirectoryError):
        _core.SafeTensors(tmp_path)
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    # Must not block waiting for a writer.
    with pytest.raises(InvalidModelFormat, match="not a regular file"):
        _core.safetensors_header(fifo)
