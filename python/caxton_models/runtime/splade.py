"""SPLADE sparse encoders in-process with ONNX Runtime, as
sentence-transformers' ``SparseEncoder`` computes them, with no torch.

A ``SparseEncoder`` folder lists ``MLMTransformer`` then ``SpladePooling``
in ``modules.json``; a bare ``BertForMaskedLM`` folder is read as SPLADE
with the usual pooling (max, relu). The graph (encoder, masked-LM head and
pooling, :func:`~caxton_models.runtime.graph.task_heads.build_splade`) gives
one weight per vocabulary entry; the zeros are dropped here, and
``top_k`` keeps the largest weights (sentence-transformers'
``max_active_dims``).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime._taskmodel import HeadOptions, TaskFolder, TaskModel, check_top_k
from caxton_models.runtime.embedder import DEFAULT_BATCH_OVERHEAD, DEFAULT_MAX_BATCH
from caxton_models.runtime.graph.pipeline import read_json
from caxton_models.runtime.graph.task_heads import (
    SpladeActivation,
    SpladePoolingMode,
    build_splade,
)
from caxton_models.sparse import SparseBatch, SparseVector

__all__ = ["SpladeEncoder", "SpladeModules", "read_sparse_encoder"]

Kind = Literal["passage", "query"]
#: Padded tokens per batch: the head's logits are [tokens, vocab] floats
#: (256 x 30522 x 4 bytes = 31 MB per batch in flight).
DEFAULT_SPARSE_BUDGET = 256
_MODULES = ("MLMTransformer", "SpladePooling")


@dataclass(frozen=True)
class SpladeModules:
    """What a SparseEncoder folder's modules say."""

    #: The folder of the MLMTransformer module (config.json, weights, tokenizer).
    model_dir: Path
    pooling: SpladePoolingMode = "max"
    activation_function: SpladeActivation = "relu"
    max_seq_length: int | None = None


def read_sparse_encoder(root: Path) -> SpladeModules:
    """The modules of ``root``: ``modules.json`` with an MLMTransformer and a
    SpladePooling (classic or sentence-transformers 6 module paths); none
    at all for a bare masked-LM folder."""
    modules = read_json(root / "modules.json")
    if modules is None:
        return SpladeModules(model_dir=root)
    if not isinstance(modules, list):
        raise InvalidModelFormat(f"{root / 'modules.json'} is not a list of modules")
    found: dict[str, str] = {}
    for entry in modules:
        kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
        name = kind.rsplit(".", 1)[-1]
        if not kind.startswith("sentence_transformers.") or name not in _MODULES:
            raise InvalidModelFormat(
                f"{root / 'modules.json'}: module {kind!r} is not supported for SPLADE; "
                f"supported: {' -> '.join(_MODULES)}"
            )
        found[name] = str(entry.get("path", ""))
    if tuple(found) != _MODULES:
        raise InvalidModelFormat(
            f"{root / 'modules.json'} lists {', '.join(found) or 'no modules'}; a SPLADE "
            f"SparseEncoder is {' -> '.join(_MODULES)}"
        )
    model_dir = root / found["MLMTransformer"]
    pooling_cfg = read_json(root / found["SpladePooling"] / "config.json") or {}
    pooling = pooling_cfg.get("pooling_strategy", "max")
    act = pooling_cfg.get("activation_function", "relu")
    if pooling not in ("max", "sum") or act not in ("relu", "log1p_relu"):
        raise InvalidModelFormat(
            f"{root / found['SpladePooling']}: pooling_strategy {pooling!r} / "
            f"activation_function {act!r}; supported: max or sum, relu or log1p_relu"
        )
    st = read_json(model_dir / "sentence_bert_config.json") or {}
    max_len = st.get("max_seq_length")
    return SpladeModules(
        model_dir=model_dir,
        pooling=pooling,
        activation_function=act,
        max_seq_length=max_len if isinstance(max_len, int) and max_len > 0 else None,
    )


def _prune(values: npt.NDArray[np.float32], top_k: int | None) -> npt.NDArray[np.int64]:
    """Indices of the non-zero entries of one row (the ``top_k`` largest
    when given), ascending."""
    nz = np.flatnonzero(values)
    if top_k is not None and nz.size > top_k:
        keep = np.argpartition(-values[nz], top_k - 1)[:top_k] if top_k else nz[:0]
        nz = np.sort(nz[keep])
    return nz.astype(np.int64, copy=False)


