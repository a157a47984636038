"""ModernBERT (gte-modernbert, modernbert-embed, granite-embedding r2) as
standard ONNX ops, from config.json and the checkpoint's tensors.

It differs from the BERT family in every block: token embeddings only, then
LayerNorm (no bias unless ``norm_bias``); pre-norm layers whose first layer
has no attention norm; one fused ``Wqkv`` projection; rotary positions with
one theta for global layers and another for local ones; attention that is
global every ``global_attn_every_n_layers``-th layer and otherwise limited
to keys within ``local_attention // 2`` positions; a GeGLU MLP (``Wi`` gives
input and gate); a final LayerNorm. What transformers' ModernBertModel
computes with eager/sdpa attention on a padded batch is what this builds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime.graph._builder import GraphBuilder
from caxton_models.runtime.graph._rotary import apply_rotary, positions, rotary_tables
from caxton_models.runtime.graph.encoder import ACTIVATIONS, LayerCtx, activation
from caxton_models.runtime.graph.spec import EncoderSpec, LayerNames
from caxton_models.runtime.graph.spec import _int as check_positive_int
from caxton_models.runtime.graph.weights import Weights

__all__ = ["ModernBertSpec", "encode_modernbert", "modernbert_spec"]

#: transformers' additive mask value (finfo(float32).min) for masked keys.
_MASKED = float(np.finfo(np.float32).min)
#: ModernBertConfig's defaults, for configs written before a key existed.
_DEFAULT_GLOBAL_THETA = 160_000.0
_DEFAULT_LOCAL_THETA = 10_000.0
_FULL, _SLIDING = "full_attention", "sliding_attention"

#: Tensor names in layer ``{i}`` of ModernBertModel; q, k and v share Wqkv.
_LAYER = LayerNames(
    "layers.{i}.",
    "attn.Wqkv",
    "attn.Wqkv",
    "attn.Wqkv",
    "attn.Wo",
    "attn_norm",
    "mlp.Wi",
    "mlp.Wo",
    "mlp_norm",
)


@dataclass(frozen=True)
class ModernBertSpec(EncoderSpec):
    """An :class:`EncoderSpec` plus what only ModernBERT has."""

    #: Per layer: True where attention is local (sliding window).
    local_layers: tuple[bool, ...] = ()
    #: A local layer's query sees keys at distance <= this (local_attention // 2).
    window: int = 64
    global_theta: float = _DEFAULT_GLOBAL_THETA
    local_theta: float = _DEFAULT_LOCAL_THETA
    attention_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise InvalidModelFormat(f"config.json: {key} is {value!r}, expected true or false")
    return value


def _theta(config: Mapping[str, Any], kind: str, legacy: str, default: float) -> float:
    """The rotary base of ``kind`` layers: ``rope_parameters[kind]`` as
    transformers 5 writes it, else the older flat key, else ``default``.
    Only the plain ("default") rotary is supported."""
    params = config.get("rope_parameters")
    entry = params.get(kind) if isinstance(params, Mapping) else None
    if isinstance(entry, Mapping):
        rope_type = entry.get("rope_type", entry.get("type", "default"))
        if rope_type != "default":
            raise InvalidModelFormat(
                f"config.json: rope_type {rope_type!r} for {kind} is not supported "
                "(only 'default' rotary positions, which every ModernBERT release uses)"
            )
        value = entry.get("rope_theta", config.get(legacy))
    elif config.get("rope_scaling"):
        raise InvalidModelFormat("config.json: rope_scaling is not supported for ModernBERT")
    else:
        value = config.get(legacy)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidModelFormat(f"config.json: the rotary theta of {kind} is {value!r}")
    return float(value)


def _local_layers(config: Mapping[str, Any], layers: int) -> tuple[bool, ...]:
    """Which layers use the sliding window: ``layer_types`` when config.json
    has it (transformers 5), else every layer whose index is not a multiple
    of ``global_attn_every_n_layers`` (default 3), as older releases say."""
    types = config.get("layer_types")
    if types is None:
        every = check_positive_int(config, "global_attn_every_n_layers", 3)
        return tuple(i % every != 0 for i in range(layers))
    if isinstance(types, str) or not isinstance(types, Sequence) or len(types) != layers:
        raise InvalidModelFormat(
            f"config.json: layer_types is {types!r}, expected a list of {layers} layer types"
        )
    unknown = sorted({str(t) for t in types} - {_FULL, _SLIDING})
    if unknown:
        raise InvalidModelFormat(
            f"config.json: layer_types {unknown} unknown; expected {_FULL!r} or {_SLIDING!r}"
        )
    return tuple(t == _SLIDING for t in types)


def modernbert_spec(config: Mapping[str, Any]) -> ModernBertSpec:
    """The :class:`ModernBertSpec` of a parsed ModernBERT config.json."""
    hidden = check_positive_int(config, "hidden_size")
    heads = check_positive_int(config, "num_attention_heads")
    if hidden % heads:
        raise InvalidModelFormat(
            f"config.json: hidden size {hidden} is not a multiple of {heads} attention heads"
        )
    if (hidden // heads) % 2:
        raise InvalidModelFormat(
            f"config.json: head size {hidden // heads} is odd; rotary positions need it even"
        )
    layers = check_positive_int(config, "num_hidden_layers")
    act = str(config.get("hidden_activation", "gelu"))
    if act not in ACTIVATIONS:
        raise InvalidModelFormat(
            f"config.json: hidden_activation {act!r} is not supported; "
            f"supported: {', '.join(ACTIVATIONS)}"
        )
    global_theta = _theta(config, _FULL, "global_rope_theta", _DEFAULT_GLOBAL_THETA)
    # Before transformers 5, local_rope_theta null meant "the global theta".
    legacy_global = "local_rope_theta" in config and config["local_rope_theta"] is None
    local_default = global_theta if legacy_global else _DEFAULT_LOCAL_THETA
    local_theta = _theta(config, _SLIDING, "local_rope_theta", local_default)
    return ModernBertSpec(
        model_type="modernbert",
        hidden=hidden,
        heads=heads,
        layers=layers,
        intermediate=check_positive_int(config, "intermediate_size"),
        eps=float(config.get("norm_eps", 1e-5)),
        activation=act,
        max_positions=check_positive_int(config, "max_position_embeddings", 8192),
        layer_names=_LAYER,
        positions="absolute",
        padding_idx=int(config.get("pad_token_id") or 0),
        token_types="none",
        local_layers=_local_layers(config, layers),
        window=check_positive_int(config, "local_attention", 128) // 2,
        global_theta=global_theta,
        local_theta=local_theta,
        attention_bias=_flag(config, "attention_bias"),
        mlp_bias=_flag(config, "mlp_bias"),
        norm_bias=_flag(config, "norm_bias"),
    )


class _Ctx(LayerCtx[ModernBertSpec]):
    def linear(self, x: str, name: str, n_out: int, n_in: int, bias: bool) -> str:
        """x @ W^T (+ b) on [N, n_in] with the checkpoint's own [out, in] W."""
        inputs = [x, self.param(f"{name}.weight", (n_out, n_in))]
        if bias:
            inputs.append(self.param(f"{name}.bias", (n_out,)))
        return self.g.op("Gemm", inputs, transB=1)

    def norm(self, x: str, name: str) -> str:
        h = self.spec.hidden
        inputs = [x, self.param(f"{name}.weight", (h,))]
        if self.spec.norm_bias:
            inputs.append(self.param(f"{name}.bias", (h,)))
        return self.g.op("LayerNormalization", inputs, axis=-1, epsilon=self.spec.eps)


