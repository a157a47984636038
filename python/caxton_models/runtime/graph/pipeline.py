"""What a sentence-transformers folder does after its encoder.

``modules.json`` lists the modules: a Transformer, a Pooling, then Dense and
Normalize modules in order. Both spellings of their types are read: the
classic ``sentence_transformers.models.Pooling`` and the module paths of
sentence-transformers 6 (``sentence_transformers.base.modules.normalize.
Normalize``, ``sentence_transformers.sentence_transformer.modules.pooling.
Pooling``): the class name is the last component. Dense weights come from
``<module>/model.safetensors`` through a caller-supplied reader; pickled
``pytorch_model.bin`` is refused, never unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from caxton_models.errors import InvalidModelFormat, UnsafeModel
from caxton_models.runtime._seqlen import max_sequence_length
from caxton_models.runtime.graph.weights import require_f32

__all__ = [
    "DenseLayer",
    "Normalize",
    "PoolingMode",
    "SentencePipeline",
    "TensorReader",
    "apply_pipeline",
    "dense_forward",
    "pool",
    "read_json",
    "read_pooling",
    "read_sentence_transformers",
]

PoolingMode = Literal["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
Activation = Literal["identity", "tanh", "relu", "sigmoid", "gelu", "silu"]
F32Array = npt.NDArray[np.float32]
#: Reads one safetensors file into float32 arrays (the Rust core's reader).
TensorReader = Callable[[Path], Mapping[str, np.ndarray]]

#: The classic per-mode flags of 1_Pooling/config.json.
_POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: torch.nn activation class (last component of Dense's activation_function).
_ACTIVATIONS: dict[str, Activation] = {
    "Identity": "identity",
    "Tanh": "tanh",
    "ReLU": "relu",
    "Sigmoid": "sigmoid",
    "GELU": "gelu",
    "SiLU": "silu",
}
_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")


@dataclass(frozen=True)
class DenseLayer:
    """``activation(x @ weight.T + bias)``; weight is [out, in] as saved."""

    name: str
    weight: F32Array
    bias: F32Array | None
    activation: Activation

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class Normalize:
    """L2 normalisation, ``x / max(||x||, 1e-12)`` like torch's F.normalize."""

    eps: float = 1e-12


Step = DenseLayer | Normalize


@dataclass(frozen=True)
class SentencePipeline:
    """Encoder output to sentence embedding: ``pooling``, then ``steps`` in
    modules.json order. The tokenizer settings ride along."""

    pooling: PoolingMode = "mean"
    steps: tuple[Step, ...] = ()
    #: Tokens per text at most (truncation), None when nothing says.
    max_seq_length: int | None = None
    do_lower_case: bool = False
    #: False: prompt tokens are left out of the pooling (INSTRUCTOR-style).
    include_prompt: bool = True
    #: The encoder's folder inside the model folder ("" for the root).
    transformer_path: str = ""
    hidden_size: int | None = None
    modules: tuple[str, ...] = field(default=())

    @property
    def dense(self) -> tuple[DenseLayer, ...]:
        return tuple(s for s in self.steps if isinstance(s, DenseLayer))

    @property
    def normalize(self) -> bool:
        return any(isinstance(s, Normalize) for s in self.steps)

    @property
    def dimensions(self) -> int | None:
        dense = self.dense
        return dense[-1].out_features if dense else self.hidden_size


