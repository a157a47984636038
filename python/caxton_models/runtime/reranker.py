"""Cross-encoder rerankers in-process with ONNX Runtime, as
sentence-transformers' ``CrossEncoder`` computes them, with no torch.

A ``...ForSequenceClassification`` checkpoint (BERT, RoBERTa, XLM-R) gets
its graph built from ``config.json`` and ``model.safetensors``, classifier
head included (:mod:`caxton_models.runtime.graph.task_heads`). Pairs are
tokenized with the tokenizer's own pair template (``[CLS] q [SEP] d [SEP]``
with token types, ``<s> q </s></s> d </s>``), truncated longest-first to the
limit CrossEncoder uses, sorted by length into batches by the core's
planner, and the activation CrossEncoder applies is read from the folder:
``config_sentence_transformers.json`` (sentence-transformers 6),
``config.json``'s ``sentence_transformers.activation_fn`` (4 and 5) or
``sbert_ce_default_activation_function`` (older); without one, sigmoid for
one label and none for more.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime._taskmodel import HeadOptions, TaskFolder, TaskModel, check_top_k
from caxton_models.runtime.embedder import DEFAULT_BATCH_OVERHEAD, DEFAULT_MAX_BATCH
from caxton_models.runtime.graph.pipeline import read_json
from caxton_models.runtime.graph.task_heads import build_classifier, num_labels

__all__ = ["ACTIVATIONS", "Activation", "Reranker"]

log = logging.getLogger(__name__)

Activation = Literal["sigmoid", "identity", "tanh", "softmax"]
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "identity", "tanh", "softmax")
#: torch.nn class names (the last part of activation_fn) -> ours.
_TORCH_ACTIVATIONS: dict[str, Activation] = {
    "Sigmoid": "sigmoid",
    "Identity": "identity",
    "Tanh": "tanh",
    "Softmax": "softmax",
}
#: Padded tokens per batch: pairs are long (a query and a passage), so a
#: budget above the embedder's keeps a few pairs in each batch.
DEFAULT_PAIR_BUDGET = 1024
FloatArray = npt.NDArray[np.float32]


def default_activation(folder: TaskFolder) -> Activation:
    """The activation ``CrossEncoder(folder)`` applies in ``predict``."""
    path = folder.st_config.get("activation_fn")
    st_block = folder.config.get("sentence_transformers")
    if path is None and isinstance(st_block, dict):
        path = st_block.get("activation_fn")
    if path is None:
        path = folder.config.get("sbert_ce_default_activation_function")
    if isinstance(path, str) and path:
        # CrossEncoder imports only torch's own classes unless trust_remote_code.
        if not path.startswith("torch."):
            log.warning(
                "%s: activation %r is not a torch class; CrossEncoder ignores it without "
                "trust_remote_code and so does caxton: using the default",
                folder.root,
                path,
            )
        else:
            name = path.rsplit(".", 1)[-1]
            if name not in _TORCH_ACTIVATIONS:
                raise InvalidModelFormat(
                    f"{folder.root}: activation_fn {path!r} is not supported; supported: "
                    f"{', '.join(f'torch.nn.{k}' for k in _TORCH_ACTIVATIONS)}. Pass "
                    "activation='identity' to get the raw logits"
                )
            return _TORCH_ACTIVATIONS[name]
    return "sigmoid" if num_labels(folder.config) == 1 else "identity"


def activate(logits: FloatArray, name: str) -> FloatArray:
    """``name`` applied to [n, labels] logits, in float32 like torch."""
    x = np.asarray(logits, dtype=np.float32)
    if name == "identity":
        return x
    if name == "sigmoid":
        # exp of a negative number only: no overflow warnings for large |x|.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
    raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")


def _check_pairs(pairs: Any) -> list[tuple[str, str]]:
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise TypeError("pairs must be a list of (query, document) pairs of strings")
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        if (
            isinstance(pair, str | bytes)
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(isinstance(t, str) for t in pair)
        ):
            raise TypeError(
                f"pairs[{i}] is {type(pair).__name__} {pair!r:.60}, expected a (query, document) "
                "pair of two strings"
            )
        out.append((pair[0], pair[1]))
    return out


class Reranker(TaskModel):
    """A loaded cross-encoder. Thread-safe: ``predict`` and ``rerank`` may be
    called from many threads at once."""

    def __init__(
        self,
        folder: TaskFolder,
        *,
        model_id: str | None = None,
        max_length: int | None = None,
        activation: Activation | None = None,
        threads: int | None = None,
        parallel_batches: int | None = None,
        token_budget: int = DEFAULT_PAIR_BUDGET,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        batch_overhead: int = DEFAULT_BATCH_OVERHEAD,
        graph_cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        t0 = time.perf_counter()
        if folder.weights_path is not None and not any(
            a.endswith("ForSequenceClassification") for a in folder.architectures
        ):
            raise InvalidModelFormat(
                f"{folder.root} is a {', '.join(folder.architectures) or 'bare encoder'} "
                "checkpoint, not a cross-encoder (...ForSequenceClassification); embedding "
                "models load with caxton_models.load, SPLADE ones with load_sparse"
            )
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.num_labels = num_labels(folder.config)
        self.activation: Activation = activation or default_activation(folder)
        st = read_json(folder.root / "sentence_bert_config.json") or {}
        pad_id = self._open_folder(folder, model_id, max_length, st.get("max_seq_length"))
        specials = self._tokenizer.num_special_tokens_to_add(True)
        if self.max_length <= specials:
            # The tokenizer would not truncate at all, and over-long pairs
            # would run past the position table.
            raise ValueError(
                f"max_length {self.max_length} leaves no room for text: a pair takes "
                f"{specials} special tokens; give a larger max_length"
            )
        types = folder.gives_token_types()
        build = functools.partial(build_classifier, token_types=types)
        options = HeadOptions(
            threads, parallel_batches, token_budget, max_batch_size, batch_overhead, graph_cache_dir
        )
        self._start_runner("cls-types" if types else "cls", build, pad_id, options)
        self.load_time_ms = (time.perf_counter() - t0) * 1000.0

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], **kwargs: Any) -> Reranker:
        """Loads a ``CrossEncoder`` folder (config.json, model.safetensors,
        tokenizer.json)."""
        return cls(TaskFolder.read(path, task="reranker"), **kwargs)

    def logits(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int | None = None
    ) -> FloatArray:
        """The classifier's raw outputs, [n, num_labels], in the caller's order."""
        checked = _check_pairs(pairs)
        out = np.zeros((len(checked), self.num_labels), dtype=np.float32)
        if not checked:
            return out
        enc = self._tokenizer.encode_batch(checked)
        ids = [e.ids for e in enc]
        types = [e.type_ids for e in enc]
        for rows, logits in self._runner.run(ids, types, batch_size=batch_size):
            out[rows] = logits
        return out

    def predict(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        activation: Activation | None = None,
        apply_softmax: bool = False,
        batch_size: int | None = None,
    ) -> FloatArray:
        """Scores of (query, document) pairs, as ``CrossEncoder.predict``:
        shape (n,) for a one-label model, else (n, num_labels).
        ``activation`` overrides the model's for this call;
        ``apply_softmax`` then normalises several labels' scores."""
        scores = activate(self.logits(pairs, batch_size=batch_size), activation or self.activation)
        if apply_softmax and self.num_labels > 1:
            scores = activate(scores, "softmax")
        return scores[:, 0] if self.num_labels == 1 else scores

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        *,
        batch_size: int | None = None,
    ) -> list[tuple[int, float]]:
        """``(index into documents, score)``, best first (ties keep the
        documents' order), the ``top_k`` best when given."""
        if self.num_labels != 1:
            raise InvalidModelFormat(
                f"{self.model_id} has {self.num_labels} labels: rerank needs a one-label "
                "cross-encoder; use predict() for classifiers"
            )
        if not isinstance(query, str):
            raise TypeError(f"query is {type(query).__name__}, expected str")
        if isinstance(documents, str):
            raise TypeError("documents must be a list of strings, not one string")
        check_top_k(top_k)
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size)
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        return [(int(i), float(scores[i])) for i in order]

    def __repr__(self) -> str:
        return (
            f"Reranker(model_id={self.model_id!r}, num_labels={self.num_labels}, "
            f"max_length={self.max_length}, activation={self.activation!r})"
        )