def encode_modernbert(
    g: GraphBuilder, spec: ModernBertSpec, weights: Mapping[str, np.ndarray]
) -> str:
    """Adds ModernBertModel to ``g``; returns the name of last_hidden_state
    ([B, S, hidden]) before it is made a graph output."""
    w = Weights.locate(weights, "embeddings.tok_embeddings.weight", "modernbert")
    ids_shape = g.op("Shape", ["input_ids"])
    heads = g.op("Concat", [ids_shape, g.const([spec.heads, spec.head_dim], np.int64)], axis=0)
    ctx = _Ctx(g, spec, w, heads, g.const([-1, spec.hidden], np.int64))
    seq = g.op("Gather", [ids_shape, g.const(1, np.int64)])
    masks = _masks(ctx, seq)
    rotary = {t: _rotary(ctx, ids_shape, t) for t in {spec.global_theta, spec.local_theta}}

    table = w.get("embeddings.tok_embeddings.weight")
    if table.ndim != 2 or table.shape[1] != spec.hidden:
        raise InvalidModelFormat(
            f"{w.prefix}embeddings.tok_embeddings.weight has shape {table.shape}, "
            f"expected (vocabulary, {spec.hidden})"
        )
    x = g.op(
        "Gather", [g.weight(w.prefix + "embeddings.tok_embeddings.weight", table), "input_ids"]
    )
    x = g.op("Reshape", [ctx.norm(x, "embeddings.norm"), ctx.flat_shape])
    for i, local in enumerate(spec.local_layers):
        theta = spec.local_theta if local else spec.global_theta
        x = _layer(ctx, i, x, masks[local], rotary[theta])
    x = ctx.norm(x, "final_norm")
    three = g.op("Concat", [ids_shape, g.const([spec.hidden], np.int64)], axis=0)
    return g.op("Reshape", [x, three])


