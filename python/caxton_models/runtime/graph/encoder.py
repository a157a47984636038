"""ONNX graphs of BERT-family encoders, built from config.json and weights.

The activations run as a [batch * sequence, hidden] matrix between
attention blocks, so every linear layer is one ``Gemm(transB=1)`` on the
checkpoint's own [out, in] weight: no transposed copy is ever made, and the
caller's (memory-mapped) buffers can back the session as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import onnx

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime.graph._builder import GraphBuilder, float_output, int64_input
from caxton_models.runtime.graph.spec import EncoderSpec, encoder_spec
from caxton_models.runtime.graph.weights import Weights

if TYPE_CHECKING:
    from caxton_models.runtime.graph.decoder_spec import DecoderSpec

__all__ = ["EncoderGraph", "build_encoder"]

#: transformers' additive mask: finfo(float32).min where attention_mask is 0.
_MASKED = float(np.finfo(np.float32).min)
#: MPNetEncoder.compute_position_bias buckets with its default num_buckets
#: (32) and max_distance (128), whatever relative_attention_num_buckets says.
_MPNET_BUCKETS = 32
_MPNET_MAX_DISTANCE = 128


@dataclass
class EncoderGraph:
    """A built graph and the weights ONNX Runtime must be given for it.

    ``external`` lists (initializer name, array) pairs that the protobuf only
    references: pass them with ``SessionOptions.add_external_initializers``
    (see :func:`caxton_models.runtime.graph.create_session`). It is empty when
    the weights were embedded."""

    model: onnx.ModelProto
    external: list[tuple[str, npt.NDArray[np.float32]]]
    spec: EncoderSpec | DecoderSpec
    input_names: tuple[str, ...]
    output_name: str
    dimensions: int


SpecT = TypeVar("SpecT")


@dataclass
class LayerCtx(Generic[SpecT]):
    """What every layer of an encoder needs: the builder, the spec, the
    weights, and the shapes the layers share (BERT-style and ModernBERT)."""

    g: GraphBuilder
    spec: SpecT
    w: Weights
    heads_shape: str  # [B, S, heads, head_dim]
    flat_shape: str  # [B * S, hidden]

    def param(self, name: str, shape: tuple[int, ...] | None = None) -> str:
        """The checkpoint tensor ``name`` as an initializer."""
        return self.g.weight(self.w.prefix + name, self.w.get(name, shape))


@dataclass
class _Ctx(LayerCtx[EncoderSpec]):
    bias: str  # additive attention bias, [B, 1, 1, S] or [B, heads, S, S]

    def linear(self, x: str, name: str, n_out: int, n_in: int) -> str:
        weight = self.param(f"{name}.weight", (n_out, n_in))
        return self.g.op("Gemm", [x, weight, self.param(f"{name}.bias", (n_out,))], transB=1)

    def norm(self, x: str, name: str) -> str:
        h = self.spec.hidden
        scale, shift = self.param(f"{name}.weight", (h,)), self.param(f"{name}.bias", (h,))
        return self.g.op("LayerNormalization", [x, scale, shift], axis=-1, epsilon=self.spec.eps)

    def table(self, name: str, rows: int | None = None) -> str:
        """An embedding table, [rows, hidden]."""
        array = self.w.get(f"{name}.weight")
        too_few = rows is not None and array.shape[0] < rows
        if array.ndim != 2 or array.shape[1] != self.spec.hidden or too_few:
            raise InvalidModelFormat(
                f"embedding table {self.w.prefix}{name}.weight has shape {array.shape}, "
                f"expected ({rows or 'n'}, {self.spec.hidden})"
            )
        return self.g.weight(f"{self.w.prefix}{name}.weight", array)


def build_encoder(
    config: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    *,
    external: bool = True,
) -> EncoderGraph:
    """The graph of ``config``'s encoder: inputs ``input_ids``,
    ``attention_mask`` (and ``token_type_ids`` for BERT), int64 [batch,
    sequence]; output ``last_hidden_state``, float32 [batch, sequence, hidden].

    ``weights`` maps checkpoint names (any prefix) to float32 arrays. With
    ``external`` (the default) the graph only references them; otherwise
    they are copied into it. Raises ``InvalidModelFormat`` for an
    unsupported architecture or a missing or misshapen tensor."""
    spec = encoder_spec(config)
    g = GraphBuilder(external=external)
    hidden = encode(g, spec, weights)
    return finish(g, spec, hidden, "last_hidden_state", ["batch", "sequence", spec.hidden])


def encode(
    g: GraphBuilder, spec: EncoderSpec | DecoderSpec, weights: Mapping[str, np.ndarray]
) -> str:
    """Adds the encoder to ``g``; returns the name of last_hidden_state
    ([B, S, hidden]) before it is made a graph output."""
    if spec.model_type == "modernbert":  # its module builds on this one, hence the late import
        from caxton_models.runtime.graph.modernbert import ModernBertSpec, encode_modernbert

        assert isinstance(spec, ModernBertSpec)  # encoder_spec made it
        return encode_modernbert(g, spec, weights)
    if not isinstance(spec, EncoderSpec):
        # Imported here: decoder.py uses this module's activations.
        from caxton_models.runtime.graph.decoder import encode_decoder

        return encode_decoder(g, spec, weights)
    w = Weights.locate(weights, "embeddings.word_embeddings.weight", spec.model_type)
    ids_shape = g.op("Shape", ["input_ids"])
    three = g.op("Concat", [ids_shape, g.const([spec.hidden], np.int64)], axis=0)
    heads = g.op("Concat", [ids_shape, g.const([spec.heads, spec.head_dim], np.int64)], axis=0)
    ctx = _Ctx(g, spec, w, heads, g.const([-1, spec.hidden], np.int64), "")
    ctx.bias = _attention_bias(ctx, ids_shape)
    x = g.op("Reshape", [_embeddings(ctx, ids_shape), ctx.flat_shape])
    for i in range(spec.layers):
        x = _layer(ctx, i, x)
    return g.op("Reshape", [x, three])


def finish(
    g: GraphBuilder,
    spec: EncoderSpec | DecoderSpec,
    result: str,
    output: str,
    dims: list[str | int],
) -> EncoderGraph:
    """Names ``result`` as the graph's one output and assembles the model."""
    g.op("Identity", [result], out=output)
    model = g.model(
        [int64_input(n) for n in spec.input_names],
        [float_output(output, dims)],
        graph_name=f"caxton_{spec.model_type.replace('-', '_')}",
    )
    return EncoderGraph(
        model=model,
        external=list(g.external_weights),
        spec=spec,
        input_names=spec.input_names,
        output_name=output,
        dimensions=int(dims[-1]),
    )


