"""ONNX files for tests, written as protobuf by hand (no onnx import): a
tiny real ModelProto, or one of an exact size for tests that count bytes."""

from __future__ import annotations

from collections.abc import Mapping


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint (int) or length-delimited (bytes)."""
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def onnx_model(raw: bytes = b"", external: Mapping[str, str] | None = None) -> bytes:
    """A ModelProto: ir_version 8, a graph with one float initializer holding
    ``raw`` (or pointing at external data)."""
    tensor = field(1, 1) + field(2, 1) + field(8, b"w")  # dims, data_type FLOAT, name
    if external is not None:
        for k, v in external.items():
            tensor += field(13, field(1, k.encode()) + field(2, v.encode()))
        tensor += field(14, 1)  # data_location EXTERNAL
    else:
        tensor += field(9, raw)
    node = field(1, b"w") + field(2, b"y") + field(4, b"Identity")
    graph = field(1, node) + field(2, b"g") + field(5, tensor)
    return field(1, 8) + field(7, graph) + field(8, field(2, 17))  # opset 17


def fake_onnx(size: int, fill: bytes = b"w") -> bytes:
    """A valid ONNX ModelProto of exactly ``size`` bytes (at least 4): an
    ir_version and a doc_string of padding, for tests that only move bytes."""
    # Sizes where the length's varint grows by a byte (130-132, ...) cannot be
    # reached by the doc_string alone: an empty producer_name takes two bytes.
    for head in (b"\x08\x07", b"\x08\x07\x12\x00"):
        for width in (1, 2, 3, 4, 5):
            n = size - len(head) - 1 - width  # head, doc_string tag (1), length
            if n >= 0 and len(_varint(n)) == width:
                return head + field(6, (fill * (n // max(1, len(fill)) + 1))[:n])
    raise ValueError(f"no ONNX file of {size} bytes")


def onnx_with_node(op: str, inputs: tuple[str, ...] = ("w",)) -> bytes:
    """A well-formed ModelProto (opset 17) whose one node is ``op`` over
    ``inputs``, output ``y``: with an unknown op, or the wrong number of
    inputs, ONNX Runtime refuses it as an invalid graph."""
    tensor = field(1, 1) + field(2, 1) + field(8, b"w") + field(9, b"\0\0\x80?")
    node = b"".join(field(1, i.encode()) for i in inputs) + field(2, b"y") + field(4, op.encode())
    graph = field(1, node) + field(2, b"g") + field(5, tensor) + field(12, field(1, b"y"))
    return field(1, 8) + field(7, graph) + field(8, field(2, 17))
