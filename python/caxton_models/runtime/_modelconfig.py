"""What a model folder's own files say about running it, read as
sentence-transformers reads them: ``modules.json`` (is there a Normalize
module, where is the Pooling module), ``1_Pooling/config.json`` (the pooling
mode), ``sentence_bert_config.json`` (``max_seq_length``), ``config.json``,
``tokenizer.json``, ``tokenizer_config.json`` (``padding_side``),
``config_sentence_transformers.json`` (prompts), and our ``caxton.json`` for
shipped graphs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from caxton_models._core import SafeTensors
from caxton_models._paths import check_repo_path
from caxton_models.errors import InvalidArgument, InvalidModelFormat, ModelNotFound
from caxton_models.registry import ONNX_GRAPHS
from caxton_models.registry import SAFETENSORS_FILE as SAFETENSORS
from caxton_models.runtime._prompts import Prompts, read_prompts
from caxton_models.runtime._seqlen import DEFAULT_MAX_LENGTH, max_sequence_length
from caxton_models.runtime.graph import (
    DenseLayer,
    Normalize,
    SentencePipeline,
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
CST_CONFIG = "config_sentence_transformers.json"


def read_tensors(path: Path) -> Mapping[str, np.ndarray]:
    """Every tensor of a safetensors file, memory-mapped by the core: float32
    and integer tensors as read-only views of the file, F16/BF16 widened to
    new float32 arrays one at a time, when looked up."""
    st = SafeTensors(path)
    return LazyTensors(st, lambda name: st.tensor(name, as_f32=st.info(name)[0] in ("F16", "BF16")))


def onnx_variants(root: Path) -> list[str]:
    """Every ONNX graph in the folder (root and ``onnx/``), as repo paths."""
    found = [*root.glob("*.onnx"), *root.glob("onnx/*.onnx")]
    return sorted(p.relative_to(root).as_posix() for p in found if p.is_file())


def _weights(
    root: Path, caxton: Mapping[str, Any], onnx_file: str | None
) -> tuple[Path | None, Path | None]:
    """(ONNX graph, safetensors weights): a shipped graph when there is one,
    else ``model.safetensors`` to build the graph from."""
    if onnx_file:
        check_repo_path(onnx_file, what="onnx_file")
        if not onnx_file.endswith(".onnx") or not (root / onnx_file).is_file():
            have = onnx_variants(root)
            raise InvalidArgument(
                f"onnx_file {onnx_file!r} is not an ONNX graph in {root}; it has "
                f"{', '.join(have) if have else 'none'} (`caxton model info` lists a "
                "repository's variants)"
            )
        return root / onnx_file, None
    candidates = [caxton.get("onnx"), *ONNX_GRAPHS]
    onnx_path = next((root / c for c in candidates if c and (root / c).is_file()), None)
    if onnx_path is not None:
        return onnx_path, None
    if (root / SAFETENSORS).is_file():
        return None, root / SAFETENSORS
    looked = ", ".join(c for c in [*candidates, SAFETENSORS] if c)
    raise InvalidModelFormat(
        f"no weights to run in {root} (looked for {looked}): the runtime needs an ONNX export "
        "or model.safetensors of a supported architecture (" + ", ".join(_supported()) + ")"
    )


def _supported() -> list[str]:
    from caxton_models.runtime.graph.spec import SUPPORTED

    return list(SUPPORTED)


#: Families seen on the Hub whose graphs caxton does not build, by model_type.
RECOGNISED: dict[str, str] = {
    "nomic_bert": "NomicBert (nomic-ai/nomic-embed-text-v1/v1.5)",
    "new": "GTE 'new' (Alibaba-NLP/gte-*-en-v1.5, gte-multilingual-base)",
    "jina_bert": "JinaBERT (jinaai/jina-embeddings-v2-*)",
    "xlm-roberta-flash": "Jina XLM-RoBERTa flash (jinaai/jina-embeddings-v3)",
    "bge-m3": "BGE-M3's multi-vector heads",
    "t5": "T5 encoders (sentence-t5, GTR)",
    "mistral": "Mistral decoders (e5-mistral, SFR-Embedding)",
    "llama": "Llama decoders",
}


def unsupported_family(model_type: str, where: str) -> InvalidModelFormat:
    """The error for a model whose graph caxton cannot build from weights:
    names the family (when it is a known one) and the families that are."""
    family = RECOGNISED.get(model_type)
    said = f"{family}, model_type {model_type!r}" if family else f"model_type {model_type!r}"
    return InvalidModelFormat(
        f"{where} is {said}, which caxton cannot build from model.safetensors; supported "
        f"families: {', '.join(_supported())}. A repository that ships an ONNX export of it "
        "(onnx/model.onnx or model.onnx, or onnx_file=...) runs as it is."
    )


def _pipeline(root: Path) -> SentencePipeline:
    """What comes after the encoder (the pooling is decided by
    :func:`read_sentence_transformers` only); a folder without modules.json is
    normalised, as this runtime always did."""
    pipeline = read_sentence_transformers(root, read_tensors)
    if not (root / "modules.json").is_file():
        pipeline = replace(pipeline, steps=(Normalize(),))
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
    #: config_sentence_transformers.json's prompts and default prompt.
    prompts: Prompts = field(default_factory=Prompts)
    #: False: prompt tokens are left out of the pooling (Pooling's include_prompt).
    include_prompt: bool = True
    #: tokenizer_config.json's padding_side; None: what tokenizer.json says.
    padding_side: str | None = None

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
        hf_cfg = read_json(root / "config.json") or {}
        model_type = hf_cfg.get("model_type")
        if weights_path is not None and model_type and model_type not in _supported():
            raise unsupported_family(str(model_type), str(root))
        tokenizer_path = root / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise InvalidModelFormat(
                f"{tokenizer_path} is missing: the fast tokenizer file is required"
            )
        pipeline = _pipeline(root)
        st_cfg = read_json(root / "sentence_bert_config.json") or {}
        tok_cfg = read_json(root / "tokenizer_config.json") or {}
        limit = max_sequence_length(st_cfg, hf_cfg, tok_cfg) or DEFAULT_MAX_LENGTH
        dims = pipeline.dimensions or hf_cfg.get("hidden_size")
        return cls(
            model_dir=root,
            onnx_path=onnx_path,
            weights_path=weights_path,
            tokenizer_path=tokenizer_path,
            pooling=_CORE_POOLING[pipeline.pooling],
            normalize=pipeline.normalize,
            dense=pipeline.dense,
            max_sequence_length=limit,
            dimensions=int(dims) if dims else None,
            model_type=hf_cfg.get("model_type"),
            num_heads=hf_cfg.get("num_attention_heads"),
            hidden_size=hf_cfg.get("hidden_size"),
            pre_optimized=bool(caxton.get("pre_optimized", False)),
            extra=caxton,
            prompts=read_prompts(read_json(root / CST_CONFIG), root / CST_CONFIG),
            include_prompt=pipeline.include_prompt,
            padding_side=_padding_side(tok_cfg, root),
        )


def _padding_side(tok_cfg: Mapping[str, Any], root: Path) -> str | None:
    """tokenizer_config.json's ``padding_side``, which transformers applies
    over the fast tokenizer's own padding; None leaves it to tokenizer.json
    (read from the parsed tokenizer, not parsed twice)."""
    side = tok_cfg.get("padding_side")
    if side is not None and side not in ("left", "right"):
        raise InvalidModelFormat(
            f"{root / 'tokenizer_config.json'}: padding_side {side!r} is neither 'left' nor 'right'"
        )
    return side
