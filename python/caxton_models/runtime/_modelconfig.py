"""What a model folder's own files say about running it, read as
sentence-transformers reads them: ``modules.json`` (is there a Normalize
module, where is the Pooling module), ``1_Pooling/config.json`` (the pooling
mode), ``sentence_bert_config.json`` (``max_seq_length``), ``config.json``,
``tokenizer.json``, and our ``caxton.json`` for shipped graphs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caxton_models import _core
from caxton_models.errors import InvalidModelFormat, ModelNotFound
from caxton_models.runtime.graph import (
    SUPPORTED,
    DenseLayer,
    Normalize,
    SentencePipeline,
    read_pooling,
    read_sentence_transformers,
)
from caxton_models.runtime.graph.pipeline import read_json
from caxton_models.runtime.graph.weights import LazyTensors

# sentence-transformers' pooling modes as the core's pool_into names them.
_CORE_POOLING = {
    "mean": "mean",
    "cls": "cls",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "lasttoken": "lasttoken",
}
SAFETENSORS = "model.safetensors"


def read_tensors(path: Path) -> Mapping[str, np.ndarray]:
    """Every tensor of a safetensors file, memory-mapped by the core: float32
    and integer tensors as read-only views of the file, F16/BF16 widened to
    new float32 arrays one at a time, when looked up."""
    st = _core.SafeTensors(path)
    return LazyTensors(st, lambda name: st.tensor(name, as_f32=st.info(name)[0] in ("F16", "BF16")))


def _weights(
    root: Path, caxton: Mapping[str, Any], onnx_file: str | None
) -> tuple[Path | None, Path | None]:
    """(ONNX graph, safetensors weights): a shipped graph when there is one,
    else ``model.safetensors`` to build the graph from."""
    candidates = [onnx_file] if onnx_file else [caxton.get("onnx"), "onnx/model.onnx", "model.onnx"]
    onnx_path = next((root / c for c in candidates if c and (root / c).is_file()), None)
    if onnx_path is not None:
        return onnx_path, None
    if not onnx_file and (root / SAFETENSORS).is_file():
        return None, root / SAFETENSORS
    looked = ", ".join(c for c in [*candidates, None if onnx_file else SAFETENSORS] if c)
    raise InvalidModelFormat(
        f"no weights to run in {root} (looked for {looked}): the runtime needs an ONNX export "
        f"or model.safetensors of a supported architecture ({', '.join(SUPPORTED)})"
    )


def _pipeline(root: Path) -> SentencePipeline | None:
    """What comes after the encoder, from modules.json; without one, the
    pooling of a ``1_Pooling`` folder if there is one (normalised, as this
    runtime always did), else None (mean pooling, normalised)."""
    if not (root / "modules.json").is_file():
        if not (root / "1_Pooling" / "config.json").is_file():
            return None
        pooling, _ = read_pooling(root / "1_Pooling")
        pipeline = SentencePipeline(pooling=pooling, steps=(Normalize(),))
    else:
        pipeline = read_sentence_transformers(root, read_tensors)
    if pipeline.pooling not in _CORE_POOLING:
        raise InvalidModelFormat(
            f"{root}: pooling {pipeline.pooling!r} is not supported by the runtime; "
            f"supported: {', '.join(_CORE_POOLING)}"
        )
    return pipeline


@dataclass(frozen=True)
class ModelConfig:
    """What the model's own files say about running it."""

    model_dir: Path
    #: A shipped ONNX graph, or None when the graph is built from ``weights_path``.
    onnx_path: Path | None
    tokenizer_path: Path
    pooling: str = "mean"
    normalize: bool = True
    #: sentence-transformers Dense modules after pooling (e.g. 768 -> 512, tanh).
    dense: tuple[DenseLayer, ...] = ()
    weights_path: Path | None = None
    max_sequence_length: int = 512
    dimensions: int | None = None
    model_type: str | None = None
    num_heads: int | None = None
    hidden_size: int | None = None
    #: Set by caxton.json for shipped graphs that are already fused/quantized.
    pre_optimized: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, model_dir: str | os.PathLike[str], onnx_file: str | None = None) -> ModelConfig:
        root = Path(model_dir)
        if not root.is_dir():
            raise ModelNotFound(
                f"model folder {root} does not exist: pass a folder in the Hub layout "
                "(onnx/model.onnx, tokenizer.json, ...) or a registry name"
            )
        caxton = read_json(root / "caxton.json") or {}
        onnx_path, weights_path = _weights(root, caxton, onnx_file)
        tokenizer_path = root / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise InvalidModelFormat(
                f"{tokenizer_path} is missing: the fast tokenizer file is required"
            )
        pipeline = _pipeline(root)
        hf_cfg = read_json(root / "config.json") or {}
        st_cfg = read_json(root / "sentence_bert_config.json") or {}
        tok_cfg = read_json(root / "tokenizer_config.json") or {}
        limits: list[int] = [
            int(v)
            for v in (
                st_cfg.get("max_seq_length"),
                hf_cfg.get("max_position_embeddings") if "max_seq_length" not in st_cfg else None,
                tok_cfg.get("model_max_length") if "max_seq_length" not in st_cfg else None,
            )
            if isinstance(v, int) and 0 < v < 1_000_000
        ]
        # RoBERTa-style position ids start at padding_idx + 1.
        if hf_cfg.get("model_type") in ("roberta", "xlm-roberta") and not st_cfg:
            limits.append(512)
        dims = (pipeline.dimensions if pipeline else None) or hf_cfg.get("hidden_size")
        return cls(
            model_dir=root,
            onnx_path=onnx_path,
            weights_path=weights_path,
            tokenizer_path=tokenizer_path,
            pooling=_CORE_POOLING[pipeline.pooling] if pipeline else "mean",
            normalize=pipeline.normalize if pipeline else True,
            dense=pipeline.dense if pipeline else (),
            max_sequence_length=min(limits) if limits else 512,
            dimensions=int(dims) if dims else None,
            model_type=hf_cfg.get("model_type"),
            num_heads=hf_cfg.get("num_attention_heads"),
            hidden_size=hf_cfg.get("hidden_size"),
            pre_optimized=bool(caxton.get("pre_optimized", False)),
            extra=caxton,
        )
