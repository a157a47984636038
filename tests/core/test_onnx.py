"""``_core.onnx_external_data``: the ONNX format check of the core
(rust/src/onnx.rs) against models written by the onnx package itself, read
back by its own protobuf parser, and on the real MiniLM graph."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caxton_models import _core
from caxton_models.acquire.validate import check_file_formats
from caxton_models.errors import InvalidModelFormat
from tests.support.protobuf import fake_onnx, field, onnx_model

onnx = pytest.importorskip("onnx", reason="the onnx package (test extra) builds the models")
from onnx import (  # noqa: E402
    AttributeProto,
    GraphProto,
    ModelProto,
    SparseTensorProto,
    TensorProto,
    helper,
)

Files = list[tuple[str, int, str]]


class _Reference:
    """What the core must find, from the onnx package's parse: every tensor
    with external data, in the order the fields sit in the file."""

    def __init__(self, model: ModelProto) -> None:
        self.files: dict[str, tuple[int, str]] = {}
        self.graph(model.graph)
        for ti in model.training_info:
            self.graph(ti.initialization)
            self.graph(ti.algorithm)
        for f in model.functions:
            for n in f.node:
                for a in n.attribute:
                    self.attribute(a)
            for a in f.attribute_proto:
                self.attribute(a)

    def tensor(self, t: TensorProto) -> None:
        if not t.external_data:
            return
        kv = {e.key: e.value for e in t.external_data}
        end = int(kv.get("offset", "0")) + int(kv.get("length", "0"))
        loc = kv.get("location", "")
        if loc not in self.files or end > self.files[loc][0]:
            self.files[loc] = (end, t.name)

    def sparse(self, s: SparseTensorProto) -> None:
        self.tensor(s.values)
        self.tensor(s.indices)

    def attribute(self, a: AttributeProto) -> None:
        if a.HasField("t"):
            self.tensor(a.t)
        if a.HasField("g"):
            self.graph(a.g)
        for t in a.tensors:
            self.tensor(t)
        for g in a.graphs:
            self.graph(g)
        if a.HasField("sparse_tensor"):
            self.sparse(a.sparse_tensor)
        for s in a.sparse_tensors:
            self.sparse(s)

    def graph(self, g: GraphProto) -> None:
        for n in g.node:
            for a in n.attribute:
                self.attribute(a)
        for t in g.initializer:
            self.tensor(t)
        for s in g.sparse_initializer:
            self.sparse(s)


def _reference(model: ModelProto) -> Files:
    files = _Reference(model).files
    return [(loc, end, name) for loc, (end, name) in files.items()]


def _external(name: str, location: str, offset: int, length: int) -> TensorProto:
    t = helper.make_tensor(name, TensorProto.FLOAT, [length // 4], [0.0] * (length // 4))
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _nested_model() -> ModelProto:
    """External tensors everywhere one can be: initializers, an If's branches,
    a Constant's value, a sparse initializer, a function's node and default
    attribute, training info."""
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    branch = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["y"])],
        "branch",
        [],
        [out],
        [_external("b", "branch.bin", 0, 16)],
    )
    const = helper.make_node("Constant", [], ["k"], value=_external("k", "w.bin", 64, 16))
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    sparse = helper.make_sparse_tensor(
        _external("sv", "sparse.bin", 0, 8), _external("si", "sparse.bin", 8, 8), [4]
    )
    graph = helper.make_graph(
        [const, if_node],
        "g",
        [],
        [out],
        [cond, _external("w0", "w.bin", 0, 32), _external("w1", "sub/w.bin", 4, 4)],
        sparse_initializer=[sparse],
    )
    fn_node = helper.make_node("Constant", [], ["z"], value=_external("fk", "fn.bin", 0, 4))
    default = helper.make_attribute("d", _external("fd", "fn.bin", 4, 12))
    function = helper.make_function(
        "local", "F", [], ["z"], [fn_node], [helper.make_opsetid("", 17)]
    )
    function.attribute_proto.append(default)
    model = helper.make_model(graph, functions=[function])
    training = model.training_info.add()
    training.initialization.CopyFrom(
        helper.make_graph([], "init", [], [], [_external("ti", "train.bin", 0, 40)])
    )
    return model


def test_every_external_tensor_is_found_as_onnx_reads_it(tmp_path: Path) -> None:
    model = _nested_model()
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    got = _core.onnx_external_data(path)
    assert got == _reference(onnx.load(str(path), load_external_data=False))
    assert dict((loc, end) for loc, end, _ in got) == {
        "branch.bin": 16,
        "w.bin": 80,
        "sub/w.bin": 8,
        "sparse.bin": 16,
        "fn.bin": 16,
        "train.bin": 40,
    }
    assert [t for loc, _, t in got if loc == "w.bin"] == ["k"]  # the one reading furthest


_KEYS = st.sampled_from(["location", "offset", "length", "checksum", "basepath", ""])
_DIGITS = st.integers(0, 2**40).map(str)
_ENTRY = st.tuples(_KEYS, st.one_of(_DIGITS, st.sampled_from(["a.bin", "sub/b.bin", ""])))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tensors=st.lists(st.lists(_ENTRY, max_size=5), max_size=6))
def test_entries_in_any_order_match_onnx(
    tmp_path: Path, tensors: list[list[tuple[str, str]]]
) -> None:
    """Keys repeated, missing or unknown: the core's reading of the entries is
    the onnx package's (last one wins, offset and length default to 0)."""
    inits = []
    for i, entries in enumerate(tensors):
        t = helper.make_tensor(f"t{i}", TensorProto.FLOAT, [1], [0.0])
        for k, v in entries:
            e = t.external_data.add()
            e.key, e.value = k, v
        inits.append(t)
    model = helper.make_model(helper.make_graph([], "g", [], [], inits))
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    expect_error = any(
        not v.isdigit() for entries in tensors if entries for k, v in dict(entries).items()
        if k in ("offset", "length")
    )  # fmt: skip
    if expect_error:
        with pytest.raises(InvalidModelFormat, match="are not numbers"):
            _core.onnx_external_data(path)
    else:
        assert _core.onnx_external_data(path) == _reference(model)


