"""Rotary position embeddings and RMSNorm as standard ONNX ops, shared by
every graph that uses them (decoders, ModernBERT).

Both follow transformers' float32 arithmetic: ``inv_freq`` is rounded to
float32 once, the angles are ``position * inv_freq`` in float32, and the
rotation is ``x * cos + rotate_half(x) * sin`` on the two halves of each
head (the "neox" layout every Hugging Face checkpoint uses).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx

from caxton_models.runtime.graph._builder import GraphBuilder

__all__ = ["apply_rotary", "inverse_frequencies", "positions", "rms_norm", "rotary_tables"]


def inverse_frequencies(theta: float, dim: int) -> npt.NDArray[np.float32]:
    """``1 / theta ** (2i / dim)`` for i < dim / 2, rounded once to float32
    (computed in float64 so the rounding is the correct one)."""
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    return (1.0 / np.power(float(theta), exponents)).astype(np.float32)


def positions(g: GraphBuilder, ids_shape: str) -> str:
    """0 .. S-1 as float32 [S]: the positions transformers gives every row
    when no ``position_ids`` are passed (left padding included)."""
    seq = g.op("Gather", [ids_shape, g.const(1, np.int64)])
    index = g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)])
    return g.op("Cast", [index], to=onnx.TensorProto.FLOAT)


def rotary_tables(g: GraphBuilder, pos: str, theta: float, dim: int) -> tuple[str, str]:
    """(cos, sin) of shape [*pos.shape, dim] for float32 positions ``pos``.

    ``sin`` comes back with its first half negated, so that
    :func:`apply_rotary` needs no Neg on the (much larger) activations:
    rotate_half(x) * sin == swap_halves(x) * signed_sin."""
    column = g.op("Unsqueeze", [pos, g.const([-1], np.int64)])
    freqs = g.op("Mul", [column, g.const(inverse_frequencies(theta, dim))])
    angles = g.op("Concat", [freqs, freqs], axis=-1)
    half = dim // 2
    sign = g.const(np.concatenate([-np.ones(half), np.ones(half)]).astype(np.float32))
    return g.op("Cos", [angles]), g.op("Mul", [g.op("Sin", [angles]), sign])


def apply_rotary(g: GraphBuilder, x: str, cos: str, signed_sin: str, dim: int) -> str:
    """``x * cos + rotate_half(x) * sin`` over the last axis (``dim`` wide);
    ``cos``/``signed_sin`` from :func:`rotary_tables`, broadcast against x."""
    half = dim // 2
    last = g.const([-1], np.int64)
    first = g.op("Slice", [x, g.const([0], np.int64), g.const([half], np.int64), last])
    second = g.op("Slice", [x, g.const([half], np.int64), g.const([dim], np.int64), last])
    swapped = g.op("Concat", [second, first], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [swapped, signed_sin])])


def rms_norm(g: GraphBuilder, x: str, scale: str, eps: float) -> str:
    """``x / sqrt(mean(x^2) + eps) * scale`` over the last axis, in the op
    pattern ONNX Runtime fuses into SimplifiedLayerNormalization.

    ``scale`` is the multiplier as the architecture defines it: the weight
    itself (Llama, Qwen) or ``1 + weight`` (Gemma), made by the caller."""
    square = g.op("Pow", [x, g.const(2.0)])
    mean = g.op("ReduceMean", [square], axes=[-1], keepdims=1)
    root = g.op("Sqrt", [g.op("Add", [mean, g.const(eps)])])
    return g.op("Mul", [g.op("Div", [x, root]), scale])