def _embeddings(ctx: _Ctx, ids_shape: str) -> str:
    """word + position (+ token type) embeddings, then LayerNorm: [B, S, H]."""
    g, spec = ctx.g, ctx.spec
    x = g.op("Gather", [ctx.table("embeddings.word_embeddings"), "input_ids"])
    x = g.op("Add", [x, g.op("Gather", [_position_table(ctx), _position_ids(ctx, ids_shape)])])
    if spec.token_types == "input":
        types = ctx.table("embeddings.token_type_embeddings")
        x = g.op("Add", [x, g.op("Gather", [types, "token_type_ids"])])
    elif spec.token_types == "first_row":
        types = ctx.table("embeddings.token_type_embeddings", rows=1)
        x = g.op("Add", [x, g.op("Gather", [types, g.const(0, np.int64)])])
    return ctx.norm(x, "embeddings.LayerNorm")


def _position_table(ctx: _Ctx) -> str:
    name = "embeddings.position_embeddings"
    if ctx.spec.sinusoidal and not ctx.w.has(f"{name}.weight"):
        # Older DistilBERT checkpoints may leave out the fixed sinusoid table.
        return ctx.g.const(_sinusoids(ctx.spec.max_positions, ctx.spec.hidden))
    return ctx.table(name)


def _sinusoids(n_pos: int, dim: int) -> npt.NDArray[np.float32]:
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    j = np.arange(dim)[None, :]
    angle = pos / np.power(10000.0, 2 * (j // 2) / dim)
    out = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return out.astype(np.float32)


def _position_ids(ctx: _Ctx, ids_shape: str) -> str:
    """[S] for absolute positions (broadcast over the batch), [B, S] for
    RoBERTa-style ones: padding_idx + running count of non-padding tokens,
    padding_idx itself at padding (counted from input_ids, as transformers
    does, not from attention_mask)."""
    g = ctx.g
    if ctx.spec.positions == "absolute":
        seq = g.op("Gather", [ids_shape, g.const(1, np.int64)])
        return g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)])
    pad = g.const(ctx.spec.padding_idx, np.int64)
    padding = g.op("Equal", ["input_ids", pad])
    real = g.op("Cast", [g.op("Not", [padding])], to=onnx.TensorProto.INT64)
    count = g.op("CumSum", [real, g.const(1, np.int64)])
    return g.op("Add", [g.op("Mul", [count, real]), pad])


def _attention_bias(ctx: _Ctx, ids_shape: str) -> str:
    """What every layer adds to its attention scores: the padding mask
    [B, 1, 1, S], plus MPNet's relative position bias [1, heads, S, S]."""
    g = ctx.g
    mask = g.op("Cast", ["attention_mask"], to=onnx.TensorProto.FLOAT)
    blocked = g.op("Sub", [g.const(1.0), mask])
    bias = g.op("Mul", [blocked, g.const(_MASKED)])
    bias = g.op("Unsqueeze", [bias, g.const([1, 2], np.int64)])
    if ctx.spec.relative_buckets:
        bias = g.op("Add", [bias, _relative_position_bias(ctx, ids_shape)])
    return bias