def _masks(ctx: _Ctx, seq: str) -> dict[bool, str]:
    """Additive attention masks: global [B, 1, 1, S] (padding keys blocked),
    local [B, 1, S, S] (also keys farther than the window from the query),
    as ModernBertModel._update_attention_mask fills them."""
    g = ctx.g
    blocked = g.op(
        "Sub", [g.const(1.0), g.op("Cast", ["attention_mask"], to=onnx.TensorProto.FLOAT)]
    )
    full = g.op("Unsqueeze", [g.op("Mul", [blocked, g.const(_MASKED)]), g.const([1, 2], np.int64)])
    if not any(ctx.spec.local_layers):
        return {False: full}
    pos = g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)])
    rows = g.op("Unsqueeze", [pos, g.const([1], np.int64)])
    cols = g.op("Unsqueeze", [pos, g.const([0], np.int64)])
    distance = g.op("Abs", [g.op("Sub", [rows, cols])])
    outside = g.op("Greater", [distance, g.const(ctx.spec.window, np.int64)])
    local = g.op("Where", [outside, g.const(_MASKED), full])
    return {False: full, True: local}


def _rotary(ctx: _Ctx, ids_shape: str, theta: float) -> tuple[str, str]:
    """(cos, signed sin) of positions 0..S-1, [S, 1, head_dim]: broadcast
    over q and k laid out [B, S, heads, head_dim]."""
    g = ctx.g
    pos = g.op("Unsqueeze", [positions(g, ids_shape), g.const([1], np.int64)])
    return rotary_tables(g, pos, theta, ctx.spec.head_dim)


def _split(g: GraphBuilder, x: str, sizes: list[int], axis: int) -> list[str]:
    """Split with several outputs (GraphBuilder.op makes single-output nodes)."""
    outs = [g.fresh("split") for _ in sizes]
    node = onnx.helper.make_node(
        "Split", [x, g.const(sizes, np.int64)], outs, name=g.fresh("n_split"), axis=axis
    )
    g.nodes.append(node)
    return outs


def _layer(ctx: _Ctx, i: int, x: str, mask: str, cos_sin: tuple[str, str]) -> str:
    """One pre-norm layer on [B * S, hidden]: x + attn(norm(x)), then
    x + mlp(norm(x)); layer 0 has no attention norm (its input is the
    normalised embeddings already)."""
    g, spec, names = ctx.g, ctx.spec, ctx.spec.layer_names
    h, d = spec.hidden, spec.head_dim
    normed = x if i == 0 else ctx.norm(x, names(i, "attn_norm"))
    qkv = ctx.linear(normed, names(i, "q"), 3 * h, h, spec.attention_bias)
    q, k, v = (g.op("Reshape", [part, ctx.heads_shape]) for part in _split(g, qkv, [h] * 3, 1))
    q = g.op("Transpose", [apply_rotary(g, q, *cos_sin, d)], perm=[0, 2, 1, 3])
    k = g.op("Transpose", [apply_rotary(g, k, *cos_sin, d)], perm=[0, 2, 3, 1])
    v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [q, k]), g.const(1.0 / math.sqrt(d))])
    probs = g.op("Softmax", [g.op("Add", [scores, mask])], axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, ctx.flat_shape])
    x = g.op("Add", [x, ctx.linear(context, names(i, "o"), h, h, spec.attention_bias)])

    inter = spec.intermediate
    wi = ctx.linear(ctx.norm(x, names(i, "ffn_norm")), names(i, "ffn_in"), 2 * inter, h,
                    spec.mlp_bias)  # fmt: skip
    value, gate = _split(g, wi, [inter, inter], 1)
    glu = g.op("Mul", [activation(g, value, spec.activation), gate])
    return g.op("Add", [x, ctx.linear(glu, names(i, "ffn_out"), h, inter, spec.mlp_bias)])
