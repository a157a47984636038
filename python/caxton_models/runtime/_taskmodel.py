"""What rerankers and SPLADE encoders share: reading a transformers folder
(config.json, tokenizer files, the store's record of where it came from),
the tokenizer's length limit as sentence-transformers sets it, the head
graph built once from ``model.safetensors`` into the store's graph cache,
and batches cut by the core's planner (sorted by length, little padding)
run on ONNX Runtime, one batch per core.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from caxton_models._core import BatchPlan
from caxton_models.errors import InvalidModelFormat, ModelNotFound
from caxton_models.registry import ONNX_GRAPHS
from caxton_models.registry import SAFETENSORS_FILE as SAFETENSORS
from caxton_models.runtime._optimize import (
    build_from_safetensors,
    cached_graph_path,
    linked_weights,
)
from caxton_models.runtime._parallel import BatchPool, session_options
from caxton_models.runtime._seqlen import DEFAULT_MAX_LENGTH, max_sequence_length
from caxton_models.runtime.graph.pipeline import read_json
from caxton_models.store import read_installed

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["HeadOptions", "HeadRunner", "TaskFolder", "TaskModel", "check_top_k", "open_tokenizer"]

#: transformers tokenizers whose ``model_input_names`` leave out
#: token_type_ids (every other class returns them).
_NO_TYPE_IDS = ("Roberta", "XLMRoberta", "MPNet", "DistilBert", "Camembert", "Longformer")


@dataclass(frozen=True)
class TaskFolder:
    """A transformers model folder as a task head reads it."""

    root: Path
    config: Mapping[str, Any]
    tokenizer_config: Mapping[str, Any]
    #: config_sentence_transformers.json (activation_fn, prompts), or {}.
    st_config: Mapping[str, Any]
    tokenizer_path: Path
    weights_path: Path | None
    onnx_path: Path | None = None
    model_id: str = ""
    revision: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, model_dir: str | os.PathLike[str], *, task: str) -> TaskFolder:
        root = Path(model_dir)
        if not root.is_dir():
            raise ModelNotFound(
                f"model folder {root} does not exist: pass a folder in the Hub layout "
                f"(config.json, model.safetensors, tokenizer.json) or a registry name of a {task}"
            )
        config = read_json(root / "config.json")
        if not isinstance(config, dict):
            raise InvalidModelFormat(
                f"{root / 'config.json'} is missing or not an object: a {task} needs the "
                "transformers config.json"
            )
        tokenizer_path = root / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise InvalidModelFormat(
                f"{tokenizer_path} is missing: the fast tokenizer file is required"
            )
        weights = root / SAFETENSORS
        onnx = next((root / p for p in ONNX_GRAPHS if (root / p).is_file()), None)
        if not weights.is_file() and onnx is None:
            raise InvalidModelFormat(
                f"no weights to run in {root}: a {task} is built from {SAFETENSORS} "
                "(pickled pytorch_model.bin is never loaded)"
            )
        installed = read_installed(root)
        meta = installed.metadata if installed is not None else None
        return cls(
            root=root,
            config=config,
            tokenizer_config=read_json(root / "tokenizer_config.json") or {},
            st_config=read_json(root / "config_sentence_transformers.json") or {},
            tokenizer_path=tokenizer_path,
            weights_path=weights if weights.is_file() else None,
            onnx_path=onnx,
            model_id=(meta.model_id if meta else None) or root.name,
            revision=meta.commit if meta else None,
        )

    @property
    def architectures(self) -> list[str]:
        return [str(a) for a in self.config.get("architectures") or []]

    def max_length(self, max_seq_length: Any = None) -> int:
        """sentence-transformers' limit: ``max_seq_length`` when the folder
        sets one, else the tokenizer's ``model_max_length`` capped by
        ``max_position_embeddings`` (CrossEncoder and MLMTransformer both);
        RoBERTa-style positions start after the padding id, which uses up
        that many more rows of the table."""
        stated = {"max_seq_length": max_seq_length}
        found = max_sequence_length(stated, self.config, self.tokenizer_config)
        return found or DEFAULT_MAX_LENGTH

    def gives_token_types(self) -> bool:
        """Whether transformers' tokenizer for this folder returns
        token_type_ids (its class's ``model_input_names``)."""
        names = self.tokenizer_config.get("model_input_names")
        if isinstance(names, list):
            return "token_type_ids" in names
        cls = str(self.tokenizer_config.get("tokenizer_class") or "")
        return not any(cls.startswith(p + "Tokenizer") for p in _NO_TYPE_IDS)


def check_top_k(top_k: Any) -> None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be a whole number >= 0 or None, got {top_k!r}")


def open_tokenizer(folder: TaskFolder, max_length: int) -> tuple[Any, int]:
    """The fast tokenizer, truncating (longest first, as transformers does
    for pairs) at ``max_length`` and never padding (the planner pads), and
    its padding id."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder.tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="longest_first")
    pad = tok.token_to_id("[PAD]")
    if pad is None:
        pad = tok.token_to_id("<pad>")
    if pad is None:
        pad = folder.config.get("pad_token_id")
    return tok, int(pad or 0)


@dataclass(frozen=True)
class HeadOptions:
    """How a head's batches run and where its graph is cached (the
    constructor arguments of Reranker and SpladeEncoder)."""

    threads: int | None
    parallel_batches: int | None
    token_budget: int
    max_batch_size: int
    batch_overhead: int
    graph_cache_dir: str | os.PathLike[str] | None


class HeadRunner:
    """One ONNX Runtime session over a head graph and the batching around it.

    Thread-safe: ``run`` may be called from many threads at once."""

    def __init__(
        self,
        folder: TaskFolder,
        *,
        variant: str,
        build: Callable[..., Any],
        pad_id: int,
        options: HeadOptions,
    ) -> None:
        import onnxruntime as ort

        self._batches = BatchPool(options.threads, options.parallel_batches, name="caxton-head")
        self.threads = self._batches.threads
        self.parallel_batches = self._batches.parallel_batches
        self.token_budget = int(options.token_budget)
        self.max_batch_size = int(options.max_batch_size)
        self.batch_overhead = int(options.batch_overhead)
        self.pad_id = pad_id
        cache = Path(options.graph_cache_dir) if options.graph_cache_dir else None
        if folder.weights_path is not None:
            source = folder.weights_path
            self.graph_path = cached_graph_path(source, folder.root, variant, cache)
            if not self.graph_path.is_file():
                build_from_safetensors(source, self.graph_path, build)
        else:
            assert folder.onnx_path is not None  # TaskFolder.read found one or raised
            self.graph_path = folder.onnx_path
        self.session: ort.InferenceSession | None = ort.InferenceSession(
            str(self.graph_path),
            session_options(self._batches.intra),
            providers=["CPUExecutionProvider"],
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        output = self.session.get_outputs()[0]
        self.output = output.name
        #: The last dimension of the output when the graph fixes it (labels, vocabulary).
        self.output_width = output.shape[-1] if isinstance(output.shape[-1], int) else None

    def run(
        self,
        ids: Sequence[Sequence[int]],
        type_ids: Sequence[Sequence[int]] | None = None,
        *,
        batch_size: int | None = None,
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """(rows, outputs) per batch, in the planner's order: ``rows`` are
        the positions in ``ids`` of the batch's outputs."""
        if self.session is None:
            raise RuntimeError("this model was closed; load it again")
        plan = BatchPlan(
            [list(s) for s in ids],
            token_budget=self.token_budget,
            max_batch_size=int(batch_size or self.max_batch_size),
            pad_id=self.pad_id,
            batch_overhead=self.batch_overhead,
        )
        yield from self._batches.map(functools.partial(self._one, plan, type_ids), len(plan))

    def _one(
        self, plan: BatchPlan, type_ids: Sequence[Sequence[int]] | None, k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        rows, ids, mask, types = plan.batch(k)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            if type_ids is not None:
                types = np.zeros_like(ids)
                for j, row in enumerate(rows.tolist()):
                    t = type_ids[row]
                    types[j, : len(t)] = t
            feeds["token_type_ids"] = types
        assert self.session is not None
        out = self.session.run([self.output], feeds)[0]
        return rows, np.asarray(out, dtype=np.float32)

    @property
    def memory_bytes(self) -> int:
        """The graph and the weights it maps."""
        size = self.graph_path.stat().st_size
        weights = linked_weights(self.graph_path)
        return int(size + (weights.stat().st_size if weights.is_file() else 0))

    def close(self) -> None:
        self._batches.close()
        self.session = None


class TaskModel:
    """What a loaded reranker or SPLADE encoder shares: its folder and where
    it came from, the length limit, the tokenizer, and the head runner."""

    folder: TaskFolder
    model_id: str
    revision: str | None
    max_length: int
    graph_path: Path
    _tokenizer: Any
    _runner: HeadRunner

    def _open_folder(
        self, folder: TaskFolder, model_id: str | None, max_length: int | None, st_max: Any
    ) -> int:
        """Reads who the model is and opens its tokenizer at ``max_length``
        (else the folder's limit, ``st_max`` being sentence-transformers'
        ``max_seq_length``); returns the padding id."""
        self.folder = folder
        self.model_id = model_id or folder.model_id
        self.revision = folder.revision
        self.max_length = int(max_length or folder.max_length(st_max))
        self._tokenizer, pad_id = open_tokenizer(folder, self.max_length)
        return pad_id

    def _start_runner(
        self, variant: str, build: Callable[..., Any], pad_id: int, options: HeadOptions
    ) -> None:
        self._runner = HeadRunner(
            self.folder, variant=variant, build=build, pad_id=pad_id, options=options
        )
        self.graph_path = self._runner.graph_path

    @property
    def memory_bytes(self) -> int:
        """Estimated resident size: the weights plus the tokenizer."""
        return self._runner.memory_bytes + self.folder.tokenizer_path.stat().st_size * 4

    def close(self) -> None:
        """Releases the session and worker threads; the model is unusable after."""
        self._runner.close()
