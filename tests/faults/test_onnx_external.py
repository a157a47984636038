"""RELIABILITY row 41 against ONNX files written by the onnx package itself
(not only the matrix's hand-encoded protobuf): external data must be a
regular file inside the model folder, long enough for the tensor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caxton_models.acquire.validate import check_file_formats
from caxton_models.errors import InvalidModelFormat

onnx = pytest.importorskip("onnx", reason="the onnx package (test extra) builds the models")


def _model(folder: Path, location: str, *, offset: int = 0, length: int = 16) -> None:
    from onnx import TensorProto, helper

    t = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    node = helper.make_node("Identity", ["w"], ["y"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    sub = helper.make_graph([node], "inner", [], [out], [t])
    # The tensor sits in a subgraph (an If branch) too: the walk must reach it.
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=sub, else_branch=sub)
    graph = helper.make_graph([if_node], "g", [], [out], [cond, t])
    (folder / "onnx").mkdir(exist_ok=True)
    onnx.save(helper.make_model(graph), str(folder / "onnx" / "model.onnx"))


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("../outside.bin", "refused"),
        ("/etc/passwd", "refused"),
        ("sub/../../outside.bin", "refused"),
        ("missing.bin", "refused"),
        ("link.bin", "refused"),
        ("fifo.bin", "regular"),
        ("short.bin", "reads to"),
    ],
)
def test_external_data_outside_or_odd_is_refused(tmp_path: Path, location: str, why: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 16)
    (folder / "onnx").mkdir()
    os.symlink(tmp_path / "outside.bin", folder / "onnx" / "link.bin")
    os.mkfifo(folder / "onnx" / "fifo.bin")
    (folder / "onnx" / "short.bin").write_bytes(b"\0" * 10)
    _model(folder, location)
    with pytest.raises(InvalidModelFormat, match=why) as info:
        check_file_formats(folder, ["onnx/model.onnx"], model="m")
    assert "onnx/model.onnx" in str(info.value) and "'m'" in str(info.value)


def test_external_data_inside_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "w.bin").write_bytes(b"\0" * 32)
    _model(tmp_path, "w.bin", offset=16, length=16)
    check_file_formats(tmp_path, ["onnx/model.onnx"])