def read_json(path: Path) -> Any:
    """A model folder's JSON file; None when absent, InvalidModelFormat when broken."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidModelFormat(
            f"cannot read {path}: {e}; re-download or re-install the model"
        ) from e


def _module_kind(entry: Mapping[str, Any], where: Path) -> str:
    kind = str(entry.get("type", ""))
    name = kind.rsplit(".", 1)[-1]
    if not kind.startswith("sentence_transformers.") or name not in _MODULES:
        raise InvalidModelFormat(
            f"{where}: module type {kind!r} is not supported; supported: "
            f"sentence_transformers {', '.join(_MODULES)} (classic or module-path names)"
        )
    return name


def read_sentence_transformers(
    folder: str | os.PathLike[str], read_tensors: TensorReader | None = None
) -> SentencePipeline:
    """The :class:`SentencePipeline` of a model folder: the one place the
    pooling is decided. Without ``modules.json`` the folder is a plain
    transformers model, pooled as its ``1_Pooling`` folder says, else mean.
    ``read_tensors`` is needed only if there is a Dense module."""
    root = Path(folder)
    modules = read_json(root / "modules.json")
    if modules is None:
        # No module list: the pooling a 1_Pooling folder states, else mean (what
        # sentence-transformers gives a plain transformers folder).
        pooling, include_prompt = read_pooling(root / "1_Pooling")
        plain = SentencePipeline(pooling=pooling, include_prompt=include_prompt)
        return _with_encoder(root, "", plain)
    if not isinstance(modules, list):
        raise InvalidModelFormat(f"{root / 'modules.json'} is not a list of modules")
    kinds = [_module_kind(m, root / "modules.json") for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"]:
        raise InvalidModelFormat(
            f"{root / 'modules.json'} has modules {kinds}: expected Transformer, Pooling, "
            "then Dense/Normalize"
        )
    pooling, include_prompt = read_pooling(root / str(modules[1].get("path", "")))
    steps: list[Step] = []
    for entry, kind in zip(modules[2:], kinds[2:], strict=True):
        if kind == "Dense":
            steps.append(_read_dense(root / str(entry.get("path", "")), read_tensors))
        elif kind == "Normalize":
            steps.append(Normalize())
        else:
            raise InvalidModelFormat(f"{root / 'modules.json'}: {kind} after Pooling")
    pipeline = SentencePipeline(
        pooling=pooling, steps=tuple(steps), include_prompt=include_prompt, modules=tuple(kinds)
    )
    return _with_encoder(root, str(modules[0].get("path", "")), pipeline)


def read_pooling(folder: Path) -> tuple[PoolingMode, bool]:
    cfg = read_json(folder / "config.json")
    if cfg is None:  # no pooling config: sentence-transformers' default Pooling
        return "mean", True
    if not isinstance(cfg, dict):
        raise InvalidModelFormat(f"{folder / 'config.json'} is missing or not a JSON object")
    mode = cfg.get("pooling_mode")  # sentence-transformers 6 writes one string
    modes = [str(mode).lower()] if mode else [m for k, m in _POOLING_FLAGS.items() if cfg.get(k)]
    if len(modes) != 1 or modes[0] not in get_args(PoolingMode):
        raise InvalidModelFormat(
            f"{folder / 'config.json'} asks for pooling {modes or 'none'}: supported is exactly "
            f"one of {', '.join(get_args(PoolingMode))}"
        )
    return modes[0], bool(cfg.get("include_prompt", True))  # type: ignore[return-value]


def _read_dense(folder: Path, read_tensors: TensorReader | None) -> DenseLayer:
    cfg = read_json(folder / "config.json")
    if not isinstance(cfg, dict):
        raise InvalidModelFormat(f"{folder / 'config.json'} is missing or not a JSON object")
    act_name = str(cfg.get("activation_function") or "torch.nn.modules.linear.Identity")
    activation = _ACTIVATIONS.get(act_name.rsplit(".", 1)[-1])
    if activation is None:
        raise InvalidModelFormat(
            f"{folder / 'config.json'}: activation {act_name!r} is not supported; "
            f"supported: torch.nn {', '.join(_ACTIVATIONS)}"
        )
    weights_path = folder / "model.safetensors"
    if not weights_path.is_file():
        pickled = [p.name for p in folder.glob("*.bin")]
        if pickled:
            raise UnsafeModel(
                f"{folder} has Dense weights only as {', '.join(pickled)} (a pickle), which is "
                "never unpickled: convert it to model.safetensors"
            )
        raise InvalidModelFormat(f"{weights_path} is missing: the Dense module has no weights")
    if read_tensors is None:
        raise InvalidModelFormat(f"{folder} has a Dense module: pass read_tensors to read it")
    return _dense_layer(folder, cfg, read_tensors(weights_path), activation)


def _dense_layer(
    folder: Path, cfg: Mapping[str, Any], tensors: Mapping[str, np.ndarray], act: Activation
) -> DenseLayer:
    n_in, n_out = int(cfg.get("in_features", 0)), int(cfg.get("out_features", 0))
    where = f"{folder.name}/model.safetensors"
    if "linear.weight" not in tensors:
        raise InvalidModelFormat(f"{where} lacks tensor 'linear.weight'")
    weight = require_f32("linear.weight", tensors["linear.weight"], where)
    bias = None
    if cfg.get("bias", True):
        if "linear.bias" not in tensors:
            raise InvalidModelFormat(f"{where} lacks tensor 'linear.bias' (config says bias)")
        bias = require_f32("linear.bias", tensors["linear.bias"], where)
    if weight.shape != (n_out, n_in) or (bias is not None and bias.shape != (n_out,)):
        raise InvalidModelFormat(
            f"{where}: linear.weight is {weight.shape}, config.json says {n_in} -> {n_out}"
        )
    return DenseLayer(folder.name, weight, bias, act)


def _with_encoder(root: Path, path: str, pipeline: SentencePipeline) -> SentencePipeline:
    """Adds what the encoder folder says: hidden size, max_seq_length
    (sentence_bert_config.json, else min(model_max_length,
    max_position_embeddings) as sentence-transformers computes it), lower-casing."""
    folder = root / path
    st_cfg = read_json(folder / "sentence_bert_config.json") or {}
    hf_cfg = read_json(folder / "config.json") or {}
    tok_cfg = read_json(folder / "tokenizer_config.json") or {}
    limit = max_sequence_length(st_cfg, hf_cfg, tok_cfg)
    hidden = hf_cfg.get("hidden_size", hf_cfg.get("dim"))
    return SentencePipeline(
        pooling=pipeline.pooling,
        steps=pipeline.steps,
        max_seq_length=limit,
        do_lower_case=bool(st_cfg.get("do_lower_case", False)),
        include_prompt=pipeline.include_prompt,
        transformer_path=path,
        hidden_size=int(hidden) if isinstance(hidden, int) else None,
        modules=pipeline.modules,
    )


# --------------------------------------------------------------------------- numpy


def pool(hidden: F32Array, attention_mask: npt.NDArray[Any], mode: PoolingMode) -> F32Array:
    """sentence-transformers' Pooling of [B, S, H] token embeddings."""
    mask = attention_mask.astype(np.float32)[:, :, None]
    if mode == "cls":
        return np.ascontiguousarray(hidden[:, 0])
    if mode == "max":
        return np.where(mask > 0, hidden, np.float32(-1e9)).max(axis=1)
    if mode == "lasttoken":
        seq = attention_mask.shape[1]
        last = seq - 1 - np.argmax(attention_mask[:, ::-1] > 0, axis=1)
        return (hidden * mask)[np.arange(hidden.shape[0]), last]
    if mode == "weightedmean":
        mask = mask * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
    total = (hidden * mask).sum(axis=1)
    count = np.maximum(mask.sum(axis=1), np.float32(1e-9))
    return total / (np.sqrt(count) if mode == "mean_sqrt_len_tokens" else count)


def _activate(x: F32Array, name: Activation) -> F32Array:
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "sigmoid":
        return np.float32(1) / (np.float32(1) + np.exp(-x))
    if name == "silu":
        return x / (np.float32(1) + np.exp(-x))
    if name == "gelu":
        from math import erf, sqrt

        return (0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2)))).astype(np.float32)
    return x


def apply_pipeline(
    pipeline: SentencePipeline, hidden: F32Array, attention_mask: npt.NDArray[Any]
) -> F32Array:
    """Sentence embeddings [B, D] from last_hidden_state [B, S, H], in numpy."""
    x = pool(hidden, attention_mask, pipeline.pooling)
    for step in pipeline.steps:
        if isinstance(step, DenseLayer):
            x = dense_forward((step,), x)
        else:
            norm = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.maximum(norm, np.float32(step.eps))
    return x.astype(np.float32, copy=False)


def dense_forward(layers: tuple[DenseLayer, ...], x: F32Array) -> F32Array:
    """Pooled vectors [B, H] through Dense modules, in order."""
    for layer in layers:
        x = x @ layer.weight.T
        if layer.bias is not None:
            x = x + layer.bias
        x = _activate(x, layer.activation)
    return x.astype(np.float32, copy=False)