def test_the_real_minilm_graph(minilm_dir: Path, tmp_path: Path) -> None:
    """The real graph has its tensors inline; saved again with them in one
    external file (as exporters of large models do), every tensor is found,
    the file is exactly as long as the furthest tensor needs, and a byte
    less is refused naming that tensor."""
    graph = minilm_dir / "onnx" / "model.onnx"
    assert _core.onnx_external_data(graph) == []
    model = onnx.load(str(graph))
    (tmp_path / "onnx").mkdir()
    onnx.save_model(
        model,
        str(tmp_path / "onnx" / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
        size_threshold=0,
    )
    saved = tmp_path / "onnx" / "model.onnx"
    got = _core.onnx_external_data(saved)
    assert got == _reference(onnx.load(str(saved), load_external_data=False))
    [(location, end, tensor)] = got
    data = tmp_path / "onnx" / "model.onnx_data"
    assert location == "model.onnx_data" and end == data.stat().st_size
    check_file_formats(tmp_path, ["onnx/model.onnx"])
    os.truncate(data, end - 1)
    with pytest.raises(InvalidModelFormat, match=re.escape(f"tensor '{tensor}' reads to {end}")):
        check_file_formats(tmp_path, ["onnx/model.onnx"])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "does not start like an ONNX ModelProto"),
        (b"<html>rate limited</html>", "does not start like an ONNX ModelProto"),
        (onnx_model(b"x" * 100)[:-40], "runs past the end of its message"),
        (b"\x08\x01\x3a\x03\x0a\x01\x80", "varint at byte 6"),
        (b"\x08\x01\x3a\x01\x0b", "wire type 3 (field 1 at byte 4)"),
        (b"\x08\x01" + field(7, field(5, field(13, field(2, b"\xff")))), "not UTF-8"),
        (onnx_model(external={"location": "w", "offset": "0x10"}), '["0x10", "0"] are not numbers'),
    ],
)
def test_malformed_files_name_the_file_and_the_fault(tmp_path: Path, body: bytes, why: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(body)
    with pytest.raises(InvalidModelFormat, match=re.escape(why)) as info:
        _core.onnx_external_data(path)
    assert f"{path} is not a valid ONNX file" in str(info.value)
    assert info.value.path == str(path)


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _core.onnx_external_data(tmp_path / "missing.onnx")
    with pytest.raises(IsADirectoryError):
        _core.onnx_external_data(tmp_path)
    os.mkfifo(tmp_path / "fifo.onnx")  # refused without blocking on the open
    with pytest.raises(InvalidModelFormat, match="not a regular file"):
        _core.onnx_external_data(tmp_path / "fifo.onnx")
    (tmp_path / "ok.onnx").write_bytes(fake_onnx(1000))
    assert _core.onnx_external_data(tmp_path / "ok.onnx") == []
