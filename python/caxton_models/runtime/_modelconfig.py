"""What a model folder's own files say about running it, read as
sentence-transformers reads them: ``modules.json`` (is there a Normalize
module, where is the Pooling module), ``1_Pooling/config.json`` (the pooling
mode), ``sentence_bert_config.json`` (``max_seq_length``), ``config.json``,
``tokenizer.json``, and our ``caxton.json`` for shipped graphs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caxton_models.errors import InvalidModelFormat, ModelNotFound

_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidModelFormat(
            f"cannot read {path}: {e}; re-download or re-install the model"
        ) from e


@dataclass(frozen=True)
class ModelConfig:
    """What the model's own files say about running it."""

    model_dir: Path
    onnx_path: Path
    tokenizer_path: Path
    pooling: str = "mean"
    normalize: bool = True
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
        caxton = _read_json(root / "caxton.json") or {}
        candidates = (
            [onnx_file] if onnx_file else [caxton.get("onnx"), "onnx/model.onnx", "model.onnx"]
        )
        onnx_path = next((root / c for c in candidates if c and (root / c).is_file()), None)
        if onnx_path is None:
            raise InvalidModelFormat(
                f"no ONNX graph in {root} (looked for {', '.join(c for c in candidates if c)}): "
                "this runtime needs an ONNX export of the model"
            )
        tokenizer_path = root / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise InvalidModelFormat(
                f"{tokenizer_path} is missing: the fast tokenizer file is required"
            )
        modules = _read_json(root / "modules.json") or []
        pooling_dir = root / "1_Pooling"
        normalize = True
        if modules:
            types = [str(m.get("type", "")) for m in modules]
            normalize = any(t.endswith("Normalize") for t in types)
            for m in modules:
                if str(m.get("type", "")).endswith("Pooling"):
                    pooling_dir = root / str(m.get("path", "1_Pooling"))
        pool_cfg = _read_json(pooling_dir / "config.json") or {}
        modes = [mode for key, mode in _POOLING_KEYS.items() if pool_cfg.get(key)]
        if len(modes) > 1:
            raise InvalidModelFormat(
                f"{pooling_dir / 'config.json'} enables several pooling modes {modes}: "
                "concatenated pooling is not supported"
            )
        pooling = modes[0] if modes else "mean"
        hf_cfg = _read_json(root / "config.json") or {}
        st_cfg = _read_json(root / "sentence_bert_config.json") or {}
        tok_cfg = _read_json(root / "tokenizer_config.json") or {}
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
        dims = pool_cfg.get("word_embedding_dimension") or hf_cfg.get("hidden_size")
        return cls(
            model_dir=root,
            onnx_path=onnx_path,
            tokenizer_path=tokenizer_path,
            pooling=pooling,
            normalize=normalize,
            max_sequence_length=min(limits) if limits else 512,
            dimensions=int(dims) if dims else None,
            model_type=hf_cfg.get("model_type"),
            num_heads=hf_cfg.get("num_attention_heads"),
            hidden_size=hf_cfg.get("hidden_size"),
            pre_optimized=bool(caxton.get("pre_optimized", False)),
            extra=caxton,
        )
