"""A small ONNX graph writer: unique value names, deduplicated constants, and
weights that stay in the caller's buffers (external initializers) or are
copied into the protobuf."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

#: LayerNormalization is an ONNX op from opset 17; nothing newer is needed.
OPSET = 17
#: Where an external initializer's bytes "live" as far as the protobuf says.
#: ONNX Runtime never opens it: ``add_external_initializers`` supplies every
#: one of them before the graph is resolved.
EXTERNAL_LOCATION = "caxton-caller-supplied-weights"

_ONNX_DTYPES: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int8): TensorProto.INT8,
}


class GraphBuilder:
    """Accumulates nodes and initializers; ``model()`` assembles them."""

    def __init__(self, *, external: bool) -> None:
        self.external = external
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        #: (initializer name, caller's array) for ``add_external_initializers``.
        self.external_weights: list[tuple[str, npt.NDArray[np.float32]]] = []
        self._used: set[str] = set()
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def fresh(self, hint: str) -> str:
        name, n = hint, 1
        while name in self._used:
            n += 1
            name = f"{hint}_{n}"
        self._used.add(name)
        return name

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        *,
        out: str | None = None,
        **attrs: Any,
    ) -> str:
        """Appends one single-output node; returns its output's name."""
        result = out if out is not None else self.fresh(op_type.lower())
        if out is not None:
            self._used.add(out)
        node = helper.make_node(
            op_type, list(inputs), [result], name=self.fresh(f"n_{result}"), **attrs
        )
        self.nodes.append(node)
        return result

    def const(self, value: Any, dtype: type[np.generic] = np.float32) -> str:
        """A small constant (shapes, scalars, lookup tables), always embedded:
        equal constants share one initializer."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def weight(self, name: str, array: npt.NDArray[np.float32]) -> str:
        """A model weight under its checkpoint name: external (the caller's
        buffer, no copy here) or embedded (copied into the protobuf)."""
        self._used.add(name)
        if not self.external:
            self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
            return name
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = _ONNX_DTYPES[array.dtype]
        tensor.dims.extend(array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        # ORT checks that a supplied initializer replaces one that is external,
        # with the same name, type and shape; offset and length are nominal.
        for key, value in (
            ("location", EXTERNAL_LOCATION),
            ("offset", "0"),
            ("length", str(array.nbytes)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        self.external_weights.append((name, array))
        return name

    def model(
        self,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        *,
        graph_name: str,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, graph_name, list(inputs), list(outputs), self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="caxton-models",
        )
        # ORT 1.17 reads IR version 9 at most; nothing here needs a newer one.
        model.ir_version = 9
        return model


def int64_input(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])


def float_output(name: str, dims: Sequence[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))
