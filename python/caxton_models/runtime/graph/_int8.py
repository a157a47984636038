"""Weight-only int8 linear layers in standard ONNX ops: per-output-channel
symmetric int8 weights, activations quantised per call.

``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul`` is the pattern
onnxruntime's dynamic quantisation writes, which its optimiser fuses into one
DynamicQuantizeMatMul kernel; the weight is quantised here, at graph build,
one tensor at a time, from the float32 weight the builder was given.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper

from caxton_models.runtime.graph._builder import GraphBuilder

__all__ = ["int8_linear", "quantize_rows"]


def quantize_rows(
    weight: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """[out, in] float32 -> ([in, out] int8, [out] scales) with
    weight ~= (q.T * scale[:, None]); a zero row gets scale 1."""
    peak = np.abs(weight).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.rint(weight / scale[:, None]).clip(-127, 127).astype(np.int8)
    return np.ascontiguousarray(q.T), scale


def int8_linear(
    g: GraphBuilder, x: str, name: str, weight: npt.NDArray[np.float32], bias: str | None
) -> str:
    """``x @ weight.T (+ bias)`` for x [M, in] float32, weight [out, in]."""
    q, scale = quantize_rows(weight)
    # The builder's weights are float32 but for these: it knows int8 too.
    q_name = g.weight(f"{name}.int8", cast("npt.NDArray[np.float32]", q))
    scale_name = g.weight(f"{name}.scale", scale)
    xq, xs, xz = (g.fresh(f"{x}_{part}") for part in ("q", "scale", "zero"))
    g.nodes.append(
        helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xz], name=g.fresh("n_dql"))
    )
    acc = g.op("MatMulInteger", [xq, q_name, xz])
    y = g.op("Mul", [g.op("Cast", [acc], to=onnx.TensorProto.FLOAT), g.op("Mul", [xs, scale_name])])
    return g.op("Add", [y, bias]) if bias is not None else y