def _relative_position_bias(ctx: _Ctx, ids_shape: str) -> str:
    """MPNet: bias[h, i, j] = table[bucket(j - i), h], one for all layers.

    Buckets depend only on j - i, so they are looked up in a constant made
    here for every offset a sequence of max_position_embeddings can have."""
    g, spec = ctx.g, ctx.spec
    name = "encoder.relative_attention_bias.weight"
    table = ctx.w.get(name)
    if table.ndim != 2 or table.shape[1] != spec.heads or table.shape[0] < _MPNET_BUCKETS:
        raise InvalidModelFormat(
            f"{ctx.w.prefix}{name} has shape {table.shape}, expected "
            f"({_MPNET_BUCKETS} or more, {spec.heads})"
        )
    span = spec.max_positions
    offsets = np.arange(-(span - 1), span, dtype=np.int64)
    buckets = g.const(_mpnet_buckets(offsets), np.int64)
    seq = g.op("Gather", [ids_shape, g.const(1, np.int64)])
    pos = g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)])
    row = g.op("Unsqueeze", [pos, g.const([0], np.int64)])  # j, the key position
    col = g.op("Unsqueeze", [pos, g.const([1], np.int64)])  # i, the query position
    rel = g.op("Sub", [row, col])
    rel = g.op("Add", [rel, g.const(span - 1, np.int64)])
    values = g.op("Gather", [g.weight(ctx.w.prefix + name, table), g.op("Gather", [buckets, rel])])
    values = g.op("Transpose", [values], perm=[2, 0, 1])
    return g.op("Unsqueeze", [values, g.const([0], np.int64)])


def _mpnet_buckets(relative: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """MPNetEncoder.relative_position_bucket, in float32 like torch."""
    half = _MPNET_BUCKETS // 2
    n = -relative
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = np.log(n.astype(np.float32) / np.float32(exact))
    scaled = scaled / np.float32(math.log(_MPNET_MAX_DISTANCE / exact)) * np.float32(half - exact)
    large = exact + np.where(n < exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    return ret + np.where(n < exact, n, large)


def _layer(ctx: _Ctx, i: int, x: str) -> str:
    """One post-LayerNorm encoder layer on [B * S, hidden]; the same for all
    five architectures, only the tensor names differ."""
    g, spec, names = ctx.g, ctx.spec, ctx.spec.layer_names
    h, d = spec.hidden, spec.head_dim

    def heads(part: str, perm: list[int]) -> str:
        y = g.op("Reshape", [ctx.linear(x, names(i, part), h, h), ctx.heads_shape])
        return g.op("Transpose", [y], perm=perm)

    q = g.op("Mul", [heads("q", [0, 2, 1, 3]), g.const(1.0 / math.sqrt(d))])
    scores = g.op("Add", [g.op("MatMul", [q, heads("k", [0, 2, 3, 1])]), ctx.bias])
    probs = g.op("Softmax", [scores], axis=-1)
    context = g.op("MatMul", [probs, heads("v", [0, 2, 1, 3])])
    context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), ctx.flat_shape])
    attn = ctx.linear(context, names(i, "o"), h, h)
    x = ctx.norm(g.op("Add", [attn, x]), names(i, "attn_norm"))
    ffn = ctx.linear(x, names(i, "ffn_in"), spec.intermediate, h)
    ffn = activation(g, ffn, spec.activation)
    ffn = ctx.linear(ffn, names(i, "ffn_out"), h, spec.intermediate)
    return ctx.norm(g.op("Add", [ffn, x]), names(i, "ffn_norm"))


ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "tanh")


def activation(g: GraphBuilder, x: str, name: str) -> str:
    """transformers' ACT2FN[name], written in the op patterns ORT fuses
    (erf GELU into Gelu, the tanh form into FastGelu)."""
    if name == "gelu":  # exact: 0.5 x (1 + erf(x / sqrt 2))
        erf = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0))])])
        return g.op("Mul", [g.op("Mul", [x, g.op("Add", [erf, g.const(1.0)])]), g.const(0.5)])
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        cube = g.op("Mul", [g.op("Pow", [x, g.const(3.0)]), g.const(0.044715)])
        inner = g.op("Mul", [g.op("Add", [x, cube]), g.const(math.sqrt(2.0 / math.pi))])
        one_plus = g.op("Add", [g.op("Tanh", [inner]), g.const(1.0)])
        return g.op("Mul", [g.op("Mul", [x, g.const(0.5)]), one_plus])
    if name == "relu":
        return g.op("Relu", [x])
    if name in ("silu", "swish"):
        return g.op("Mul", [x, g.op("Sigmoid", [x])])
    if name == "tanh":
        return g.op("Tanh", [x])
    raise InvalidModelFormat(
        f"activation {name!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
    )
