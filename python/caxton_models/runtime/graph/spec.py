"""What distinguishes the five encoder architectures, read from config.json.

All five are the same post-LayerNorm transformer layer; they differ in
tensor names, in how position ids are made, in token types, in MPNet's
relative position bias, and in where config.json keeps each number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from caxton_models.errors import InvalidModelFormat

if TYPE_CHECKING:
    from caxton_models.runtime.graph.decoder_spec import DecoderSpec

__all__ = ["DECODERS", "SUPPORTED", "EncoderSpec", "LayerNames", "encoder_spec"]

#: model_type -> the transformers class whose ``last_hidden_state`` we build.
SUPPORTED: dict[str, str] = {
    "bert": "BertModel",
    "distilbert": "DistilBertModel",
    "roberta": "RobertaModel",
    "xlm-roberta": "XLMRobertaModel",
    "mpnet": "MPNetModel",
    "qwen2": "Qwen2Model",
    "qwen3": "Qwen3Model",
    "gemma3_text": "Gemma3TextModel",
    "modernbert": "ModernBertModel",
}
#: The rotary decoders among them (runtime/graph/decoder.py builds these).
DECODERS = ("qwen2", "qwen3", "gemma3_text")
#: Longest first: XLMRoberta... must not be taken for Roberta...
_ARCH_PREFIXES = (
    ("Qwen3", "qwen3"),
    ("Qwen2", "qwen2"),
    ("Gemma3", "gemma3_text"),
    ("XLMRoberta", "xlm-roberta"),
    ("DistilBert", "distilbert"),
    ("Roberta", "roberta"),
    ("MPNet", "mpnet"),
    ("ModernBert", "modernbert"),
    ("Bert", "bert"),
)
Positions = Literal["absolute", "after_padding"]
TokenTypes = Literal["input", "first_row", "none"]


@dataclass(frozen=True)
class LayerNames:
    """Tensor names (without ``.weight``/``.bias``) inside layer ``{i}``."""

    root: str
    q: str
    k: str
    v: str
    o: str
    attn_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str

    def __call__(self, i: int, part: str) -> str:
        return self.root.format(i=i) + str(getattr(self, part))


_BERT_LAYER = LayerNames(
    "encoder.layer.{i}.",
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)
_MPNET_LAYER = LayerNames(
    "encoder.layer.{i}.",
    "attention.attn.q",
    "attention.attn.k",
    "attention.attn.v",
    "attention.attn.o",
    "attention.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)
_DISTILBERT_LAYER = LayerNames(
    "transformer.layer.{i}.",
    "attention.q_lin",
    "attention.k_lin",
    "attention.v_lin",
    "attention.out_lin",
    "sa_layer_norm",
    "ffn.lin1",
    "ffn.lin2",
    "output_layer_norm",
)


@dataclass(frozen=True)
class EncoderSpec:
    """One architecture's shape and quirks, enough to build its graph."""

    model_type: str
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float
    activation: str
    max_positions: int
    layer_names: LayerNames
    #: absolute: 0..S-1; after_padding: padding_idx + cumsum(ids != padding_idx)
    #: for real tokens, padding_idx for padding (fairseq's make_positions).
    positions: Positions
    padding_idx: int
    #: input: a token_type_ids graph input; first_row: row 0 added to every
    #: token (RoBERTa's default all-zero token types); none: no such table.
    token_types: TokenTypes
    #: MPNet: buckets of the relative position bias shared by all layers.
    relative_buckets: int = 0
    #: DistilBERT with sinusoidal_pos_embds, for checkpoints that omit the table.
    sinusoidal: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def input_names(self) -> tuple[str, ...]:
        names = ("input_ids", "attention_mask")
        return (*names, "token_type_ids") if self.token_types == "input" else names


