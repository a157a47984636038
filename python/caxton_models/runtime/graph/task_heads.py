"""The heads of cross-encoders and SPLADE encoders as ONNX ops after the
encoder graph, so one session turns token ids into scores or sparse weights.

- ``build_classifier``: ``...ForSequenceClassification``. BERT runs its
  pooler (dense + tanh on the first token) then ``classifier``;
  RoBERTa/XLM-R's ``RobertaClassificationHead`` runs ``classifier.dense``,
  tanh and ``classifier.out_proj`` on the first token (``<s>``). Output
  ``logits`` [batch, num_labels], before any activation.
- ``build_splade``: ``BertForMaskedLM``'s head (``cls.predictions``:
  dense, activation, LayerNorm, then the decoder tied to the word
  embeddings plus a bias) and sentence-transformers' ``SpladePooling``:
  logits zeroed at padding, ``log1p(relu(.))`` (twice for ``log1p_relu``),
  max or sum over tokens. Output ``sparse`` [batch, vocab].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import onnx

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime.graph._builder import GraphBuilder
from caxton_models.runtime.graph.encoder import EncoderGraph, activation, encode, finish
from caxton_models.runtime.graph.spec import EncoderSpec, encoder_spec
from caxton_models.runtime.graph.weights import Weights

__all__ = [
    "CLASSIFIER_TYPES",
    "SPLADE_TYPES",
    "SpladeActivation",
    "SpladePoolingMode",
    "build_classifier",
    "build_splade",
    "num_labels",
]

SpladePoolingMode = Literal["max", "sum"]
SpladeActivation = Literal["relu", "log1p_relu"]
#: model_type -> the classification head it has in transformers.
CLASSIFIER_TYPES = {"bert": "pooler", "roberta": "roberta", "xlm-roberta": "roberta"}
#: model_types whose masked-LM head is built (BertForMaskedLM's cls.predictions).
SPLADE_TYPES = ("bert",)
_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def num_labels(config: Mapping[str, Any]) -> int:
    """transformers' ``PretrainedConfig.num_labels``: the size of ``id2label``
    when config.json has one, else ``num_labels``, else 2."""
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        return len(id2label)
    value = config.get("num_labels", 2)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidModelFormat(f"config.json: num_labels is {value!r}, expected >= 1")
    return value


def _linear(g: GraphBuilder, w: Weights, x: str, name: str, n_out: int, n_in: int) -> str:
    weight = g.weight(w.prefix + f"{name}.weight", w.get(f"{name}.weight", (n_out, n_in)))
    bias = g.weight(w.prefix + f"{name}.bias", w.get(f"{name}.bias", (n_out,)))
    return g.op("Gemm", [x, weight, bias], transB=1)


def _with_token_types(spec: EncoderSpec, weights: Mapping[str, np.ndarray]) -> EncoderSpec:
    """RoBERTa-family graphs add token type row 0 everywhere; with a
    tokenizer that makes type ids (a BERT-style pair template) and a table
    of more than one row, transformers adds the row each token names."""
    if spec.token_types != "first_row":
        return spec
    w = Weights.locate(weights, _WORD_EMBEDDINGS, spec.model_type)
    name = "embeddings.token_type_embeddings.weight"
    if not w.has(name) or w.get(name).shape[0] < 2:
        return spec
    return dataclasses.replace(spec, token_types="input")


def build_classifier(
    config: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    *,
    token_types: bool = False,
    external: bool = True,
) -> EncoderGraph:
    """The graph of a ``...ForSequenceClassification`` checkpoint: output
    ``logits``, float32 [batch, num_labels]. ``token_types``: feed the
    tokenizer's type ids to a RoBERTa-family model whose table has rows for
    them (BERT always takes them)."""
    spec = encoder_spec(config)
    head = CLASSIFIER_TYPES.get(spec.model_type)
    if head is None:
        raise InvalidModelFormat(
            f"a {spec.model_type} sequence classifier is not supported: rerankers are built "
            f"for {', '.join(CLASSIFIER_TYPES)} (...ForSequenceClassification)"
        )
    assert isinstance(spec, EncoderSpec)  # the classifier types are all encoders
    if token_types:
        spec = _with_token_types(spec, weights)
    labels, h = num_labels(config), spec.hidden
    g = GraphBuilder(external=external)
    hidden = encode(g, spec, weights)
    first = g.op("Gather", [hidden, g.const(0, np.int64)], axis=1)  # [B, H]
    if head == "pooler":
        base = Weights.locate(weights, _WORD_EMBEDDINGS, spec.model_type)
        pooled = g.op("Tanh", [_linear(g, base, first, "pooler.dense", h, h)])
        top = Weights.locate(weights, "classifier.weight", "classifier")
        logits = _linear(g, top, pooled, "classifier", labels, h)
    else:
        top = Weights.locate(weights, "classifier.out_proj.weight", "classifier")
        x = g.op("Tanh", [_linear(g, top, first, "classifier.dense", h, h)])
        logits = _linear(g, top, x, "classifier.out_proj", labels, h)
    return finish(g, spec, logits, "logits", ["batch", labels])


def build_splade(
    config: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    *,
    pooling: SpladePoolingMode = "max",
    activation_function: SpladeActivation = "relu",
    external: bool = True,
) -> EncoderGraph:
    """The graph of a masked-LM checkpoint under ``SpladePooling``: output
    ``sparse``, float32 [batch, vocab], zero where a term is absent."""
    spec = encoder_spec(config)
    if spec.model_type not in SPLADE_TYPES:
        raise InvalidModelFormat(
            f"a {spec.model_type} masked-LM head is not supported for SPLADE; supported: "
            f"{', '.join(SPLADE_TYPES)} (BertForMaskedLM)"
        )
    if pooling not in ("max", "sum") or activation_function not in ("relu", "log1p_relu"):
        raise InvalidModelFormat(
            f"SpladePooling {pooling!r} / {activation_function!r}: supported are pooling "
            "'max' or 'sum' with activation 'relu' or 'log1p_relu'"
        )
    assert isinstance(spec, EncoderSpec)  # SPLADE_TYPES are all encoders
    g = GraphBuilder(external=external)
    hidden = encode(g, spec, weights)
    logits, vocab = _mlm_logits(g, spec, weights, hidden)
    mask = g.op("Cast", ["attention_mask"], to=onnx.TensorProto.FLOAT)
    masked = g.op("Mul", [logits, g.op("Unsqueeze", [mask, g.const([2], np.int64)])])
    if pooling == "max":
        # relu and log1p are monotonic, so the max over tokens can come first:
        # the transform then runs on [B, V] instead of [B, S, V].
        x = g.op("ReduceMax", [masked], axes=[1], keepdims=0)
        x = _log1p(g, g.op("Relu", [x]))
        if activation_function == "log1p_relu":
            x = _log1p(g, x)
    else:
        x = _log1p(g, g.op("Relu", [masked]))
        if activation_function == "log1p_relu":
            x = _log1p(g, x)
        x = g.op("ReduceSum", [x, g.const([1], np.int64)], keepdims=0)
    return finish(g, spec, x, "sparse", ["batch", vocab])


def _mlm_logits(
    g: GraphBuilder, spec: EncoderSpec, weights: Mapping[str, np.ndarray], hidden: str
) -> tuple[str, int]:
    """BertLMPredictionHead on [B, S, H]: ([B, S, V] logits, V)."""
    h = spec.hidden
    base = Weights.locate(weights, _WORD_EMBEDDINGS, spec.model_type)
    head = Weights.locate(weights, "cls.predictions.transform.dense.weight", "masked-LM head")
    flat = g.op("Reshape", [hidden, g.const([-1, h], np.int64)])
    x = _linear(g, head, flat, "cls.predictions.transform.dense", h, h)
    x = activation(g, x, spec.activation)
    scale = head.get("cls.predictions.transform.LayerNorm.weight", (h,))
    shift = head.get("cls.predictions.transform.LayerNorm.bias", (h,))
    x = g.op(
        "LayerNormalization",
        [
            x,
            g.weight(head.prefix + "cls.predictions.transform.LayerNorm.weight", scale),
            g.weight(head.prefix + "cls.predictions.transform.LayerNorm.bias", shift),
        ],
        axis=-1,
        epsilon=spec.eps,
    )
    table = base.get(_WORD_EMBEDDINGS)
    vocab = int(table.shape[0])
    if head.has("cls.predictions.decoder.weight"):  # untied, or saved twice
        decoder_name = head.prefix + "cls.predictions.decoder.weight"
        decoder = g.weight(decoder_name, head.get("cls.predictions.decoder.weight", (vocab, h)))
    else:  # tied: the encoder's embedding table, already in the graph
        decoder = base.prefix + _WORD_EMBEDDINGS
    bias_name = next(
        (n for n in ("cls.predictions.bias", "cls.predictions.decoder.bias") if head.has(n)), None
    )
    if bias_name is None:
        raise InvalidModelFormat(
            f"masked-LM weights lack {head.prefix}cls.predictions.bias: the checkpoint is "
            "incomplete or not a BertForMaskedLM"
        )
    bias = g.weight(head.prefix + bias_name, head.get(bias_name, (vocab,)))
    logits = g.op("Gemm", [x, decoder, bias], transB=1)
    ids_shape = g.op("Shape", ["input_ids"])
    shape = g.op("Concat", [ids_shape, g.const([vocab], np.int64)], axis=0)
    return g.op("Reshape", [logits, shape]), vocab


def _log1p(g: GraphBuilder, x: str) -> str:
    """log(1 + x) accurate for small x, as torch.log1p (ONNX has no Log1p):
    x * log(u) / (u - 1) with u = 1 + x rounded, and x itself where u is 1.
    A plain Log(1 + x) would give exactly 0 for x below 6e-8 and so drop
    terms that sentence-transformers keeps."""
    u = g.op("Add", [x, g.const(1.0)])
    d = g.op("Sub", [u, g.const(1.0)])
    exact = g.op("Mul", [x, g.op("Div", [g.op("Log", [u]), d])])
    return g.op("Where", [g.op("Equal", [d, g.const(0.0)]), x, exact])
