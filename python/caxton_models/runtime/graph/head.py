"""Pooling, Dense and Normalize as ONNX ops after the encoder, so one
session turns token ids into sentence embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from caxton_models.runtime.graph._builder import GraphBuilder
from caxton_models.runtime.graph.encoder import EncoderGraph, activation, encode, finish
from caxton_models.runtime.graph.pipeline import DenseLayer, PoolingMode, SentencePipeline
from caxton_models.runtime.graph.spec import encoder_spec

__all__ = ["build_sentence_encoder"]


def build_sentence_encoder(
    config: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    pipeline: SentencePipeline,
    *,
    external: bool = True,
) -> EncoderGraph:
    """:func:`build_encoder` plus ``pipeline``'s pooling and steps: output
    ``sentence_embedding``, float32 [batch, dimensions]. Dense weights are
    external or embedded like the encoder's."""
    spec = encoder_spec(config)
    g = GraphBuilder(external=external)
    x = pool_op(g, encode(g, spec, weights), pipeline.pooling)
    dims = spec.hidden
    for step in pipeline.steps:
        if isinstance(step, DenseLayer):
            x, dims = dense_op(g, x, step), step.out_features
        else:
            x = normalize_op(g, x, step.eps)
    return finish(g, spec, x, "sentence_embedding", ["batch", dims])


def _mask3(g: GraphBuilder) -> str:
    """attention_mask as float [B, S, 1]."""
    mask = g.op("Cast", ["attention_mask"], to=onnx.TensorProto.FLOAT)
    return g.op("Unsqueeze", [mask, g.const([2], np.int64)])


def pool_op(g: GraphBuilder, hidden: str, mode: PoolingMode) -> str:
    """[B, S, H] -> [B, H], as sentence-transformers' Pooling computes it."""
    axis = g.const([1], np.int64)
    if mode == "cls":
        return g.op("Gather", [hidden, g.const(0, np.int64)], axis=1)
    mask = _mask3(g)
    if mode == "max":  # padding counts as -1e9, as in sentence-transformers
        padding = g.op("Equal", [mask, g.const(0.0)])
        masked = g.op("Where", [padding, g.const(-1e9), hidden])
        return g.op("ReduceMax", [masked], axes=[1], keepdims=0)
    if mode == "lasttoken":
        return _last_token(g, hidden, mask)
    if mode == "weightedmean":  # weights 1..S on real tokens
        seq = g.op("Gather", [g.op("Shape", [hidden]), g.const(1, np.int64)])
        end = g.op("Add", [g.op("Cast", [seq], to=onnx.TensorProto.FLOAT), g.const(1.0)])
        ramp = g.op("Range", [g.const(1.0), end, g.const(1.0)])
        mask = g.op("Mul", [mask, g.op("Unsqueeze", [ramp, g.const([1], np.int64)])])
    total = g.op("ReduceSum", [g.op("Mul", [hidden, mask]), axis], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [mask, axis], keepdims=0), g.const(1e-9)])
    if mode == "mean_sqrt_len_tokens":
        count = g.op("Sqrt", [count])
    return g.op("Div", [total, count])


def _last_token(g: GraphBuilder, hidden: str, mask: str) -> str:
    """The last position whose mask is 1 (a row without one gives zeros)."""
    seq = g.op("Gather", [g.op("Shape", [hidden]), g.const(1, np.int64)])
    positions = g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)])
    real = g.op("Mul", ["attention_mask", positions])
    last = g.op("ReduceMax", [real], axes=[1], keepdims=1)  # [B, 1]
    return g.op("GatherND", [g.op("Mul", [hidden, mask]), last], batch_dims=1)


def dense_op(g: GraphBuilder, x: str, layer: DenseLayer) -> str:
    """sentence-transformers Dense: activation(x W^T + b), weights as saved."""
    weight = g.weight(f"{layer.name}.linear.weight", layer.weight)
    inputs = [x, weight]
    if layer.bias is not None:
        inputs.append(g.weight(f"{layer.name}.linear.bias", layer.bias))
    y = g.op("Gemm", inputs, transB=1)
    if layer.activation == "identity":
        return y
    if layer.activation == "sigmoid":
        return g.op("Sigmoid", [y])
    return activation(g, y, layer.activation)


def normalize_op(g: GraphBuilder, x: str, eps: float) -> str:
    """x / max(||x||_2, eps) over the last axis."""
    norm = g.op("ReduceL2", [x], axes=[-1], keepdims=1)
    return g.op("Div", [x, g.op("Max", [norm, g.const(eps)])])