class SpladeEncoder(TaskModel):
    """A loaded SPLADE model. Thread-safe: ``embed`` may be called from many
    threads at once."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        max_length: int | None = None,
        threads: int | None = None,
        parallel_batches: int | None = None,
        token_budget: int = DEFAULT_SPARSE_BUDGET,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        batch_overhead: int = DEFAULT_BATCH_OVERHEAD,
        graph_cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        t0 = time.perf_counter()
        modules = read_sparse_encoder(Path(root))
        folder = TaskFolder.read(modules.model_dir, task="SPLADE encoder")
        if folder.weights_path is None:
            raise InvalidModelFormat(
                f"{folder.root} has no model.safetensors: the SPLADE graph is built from it"
            )
        if not any(a.endswith("ForMaskedLM") for a in folder.architectures):
            raise InvalidModelFormat(
                f"{folder.root} is a {', '.join(folder.architectures) or 'bare encoder'} "
                "checkpoint; SPLADE needs a masked-LM head (...ForMaskedLM)"
            )
        self.modules = modules
        prompts = folder.st_config.get("prompts") or {}
        self.prompts: dict[str, str] = {
            "query": str(prompts.get("query") or ""),
            "passage": str(prompts.get("document") or prompts.get("passage") or ""),
        }
        pad_id = self._open_folder(folder, model_id, max_length, modules.max_seq_length)
        if self.max_length <= self._tokenizer.num_special_tokens_to_add(False):
            raise ValueError(f"max_length {self.max_length} leaves no room for text")
        build = functools.partial(
            build_splade, pooling=modules.pooling, activation_function=modules.activation_function
        )
        variant = f"splade-{modules.pooling}-{modules.activation_function}"
        options = HeadOptions(
            threads, parallel_batches, token_budget, max_batch_size, batch_overhead, graph_cache_dir
        )
        self._start_runner(variant, build, pad_id, options)
        width = self._runner.output_width
        self.dimensions = int(width or folder.config.get("vocab_size") or 0)
        self.load_time_ms = (time.perf_counter() - t0) * 1000.0

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], **kwargs: Any) -> SpladeEncoder:
        """Loads a SparseEncoder folder (or a bare masked-LM folder)."""
        return cls(path, **kwargs)

    def embed_batch(
        self,
        texts: Sequence[str] | str,
        *,
        top_k: int | None = None,
        kind: Kind = "passage",
        batch_size: int | None = None,
    ) -> SparseBatch:
        """The sparse vectors of ``texts`` as one CSR batch, in the caller's order."""
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        check_top_k(top_k)
        if kind not in self.prompts:
            raise ValueError(f"kind must be 'passage' or 'query', not {kind!r}")
        prompt = self.prompts[kind]
        enc = self._tokenizer.encode_batch([prompt + t for t in texts] if prompt else list(texts))
        rows_out: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = [
            (np.zeros(0, np.int64), np.zeros(0, np.float32))
        ] * len(texts)
        for rows, dense in self._runner.run([e.ids for e in enc], batch_size=batch_size):
            for j, row in enumerate(rows.tolist()):
                idx = _prune(dense[j], top_k)
                rows_out[row] = (idx, dense[j, idx])
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(i) for i, _ in rows_out], out=indptr[1:])
        indices = np.concatenate([i for i, _ in rows_out]) if rows_out else np.zeros(0, np.int64)
        values = np.concatenate([v for _, v in rows_out]) if rows_out else np.zeros(0, np.float32)
        return SparseBatch(indptr, indices, values)

    def embed(
        self,
        texts: Sequence[str] | str,
        *,
        top_k: int | None = None,
        kind: Kind = "passage",
        batch_size: int | None = None,
    ) -> list[SparseVector]:
        """One :class:`~caxton_models.sparse.SparseVector` per text: vocabulary
        ids (ascending) and their SPLADE weights, zeros left out; with
        ``top_k``, only the ``top_k`` largest weights."""
        return self.embed_batch(texts, top_k=top_k, kind=kind, batch_size=batch_size).to_vectors()

    def terms(self, vector: SparseVector) -> dict[str, float]:
        """``{token: weight}`` of a vector, largest first (to see what it matched)."""
        order = np.argsort(-vector.values, kind="stable")
        return {
            str(self._tokenizer.id_to_token(int(vector.indices[i]))): float(vector.values[i])
            for i in order
        }

    def __repr__(self) -> str:
        return (
            f"SpladeEncoder(model_id={self.model_id!r}, dimensions={self.dimensions}, "
            f"max_length={self.max_length}, pooling={self.modules.pooling!r})"
        )
