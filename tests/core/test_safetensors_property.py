"""Hypothesis: valid safetensors files round-trip through ``_core.SafeTensors``
exactly as the reference writer made them; mutated or random bytes only ever
raise ``InvalidModelFormat``, and are never accepted where the reference
reader refuses them (we are at least as strict)."""

from __future__ import annotations

import itertools
import json
import math
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from caxton_models import _core
from caxton_models.errors import InvalidModelFormat

pytest.importorskip("safetensors", reason="the reference writer (pip install safetensors)")
from safetensors import deserialize
from safetensors.numpy import save

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int64,
    np.int32,
    np.int16,
    np.int8,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]

_counter = itertools.count()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _write(workdir: Path, data: bytes) -> Path:
    # A fresh name each time: rewriting a file that an earlier object still
    # maps would change (or fault) what its views read.
    path = workdir / f"{next(_counter)}.safetensors"
    path.write_bytes(data)
    return path


tensor_dicts = st.dictionaries(
    keys=st.text(min_size=1, max_size=12).filter(lambda k: k != "__metadata__"),
    values=st.sampled_from(DTYPES).flatmap(
        lambda dt: arrays(dt, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    ),
    max_size=6,
)
metadata = st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)


@given(tensors=tensor_dicts, meta=metadata)
@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_reference_files_round_trip(workdir: Path, tensors: dict[str, np.ndarray], meta) -> None:
    data = save(tensors, metadata=meta)
    path = _write(workdir, data)
    if not _reference_accepts(data):
        # The writer can emit what its reader refuses: safetensors 0.8.0 writes
        # `{},"__metadata__":{}}` for no tensors and empty metadata. We must
        # refuse it too, with the typed error.
        with pytest.raises(InvalidModelFormat):
            _core.SafeTensors(path)
        return
    f = _core.SafeTensors(path)
    assert f.keys() == sorted(tensors)
    assert f.metadata() == meta
    for name, want in tensors.items():
        got = f.tensor(name)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, strict=True)
        if want.dtype == np.float16:
            np.testing.assert_array_equal(
                f.tensor(name, as_f32=True), want.astype(np.float32), strict=True
            )
    header = _core.safetensors_header(path)
    assert set(header) - {"__metadata__"} == set(tensors)


def _reference_accepts(data: bytes) -> bool:
    try:
        deserialize(data)
    except Exception:
        return False
    return True


def _check(workdir: Path, data: bytes) -> None:
    path = _write(workdir, data)
    try:
        f = _core.SafeTensors(path)
    except InvalidModelFormat as e:
        assert getattr(e, "path", None) == str(path)
        event("rejected")
        return
    event("accepted")
    # Accepted: the reference must accept it too, and every tensor must read.
    assert _reference_accepts(data), "accepted a file the reference reader refuses"
    for name in f:
        dtype, shape = f.info(name)
        try:
            arr = f.tensor(name, as_f32=dtype in ("F16", "BF16"))
        except ValueError:
            continue  # a dtype numpy lacks (F8, F4, ...): refused by name, not a crash
        assert arr.shape == shape
        arr.sum()  # touches every byte of the view


SEED_FILE = save(
    {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.arange(3, dtype=np.float16),
        "i": np.array([1, -1], dtype=np.int64),
    },
    metadata={"format": "np"},
)
HEADER_END = 8 + struct.unpack("<Q", SEED_FILE[:8])[0]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED_FILE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "length"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from(b'{}[]":,0123456789-eE. \xff\x00'))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "length" and len(data) >= 8:
            data[:8] = struct.pack("<Q", draw(st.integers(0, 2**64 - 1)))
    return bytes(data)


@given(data=mutated())
@settings(deadline=None, max_examples=500)
def test_mutated_files_never_crash(workdir: Path, data: bytes) -> None:
    _check(workdir, data)


@given(
    n=st.integers(0, 2**64 - 1) | st.integers(0, 300),
    body=st.binary(max_size=300),
)
@settings(deadline=None, max_examples=300)
def test_random_bytes_never_crash(workdir: Path, n: int, body: bytes) -> None:
    _check(workdir, struct.pack("<Q", n) + body)


BITS = {"F32": 32, "F16": 16, "BF16": 16, "U8": 8, "I64": 64, "F8_E4M3": 8, "F4": 4}


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[dict[str, dict[str, object]], int]:
    """A consistent header (contiguous offsets, spans = dtype x shape), then at
    most one small change to an offset, a dimension or the data length."""
    header: dict[str, dict[str, object]] = {}
    pos = 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from(sorted(BITS)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = math.prod(shape) * BITS[dtype] // 8
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    data_len = pos
    change = draw(st.sampled_from(["none", "offset", "dim", "data_len"]))
    delta = draw(st.sampled_from([-2, -1, 1, 2, 8]))
    if change == "data_len":
        data_len = max(0, data_len + delta)
    elif header and change in ("offset", "dim"):
        entry = header[draw(st.sampled_from(sorted(header)))]
        if change == "offset":
            offsets = entry["data_offsets"]
            assert isinstance(offsets, list)
            offsets[draw(st.integers(0, 1))] += delta
        elif entry["shape"]:
            dims = entry["shape"]
            assert isinstance(dims, list)
            dims[draw(st.integers(0, len(dims) - 1))] += delta
    return header, data_len


@given(case=near_valid())
@settings(deadline=None, max_examples=400)
def test_near_valid_headers_agree_with_reference(
    workdir: Path, case: tuple[dict[str, dict[str, object]], int]
) -> None:
    """Offsets, shapes and lengths, not the JSON parser, decide here; with no
    duplicate keys and no leading whitespace we must agree exactly."""
    header, data_len = case
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + b"\0" * data_len
    path = _write(workdir, data)
    try:
        _core.SafeTensors(path)
        ours = True
    except InvalidModelFormat:
        ours = False
    event(f"accepted={ours}")
    assert ours == _reference_accepts(data)
    if ours:
        _check(workdir, data)
