"""What distinguishes the rotary decoder families, read from config.json.

Qwen2, Qwen3 and Gemma3 (text) share one layer: RMSNorm, rotary positions,
grouped-query attention and a gated MLP. They differ in q/k norms (Qwen3,
Gemma3), q/k/v biases (Qwen2), Gemma's ``1 + weight`` norms, its norms
after attention and after the MLP, its scaled embeddings, its attention
scale, its sliding-window layers with their own rotary base, and whether
attention is causal (EmbeddingGemma's ``use_bidirectional_attention`` is
not). Both config layouts are read: transformers 5's ``rope_parameters``
and the older ``rope_theta`` / ``rope_local_base_freq`` / ``rope_scaling``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime.graph.spec import _int as positive_int

__all__ = ["DecoderSpec", "decoder_spec"]

LayerType = Literal["full_attention", "sliding_attention"]
_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class DecoderSpec:
    """One decoder's shape and quirks, enough to build its graph."""

    model_type: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    intermediate: int
    eps: float
    activation: str
    max_positions: int
    layer_types: tuple[LayerType, ...]
    #: rotary base per layer type (Gemma3: a local one for sliding layers)
    rope_theta: Mapping[str, float]
    #: rotary positions divided by this per layer type (rope_type "linear")
    rope_factor: Mapping[str, float]
    #: multiplies the attention scores (head_dim ** -0.5, or Gemma's scalar)
    scaling: float
    causal: bool = True
    sliding_window: int | None = None
    qk_norm: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    #: Gemma: norms scale by (1 + weight), four per layer, embeddings scaled
    gemma: bool = False
    embed_scale: float | None = None

    @property
    def groups(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("input_ids", "attention_mask")


def _float(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidModelFormat(f"config.json: {key} is {value!r}, expected a positive number")
    return float(value)


def _rope_entry(entry: Any, where: str) -> tuple[float, float]:
    """(theta, linear factor) of one rope parameter dict; other rope types
    (yarn, dynamic, llama3, ...) are refused rather than run wrong."""
    if not isinstance(entry, Mapping):
        raise InvalidModelFormat(f"config.json: {where} is {entry!r}, expected an object")
    kind = entry.get("rope_type", entry.get("type", "default"))
    theta = _float(entry, "rope_theta", 10000.0)
    if kind == "default":
        return theta, 1.0
    if kind == "linear":
        return theta, _float(entry, "factor", 1.0)
    raise InvalidModelFormat(
        f"config.json: {where} has rope_type {kind!r}; supported: 'default', 'linear'"
    )


def _rope(config: Mapping[str, Any], gemma: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Rotary base and factor per layer type, from either config layout."""
    params = config.get("rope_parameters")
    theta: dict[str, float] = {}
    factor: dict[str, float] = {}
    if isinstance(params, Mapping) and any(t in params for t in _LAYER_TYPES):
        for kind in _LAYER_TYPES:
            if params.get(kind) is not None:
                theta[kind], factor[kind] = _rope_entry(params[kind], f"rope_parameters.{kind}")
        return theta, factor
    if isinstance(params, Mapping):
        base = _rope_entry(params, "rope_parameters")
    else:
        scaling = config.get("rope_scaling")
        entry = {"rope_theta": config.get("rope_theta", 10000.0), **(scaling or {})}
        base = _rope_entry(entry, "rope_scaling")
    theta["full_attention"], factor["full_attention"] = base
    # Older Gemma3 configs: sliding layers use rope_local_base_freq, unscaled.
    local = (_float(config, "rope_local_base_freq", 10000.0), 1.0) if gemma else base
    theta["sliding_attention"], factor["sliding_attention"] = local
    return theta, factor


def _layer_types(config: Mapping[str, Any], layers: int, gemma: bool) -> tuple[LayerType, ...]:
    """``layer_types`` as saved, else derived as each family's config class
    derives it (Gemma3: every Nth layer full; Qwen: sliding from
    max_window_layers on, only with use_sliding_window)."""
    saved = config.get("layer_types")
    if saved is None:
        if gemma:
            pattern = config.get("sliding_window_pattern", config.get("_sliding_window_pattern", 6))
            n = positive_int({"sliding_window_pattern": pattern}, "sliding_window_pattern")
            saved = [
                "full_attention" if (i + 1) % n == 0 else "sliding_attention" for i in range(layers)
            ]
        else:
            start = int(config.get("max_window_layers") or layers)
            sliding = bool(config.get("use_sliding_window"))
            saved = [
                "sliding_attention" if sliding and i >= start else "full_attention"
                for i in range(layers)
            ]
    if (
        not isinstance(saved, list)
        or len(saved) != layers
        or any(t not in _LAYER_TYPES for t in saved)
    ):
        raise InvalidModelFormat(
            f"config.json: layer_types is {saved!r}, expected {layers} of {', '.join(_LAYER_TYPES)}"
        )
    return tuple(saved)


def _causal(config: Mapping[str, Any], gemma: bool, types: tuple[LayerType, ...]) -> bool:
    """Gemma3: not with use_bidirectional_attention. Any family: not when
    config.json says ``is_causal: false`` (transformers' create_causal_mask
    then makes a bidirectional mask), which for Qwen is only defined for
    full-attention layers."""
    if gemma and config.get("use_bidirectional_attention"):
        return False
    if config.get("is_causal", True) is not False:
        return True
    if not gemma and "sliding_attention" in types:
        raise InvalidModelFormat(
            "config.json: is_causal false with sliding-window layers is not supported"
        )
    return False


def decoder_spec(config: Mapping[str, Any], model_type: str) -> DecoderSpec:
    """The :class:`DecoderSpec` of a parsed config.json of ``model_type``
    (one of :data:`~caxton_models.runtime.graph.spec.DECODERS`)."""
    gemma = model_type == "gemma3_text"
    hidden = positive_int(config, "hidden_size")
    heads = positive_int(config, "num_attention_heads")
    kv_heads = positive_int(config, "num_key_value_heads", heads)
    layers = positive_int(config, "num_hidden_layers")
    head_dim = config.get("head_dim") or hidden // heads
    head_dim = positive_int({"head_dim": head_dim}, "head_dim")
    if heads % kv_heads or head_dim % 2:
        raise InvalidModelFormat(
            f"config.json: {heads} attention heads over {kv_heads} key/value heads of "
            f"size {head_dim}: heads must be a multiple of key/value heads, the size even"
        )
    for key in ("attn_logit_softcapping",):
        if config.get(key) is not None:
            raise InvalidModelFormat(f"config.json: {key} {config[key]!r} is not supported")
    types = _layer_types(config, layers, gemma)
    window = config.get("sliding_window")
    if "sliding_attention" in types:
        window = positive_int(config, "sliding_window")
    theta, factor = _rope(config, gemma)
    missing = [t for t in set(types) if t not in theta]
    if missing:
        raise InvalidModelFormat(f"config.json: no rotary parameters for {missing}")
    bias = bool(config.get("attention_bias", False))
    activation = config.get("hidden_activation") if gemma else None
    return DecoderSpec(
        model_type=model_type,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        layers=layers,
        intermediate=positive_int(config, "intermediate_size"),
        eps=_float(config, "rms_norm_eps", 1e-6),
        activation=str(activation or config.get("hidden_act") or "silu"),
        max_positions=positive_int(config, "max_position_embeddings", 32768),
        layer_types=types,
        rope_theta=theta,
        rope_factor=factor,
        scaling=_float(config, "query_pre_attn_scalar", 256) ** -0.5 if gemma else head_dim**-0.5,
        causal=_causal(config, gemma, types),
        sliding_window=window if isinstance(window, int) else None,
        qk_norm=model_type != "qwen2",
        # Qwen2 hard-codes biases on q, k and v (never on o) whatever the config says.
        qkv_bias=True if model_type == "qwen2" else bias,
        o_bias=False if model_type == "qwen2" else bias,
        gemma=gemma,
        embed_scale=math.sqrt(hidden) if gemma else None,
    )
