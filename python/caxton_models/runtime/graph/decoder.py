"""ONNX graphs of rotary decoders (Qwen2, Qwen3, Gemma3 text) built from
config.json and weights, computing what transformers' ``Qwen3Model`` /
``Gemma3TextModel`` return as ``last_hidden_state``.

As in the encoders, activations run as a [batch * sequence, hidden] matrix
and every projection is one ``Gemm(transB=1)`` on the checkpoint's own
[out, in] weight. Attention keeps grouped-query heads grouped: the G query
heads sharing one key/value head are stacked along the sequence axis,
[B, kv, G * S, D], so one MatMul serves them without repeating keys or
values in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime.graph._builder import GraphBuilder
from caxton_models.runtime.graph._int8 import int8_linear
from caxton_models.runtime.graph._rotary import apply_rotary, positions, rms_norm, rotary_tables
from caxton_models.runtime.graph.decoder_spec import DecoderSpec
from caxton_models.runtime.graph.encoder import EncoderGraph, activation, finish
from caxton_models.runtime.graph.spec import encoder_spec
from caxton_models.runtime.graph.weights import Weights

__all__ = ["build_decoder_int8", "encode_decoder"]

#: transformers' additive mask value: finfo(float32).min where not allowed.
_MASKED = float(np.finfo(np.float32).min)
_ANCHOR = "embed_tokens.weight"


@dataclass
class _Ctx:
    g: GraphBuilder
    spec: DecoderSpec
    w: Weights
    #: per layer type: additive mask [B, 1, G * S, S] and rotary (cos, sin) [S, D]
    bias: dict[str, str] = field(default_factory=dict)
    rotary: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: projections as weight-only int8 (per output channel), not float32 Gemms
    int8: bool = False

    def param(self, name: str, shape: tuple[int, ...]) -> str:
        return self.g.weight(self.w.prefix + name, self.w.get(name, shape))

    def linear(self, x: str, name: str, n_out: int, n_in: int, *, bias: bool) -> str:
        b = self.param(f"{name}.bias", (n_out,)) if bias else None
        if self.int8:
            weight = self.w.get(f"{name}.weight", (n_out, n_in))
            return int8_linear(self.g, x, self.w.prefix + name, weight, b)
        inputs = [x, self.param(f"{name}.weight", (n_out, n_in))]
        return self.g.op("Gemm", inputs if b is None else [*inputs, b], transB=1)

    def norm(self, x: str, name: str, size: int) -> str:
        """RMSNorm; Gemma's scales by 1 + weight (added here once, in float32
        as transformers adds it, and embedded: these vectors are small)."""
        if self.spec.gemma:
            weight = self.w.get(f"{name}.weight", (size,))
            scale = self.g.const(np.float32(1.0) + weight)
        else:
            scale = self.param(f"{name}.weight", (size,))
        return rms_norm(self.g, x, scale, self.spec.eps)


def encode_decoder(
    g: GraphBuilder, spec: DecoderSpec, weights: Mapping[str, np.ndarray], *, int8: bool = False
) -> str:
    """Adds the decoder to ``g``; returns the name of last_hidden_state
    ([B, S, hidden]) before it is made a graph output. With ``int8`` the
    projections are weight-only int8 (embeddings, norms stay float32)."""
    w = Weights.locate(weights, _ANCHOR, spec.model_type)
    ctx = _Ctx(g, spec, w, int8=int8)
    ids_shape = g.op("Shape", ["input_ids"])
    pos = positions(g, ids_shape)
    for kind in sorted(set(spec.layer_types)):
        ctx.bias[kind] = _attention_bias(ctx, ids_shape, kind)
        scaled = pos
        if spec.rope_factor[kind] != 1.0:
            scaled = g.op("Div", [pos, g.const(spec.rope_factor[kind])])
        ctx.rotary[kind] = rotary_tables(g, scaled, spec.rope_theta[kind], spec.head_dim)
    x = g.op("Gather", [_embeddings(ctx), "input_ids"])
    if spec.embed_scale is not None:
        x = g.op("Mul", [x, g.const(spec.embed_scale)])
    x = g.op("Reshape", [x, g.const([-1, spec.hidden], np.int64)])
    for i in range(spec.layers):
        x = _layer(ctx, i, x)
    x = ctx.norm(x, "norm", spec.hidden)
    three = g.op("Concat", [ids_shape, g.const([spec.hidden], np.int64)], axis=0)
    return g.op("Reshape", [x, three])


def _embeddings(ctx: _Ctx) -> str:
    array = ctx.w.get(_ANCHOR)
    if array.ndim != 2 or array.shape[1] != ctx.spec.hidden:
        raise InvalidModelFormat(
            f"embedding table {ctx.w.prefix}{_ANCHOR} has shape {array.shape}, "
            f"expected (vocabulary, {ctx.spec.hidden})"
        )
    return ctx.g.weight(ctx.w.prefix + _ANCHOR, array)


def _attention_bias(ctx: _Ctx, ids_shape: str, kind: str) -> str:
    """0 where query i may attend key j, finfo.min elsewhere, as [B, 1,
    G * S, S] (tiled over the G query heads of a group).

    Allowed: key j is a real token, and j <= i for causal layers; sliding
    layers also need i - j < window (causal) or |i - j| <= window // 2
    (bidirectional: Gemma3TextConfig turns the window into window // 2 + 1
    when use_bidirectional_attention is set, and the bidirectional overlay
    allows |i - j| below that, so the span stays one window wide). One
    ``Where`` makes the bias, so a row with no allowed key (a left-padding
    query) is uniform, never -inf or NaN."""
    g, spec = ctx.g, ctx.spec
    seq = g.op("Gather", [ids_shape, g.const(1, np.int64)])
    index = g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)])
    key = g.op("Unsqueeze", [index, g.const([0], np.int64)])  # [1, S]: j
    query = g.op("Unsqueeze", [index, g.const([1], np.int64)])  # [S, 1]: i
    allowed = None
    if spec.causal:
        allowed = g.op("LessOrEqual", [key, query])
    if kind == "sliding_attention":
        assert spec.sliding_window is not None  # decoder_spec requires it
        distance = g.op("Sub", [query, key])
        limit = spec.sliding_window
        if not spec.causal:
            distance, limit = g.op("Abs", [distance]), limit // 2 + 1
        near = g.op("Less", [distance, g.const(limit, np.int64)])
        allowed = near if allowed is None else g.op("And", [allowed, near])
    real = g.op("Cast", ["attention_mask"], to=onnx.TensorProto.BOOL)
    real = g.op("Unsqueeze", [real, g.const([1, 2], np.int64)])  # [B, 1, 1, S]
    allowed = real if allowed is None else g.op("And", [real, allowed])  # [B, 1, S|1, S]
    bias = g.op("Where", [allowed, g.const(0.0), g.const(_MASKED)])
    if allowed is real:  # no position rule: same bias for every query row
        return bias
    return g.op("Tile", [bias, g.const([1, 1, spec.groups, 1], np.int64)])


def _layer(ctx: _Ctx, i: int, x: str) -> str:
    """One pre-norm decoder layer on [B * S, hidden]."""
    g, spec = ctx.g, ctx.spec
    root = f"layers.{i}."
    h = ctx.norm(x, root + "input_layernorm", spec.hidden)
    h = _attention(ctx, i, h)
    if spec.gemma:
        h = ctx.norm(h, root + "post_attention_layernorm", spec.hidden)
    x = g.op("Add", [x, h])
    before = "pre_feedforward_layernorm" if spec.gemma else "post_attention_layernorm"
    h = _mlp(ctx, root + "mlp", ctx.norm(x, root + before, spec.hidden))
    if spec.gemma:
        h = ctx.norm(h, root + "post_feedforward_layernorm", spec.hidden)
    return g.op("Add", [x, h])


def _mlp(ctx: _Ctx, name: str, x: str) -> str:
    """down(act(gate(x)) * up(x))."""
    spec, g = ctx.spec, ctx.g
    gate = ctx.linear(x, f"{name}.gate_proj", spec.intermediate, spec.hidden, bias=False)
    up = ctx.linear(x, f"{name}.up_proj", spec.intermediate, spec.hidden, bias=False)
    gated = g.op("Mul", [activation(g, gate, spec.activation), up])
    return ctx.linear(gated, f"{name}.down_proj", spec.hidden, spec.intermediate, bias=False)


def _attention(ctx: _Ctx, i: int, x: str) -> str:
    """Grouped-query self-attention of layer ``i`` on [B * S, hidden]."""
    g, spec = ctx.g, ctx.spec
    kind = spec.layer_types[i]
    name = f"layers.{i}.self_attn"
    kv, groups, d = spec.kv_heads, spec.groups, spec.head_dim
    cos, sin = ctx.rotary[kind]
    ids_shape = g.op("Shape", ["input_ids"])

    def project(part: str, heads: tuple[int, ...]) -> str:
        """[B * S, heads * D] -> [B, S, *heads, D], q/k-normed if the family has it."""
        y = ctx.linear(x, f"{name}.{part}_proj", int(np.prod(heads)) * d, spec.hidden,
                       bias=spec.qkv_bias)  # fmt: skip
        shape = g.op("Concat", [ids_shape, g.const([*heads, d], np.int64)], axis=0)
        y = g.op("Reshape", [y, shape])
        if spec.qk_norm and part in ("q", "k"):
            y = ctx.norm(y, f"{name}.{part}_norm", d)
        return y

    q = g.op("Transpose", [project("q", (kv, groups))], perm=[0, 2, 3, 1, 4])  # [B, kv, G, S, D]
    q = apply_rotary(g, g.op("Mul", [q, g.const(spec.scaling)]), cos, sin, d)
    q = g.op("Reshape", [q, g.const([0, 0, -1, d], np.int64)])  # [B, kv, G * S, D]
    k = g.op("Transpose", [project("k", (kv,))], perm=[0, 2, 1, 3])  # [B, kv, S, D]
    k = g.op("Transpose", [apply_rotary(g, k, cos, sin, d)], perm=[0, 1, 3, 2])
    v = g.op("Transpose", [project("v", (kv,))], perm=[0, 2, 1, 3])
    scores = g.op("Add", [g.op("MatMul", [q, k]), ctx.bias[kind]])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # [B, kv, G * S, D]
    context = g.op("Reshape", [context, g.const([0, 0, groups, -1, d], np.int64)])
    context = g.op("Transpose", [context], perm=[0, 3, 1, 2, 4])  # [B, S, kv, G, D]
    context = g.op("Reshape", [context, g.const([-1, spec.heads * d], np.int64)])
    return ctx.linear(context, f"{name}.o_proj", spec.hidden, spec.heads * d, bias=spec.o_bias)


def build_decoder_int8(
    config: Mapping[str, Any], weights: Mapping[str, np.ndarray]
) -> EncoderGraph:
    """:func:`~caxton_models.runtime.graph.build_encoder` of a decoder with
    weight-only int8 projections (quantised here from the float32 weights;
    the int8 copies are the caller's to supply, in ``external``)."""
    spec = encoder_spec(config)
    if not isinstance(spec, DecoderSpec):
        raise InvalidModelFormat(
            f"weight-only int8 graphs are built for decoders only, not {spec.model_type!r}"
        )
    g = GraphBuilder(external=True)
    hidden = encode_decoder(g, spec, weights, int8=True)
    return finish(g, spec, hidden, "last_hidden_state", ["batch", "sequence", spec.hidden])