def model_type_of(config: Mapping[str, Any]) -> str:
    """The supported model_type config.json names, from ``model_type`` or,
    failing that, ``architectures``; a typed error otherwise."""
    model_type = str(config.get("model_type") or "")
    if model_type in SUPPORTED:
        return model_type
    archs = [str(a) for a in config.get("architectures") or []]
    if not model_type:
        for arch in archs:
            for prefix, kind in _ARCH_PREFIXES:
                if arch.startswith(prefix):
                    return kind
    said = f"model_type {model_type!r}" if model_type else f"architectures {archs}"
    raise InvalidModelFormat(
        f"config.json says {said}: building a graph from weights supports "
        f"{', '.join(f'{k} ({v})' for k, v in SUPPORTED.items())}; "
        "other architectures need an ONNX export (onnx/model.onnx)"
    )


def _int(config: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidModelFormat(f"config.json: {key} is {value!r}, expected a positive integer")
    return value


def _check_common(config: Mapping[str, Any], model_type: str, hidden: int, heads: int) -> None:
    if hidden % heads:
        raise InvalidModelFormat(
            f"config.json: hidden size {hidden} is not a multiple of {heads} attention heads"
        )
    kind = config.get("position_embedding_type", "absolute")
    if model_type != "distilbert" and kind != "absolute":
        raise InvalidModelFormat(
            f"config.json: position_embedding_type {kind!r} is not supported "
            "(only 'absolute', the default of every sentence-transformers encoder)"
        )
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise InvalidModelFormat("config.json describes a decoder: only encoders are supported")


def encoder_spec(config: Mapping[str, Any]) -> EncoderSpec | DecoderSpec:
    """The :class:`EncoderSpec` (or, for a rotary decoder, the
    ``DecoderSpec``) of a parsed Hugging Face config.json."""
    model_type = model_type_of(config)
    if model_type in DECODERS:
        from caxton_models.runtime.graph.decoder_spec import decoder_spec

        return decoder_spec(config, model_type)
    if model_type == "distilbert":
        return _distilbert_spec(config)
    if model_type == "modernbert":  # its module builds on this one, hence the late import
        from caxton_models.runtime.graph.modernbert import modernbert_spec

        return modernbert_spec(config)
    hidden = _int(config, "hidden_size")
    heads = _int(config, "num_attention_heads")
    _check_common(config, model_type, hidden, heads)
    mpnet = model_type == "mpnet"
    return EncoderSpec(
        model_type=model_type,
        hidden=hidden,
        heads=heads,
        layers=_int(config, "num_hidden_layers"),
        intermediate=_int(config, "intermediate_size"),
        eps=float(config.get("layer_norm_eps", 1e-12)),
        activation=str(config.get("hidden_act", "gelu")),
        max_positions=_int(config, "max_position_embeddings", 512),
        layer_names=_MPNET_LAYER if mpnet else _BERT_LAYER,
        positions="absolute" if model_type == "bert" else "after_padding",
        # MPNetEmbeddings hard-codes padding_idx 1 whatever pad_token_id says.
        padding_idx=1 if mpnet else int(config.get("pad_token_id") or 0),
        token_types="none" if mpnet else "input" if model_type == "bert" else "first_row",
        relative_buckets=_int(config, "relative_attention_num_buckets", 32) if mpnet else 0,
    )


def _distilbert_spec(config: Mapping[str, Any]) -> EncoderSpec:
    hidden, heads = _int(config, "dim"), _int(config, "n_heads")
    _check_common(config, "distilbert", hidden, heads)
    return EncoderSpec(
        model_type="distilbert",
        hidden=hidden,
        heads=heads,
        layers=_int(config, "n_layers"),
        intermediate=_int(config, "hidden_dim"),
        # DistilBERT's LayerNorms hard-code eps 1e-12; config.json has no key.
        eps=1e-12,
        activation=str(config.get("activation", "gelu")),
        max_positions=_int(config, "max_position_embeddings", 512),
        layer_names=_DISTILBERT_LAYER,
        positions="absolute",
        padding_idx=int(config.get("pad_token_id") or 0),
        token_types="none",
        sinusoidal=bool(config.get("sinusoidal_pos_embds", False)),
    )
