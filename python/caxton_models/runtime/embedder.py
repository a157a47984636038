"""Sentence embeddings in-process with ONNX Runtime.

Texts are tokenized in one ``encode_batch`` call, the Rust core sorts them by
length and cuts batches under a budget of padded tokens (so short texts share
big batches and long ones small batches, with almost no padding), one batch
per core runs on ONNX Runtime with its graph optimisations applied (once,
kept in the store's graph cache), and pooling plus L2 normalisation write
each row straight into its caller-order slot. A model that ships only
``model.safetensors`` gets its graph built from ``config.json`` and the
mapped weights (:mod:`caxton_models.runtime.graph`), with no torch.

Everything about a model is read from its own files, as sentence-transformers
does: ``modules.json`` (is there a Normalize module, where is the Pooling
module), ``1_Pooling/config.json`` (the pooling mode),
``sentence_bert_config.json`` (``max_seq_length``), ``config.json`` and
``tokenizer.json``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from caxton_models._core import BatchPlan, pool_into
from caxton_models.errors import InvalidArgument
from caxton_models.runtime._encode import EncodeMixin
from caxton_models.runtime._feeds import GraphFeeds, output_name
from caxton_models.runtime._graphchoice import GraphChoice
from caxton_models.runtime._loadfail import open_session
from caxton_models.runtime._modelconfig import ModelConfig
from caxton_models.runtime._parallel import BatchPool, session_options
from caxton_models.runtime._prompts import check_dimensions, prompt_length
from caxton_models.runtime._validation import ModelValidation, check_runtime, rss_bytes
from caxton_models.runtime.graph import dense_forward
from caxton_models.store import read_installed

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = [
    "Embedder",
    "ModelConfig",
    "ModelValidation",
    "rss_bytes",
    "validate_runtime",
]

log = logging.getLogger(__name__)

Kind = Literal["passage", "query"]
FloatArray = npt.NDArray[np.float32]

#: Padded tokens per batch. Each core runs its own batch (see
#: ``parallel_batches``), so a small budget keeps every core's GEMMs in cache
#: and bounds memory: with one batch per core, 512 ran 10-15% faster than one
#: 2048-token batch split across both cores (2-core machine, MiniLM), and
#: two 512-token batches in flight hold less than one of 2048.
DEFAULT_TOKEN_BUDGET = 512
#: Rows per batch at most, whatever the budget (very short texts).
DEFAULT_MAX_BATCH = 256
#: Fixed cost of one model call, in padded-token equivalents: the batch
#: planner splits a batch only when the padding it saves outweighs this.
#: Measured on 2 cores (PyPI summaries): 16 gave 0.4% padding but many small
#: batches; 256 gave ~4% padding and the best throughput (small GEMMs waste
#: more than a little padding does).
DEFAULT_BATCH_OVERHEAD = 256
#: Texts per chunk in embed_iter: bounds memory for arbitrarily long streams.
DEFAULT_CHUNK = 4096
_PARITY_TEXTS = (
    "Hello world",
    "A fast, correct embedding runtime for sentence-transformers models.",
    "The quick brown fox jumps over the lazy dog " * 12,
    "x",
)


class Embedder(EncodeMixin):
    """A loaded embedding model. Thread-safe: ``embed`` may be called from
    many threads at once (ONNX Runtime and the tokenizer are re-entrant).
    ``encode`` / ``encode_query`` / ``encode_document`` are
    sentence-transformers' (:mod:`caxton_models.runtime._encode`)."""

    #: Dense vectors; ``load()``'s keyword-only stand-in says True (caxton_models.keyword).
    degraded: bool = False

    def __init__(
        self,
        config: ModelConfig,
        *,
        model_id: str | None = None,
        prefixes: Mapping[str, str] | None = None,
        prompts: Mapping[str, str] | None = None,
        dimensions: int | None = None,
        truncate_dim: int | None = None,
        space: str | None = None,
        threads: int | None = None,
        parallel_batches: int | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        batch_overhead: int = DEFAULT_BATCH_OVERHEAD,
        optimize: bool = True,
        quantize: bool = False,
        max_sequence_length: int | None = None,
        graph_cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        t0 = time.perf_counter()
        self.config = config
        extra = dict(config.extra)
        installed = read_installed(config.model_dir)
        meta = installed.metadata if installed is not None else None
        self.model_id: str = (
            model_id or extra.get("model_id") or (meta.model_id if meta else None)
            or config.model_dir.name
        )  # fmt: skip
        #: The commit the files come from, when the store recorded one.
        self.revision: str | None = meta.commit if meta else None
        self.space: str = space or extra.get("space") or self.model_id
        # The model's own prompts; caxton.json's, the registry's prefixes
        # (e5-style "query: "/"passage: ") and the caller's win, in that order.
        self.prompts = config.prompts.merged(extra.get("prefixes")).merged(prefixes).merged(prompts)
        #: What embed(kind=...) prepends: one dict lookup per call.
        self._kind_prompt = {k: self.prompts.for_kind(k) or "" for k in ("query", "passage")}
        self._prompt_skip: dict[str, int] = {}
        self.max_sequence_length: int = int(max_sequence_length or config.max_sequence_length)
        self.pooling = config.pooling
        self.normalizes = config.normalize
        self.token_budget = int(token_budget)
        self.max_batch_size = int(max_batch_size)
        self.batch_overhead = int(batch_overhead)
        self._batches = BatchPool(threads, parallel_batches, name="caxton-embed")
        self.threads = self._batches.threads
        self.parallel_batches = self._batches.parallel_batches

        # The tokenizer parses on another thread while ONNX Runtime builds the
        # session (both release the GIL): about 0.15 s off a cold start.
        choice = GraphChoice(
            config, optimize, quantize, Path(graph_cache_dir) if graph_cache_dir else None
        )
        with ThreadPoolExecutor(1) as tok_pool:
            tok_future = tok_pool.submit(Tokenizer.from_file, str(config.tokenizer_path))
            graph = choice.ready()
            if graph is None:  # a graph to build first; its parity check needs the tokenizer
                self._set_tokenizer(tok_future.result())
                graph = choice.prepare(self._graphs_agree)
            self.graph_path = graph
            self._session = open_session(
                graph,
                session_options(self._batches.intra, extra.get("session_config")),
                model_dir=config.model_dir,
            )
            self._set_tokenizer(tok_future.result())
        self._feeds = GraphFeeds(
            self._session.get_inputs(), left_padding=self._left_padding, where=str(graph)
        )
        self._output = output_name(self._session.get_outputs())
        #: What the model makes; ``dimensions`` is what embed() returns.
        self.full_dimensions: int = int(config.dimensions or self._probe_dimensions())
        self.dimensions: int = self._check_dimensions(dimensions or truncate_dim)
        self._stats_lock = threading.Lock()
        self.stats = {"texts": 0, "tokens": 0, "padded_tokens": 0, "batches": 0}
        self.load_time_ms = (time.perf_counter() - t0) * 1000.0
        self.quantized = quantize or bool(extra.get("quantized", False))

    # -------------------------------------------------------------- construction

    def _set_tokenizer(self, tok: Any) -> None:
        side = self.config.padding_side or (tok.padding or {}).get("direction", "right")
        self._left_padding = side == "left"
        tok.no_padding()
        tok.enable_truncation(self.max_sequence_length)
        pad = tok.token_to_id("[PAD]")
        if pad is None:
            pad = tok.token_to_id("<pad>")
        self._pad_id = int(pad or 0)
        self._tokenizer = tok

    @classmethod
    def from_dir(
        cls,
        path: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        prefixes: Mapping[str, str] | None = None,
        space: str | None = None,
        onnx_file: str | None = None,
        **kwargs: Any,
    ) -> Embedder:
        """Loads a folder in the Hub layout (onnx/model.onnx or model.onnx,
        tokenizer.json, 1_Pooling/config.json, modules.json)."""
        return cls(
            ModelConfig.read(path, onnx_file),
            model_id=model_id,
            prefixes=prefixes,
            space=space,
            **kwargs,
        )

    def _graphs_agree(self, a: Path, b: Path, min_cos: float) -> bool:
        outs = []
        for g in (a, b):
            import onnxruntime as ort

            sess = ort.InferenceSession(
                str(g), session_options(1), providers=["CPUExecutionProvider"]
            )
            outs.append(self._embed_with(sess, list(_PARITY_TEXTS)))
        cos = (outs[0] * outs[1]).sum(axis=1)
        return bool(cos.min() >= min_cos)

    def _probe_dimensions(self) -> int:
        return int(self._embed_with(self._session, ["Hello world"]).shape[1])

    def _embed_with(self, sess: ort.InferenceSession, texts: list[str]) -> FloatArray:
        """Embeds with a given session (for checking one graph against another)."""
        make_feeds = GraphFeeds(sess.get_inputs(), left_padding=self._left_padding)
        output = output_name(sess.get_outputs())
        enc = self._tokenizer.encode_batch(texts)
        plan = BatchPlan([e.ids for e in enc], token_budget=1 << 30, pad_id=self._pad_id)
        out: FloatArray | None = None
        for k in range(len(plan)):
            rows, ids, mask, types = plan.batch(k)
            feeds, mask = make_feeds(ids, mask, types)
            h = sess.run([output], feeds)[0]
            if out is None:
                out = np.zeros((len(texts), self._out_width(h)), np.float32)
            self._pool_rows(h, mask, rows, out, normalize=True)
        assert out is not None
        return out

    # -------------------------------------------------------------- embedding

    def _out_width(self, hidden: npt.NDArray[Any]) -> int:
        dense = self.config.dense
        return dense[-1].out_features if dense else int(hidden.shape[-1])

    def _pool_rows(
        self,
        hidden: npt.NDArray[Any],
        mask: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
        out: FloatArray,
        *,
        normalize: bool,
        skip: int = 0,
    ) -> None:
        """Pool a batch's token vectors into ``out[rows]``: in the core when
        pooling is all there is, else pooled, through the Dense modules, then
        normalised here. ``skip``: leading columns left out of the pooling
        (the prompt, when the Pooling config says ``include_prompt: false``)."""
        dense = self.config.dense
        if skip:
            mask = mask.copy()
            mask[:, :skip] = 0
        if hidden.ndim == 3 and not dense:
            pool_into(hidden, mask, rows, out, mode=self.pooling, normalize=normalize)
            return
        if hidden.ndim == 3:  # pool in place order, then project
            vec = np.empty((len(rows), hidden.shape[-1]), np.float32)
            order = np.arange(len(rows), dtype=np.int64)
            pool_into(hidden, mask, order, vec, mode=self.pooling, normalize=False)
            vec = dense_forward(dense, vec)
        else:  # the graph pools by itself
            vec = np.asarray(hidden, dtype=np.float32)
        if normalize:
            vec = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        out[rows] = vec

    @property
    def prefixes(self) -> dict[str, str]:
        """What ``kind="query"`` and ``kind="passage"`` prepend."""
        return dict(self._kind_prompt)

    def _prompt(self, kind: str, prompt_name: str | None, prompt: str | None) -> tuple[str, int]:
        """(the text to prepend, prompt tokens to leave out of the pooling)."""
        if prompt is None and prompt_name is None:
            text = self._kind_prompt.get(kind)
            if text is None:
                raise InvalidArgument(f"kind must be 'passage' or 'query', not {kind!r}")
        else:
            text = self.prompts.resolve(prompt_name, prompt) or ""
        if not text or self.config.include_prompt:
            return text, 0
        skip = self._prompt_skip.get(text)
        if skip is None:
            skip = self._prompt_skip[text] = prompt_length(self._tokenizer, text)
        return text, skip

    def _check_dimensions(self, dimensions: int | None) -> int:
        return check_dimensions(self.model_id, self.full_dimensions, dimensions)

    def _run_batch(
        self, plan: BatchPlan, k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[np.int64]]:
        rows, ids, mask, types = plan.batch(k)
        feeds, mask = self._feeds(ids, mask, types)
        hidden = self._session.run([self._output], feeds)[0]
        return rows, hidden, mask

    def embed(
        self,
        texts: Sequence[str] | str,
        *,
        kind: Kind = "passage",
        normalize: bool | None = None,
        batch_size: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        dimensions: int | None = None,
    ) -> FloatArray:
        """Embeds ``texts`` into a float32 array of shape (n, dimensions), in
        the caller's order. ``normalize=None`` follows the model's files (a
        Normalize module in modules.json); ``batch_size`` caps rows per batch
        (the token budget still applies). The prompt prepended is ``prompt``,
        else the model's prompt ``prompt_name``, else the one for ``kind``
        (see :mod:`caxton_models.runtime._prompts`). ``dimensions`` keeps the
        first N (Matryoshka), re-normalised when the vectors are."""
        text, skip = self._prompt(kind, prompt_name, prompt)
        dims = self.dimensions if dimensions is None else self._check_dimensions(dimensions)
        norm = self.normalizes if normalize is None else bool(normalize)
        out = self._embed(texts, text, skip, norm, batch_size)
        if dims < out.shape[1]:
            out = np.ascontiguousarray(out[:, :dims])
            if norm:
                out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out

    def _embed(
        self,
        texts: Sequence[str] | str,
        prompt: str,
        skip: int,
        norm: bool,
        batch_size: int | None,
    ) -> FloatArray:
        """Full-width vectors of ``prompt + text`` for each text."""
        if isinstance(texts, str):
            texts = [texts]
        n = len(texts)
        if n == 0:
            return np.empty((0, self.full_dimensions), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        prefixed = [prompt + t for t in texts] if prompt else list(texts)
        # Identical texts are embedded once (2.7% of the PyPI corpus repeats).
        first: dict[str, int] = {}
        inverse = np.fromiter(
            (first.setdefault(t, len(first)) for t in prefixed), dtype=np.intp, count=n
        )
        unique = list(first) if len(first) < n else prefixed
        out = np.empty((len(unique), self.full_dimensions), dtype=np.float32)
        enc = self._tokenizer.encode_batch(unique)
        seqs = [e.ids for e in enc]
        plan = BatchPlan(
            seqs,
            token_budget=self.token_budget,
            max_batch_size=int(batch_size or self.max_batch_size),
            pad_id=self._pad_id,
            batch_overhead=self.batch_overhead,
        )
        nb = len(plan)
        for rows, hidden, mask in self._batches.map(functools.partial(self._run_batch, plan), nb):
            self._pool_rows(hidden, mask, rows, out, normalize=norm, skip=skip)
        if len(unique) < n:
            out = out[inverse]
        with self._stats_lock:
            self.stats["texts"] += n
            self.stats["tokens"] += plan.real_tokens
            self.stats["padded_tokens"] += plan.padded_tokens
            self.stats["batches"] += nb
        return out

    def embed_iter(
        self,
        texts: Iterable[str],
        *,
        kind: Kind = "passage",
        normalize: bool | None = None,
        batch_size: int | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        **options: Any,
    ) -> Iterator[FloatArray]:
        """Embeds a stream chunk by chunk (``chunk_size`` texts each), so
        memory stays bounded; yields one (m, dimensions) array per chunk.
        ``options``: embed()'s prompt_name, prompt, dimensions."""

        def call(chunk: list[str]) -> FloatArray:
            return self.embed(
                chunk, kind=kind, normalize=normalize, batch_size=batch_size, **options
            )

        chunk: list[str] = []
        for t in texts:
            chunk.append(t)
            if len(chunk) >= chunk_size:
                yield call(chunk)
                chunk = []
        if chunk:
            yield call(chunk)

    async def aembed(
        self,
        texts: Sequence[str] | str,
        *,
        kind: Kind = "passage",
        normalize: bool | None = None,
        batch_size: int | None = None,
        **options: Any,
    ) -> FloatArray:
        """``embed`` off the event loop. Concurrent calls (a web service
        calling once per request) are merged into few large ``embed`` calls
        by this Embedder's :class:`~caxton_models.runtime.batcher.CallMerger`;
        a lone call runs at once. Large calls, and calls with ``batch_size``
        or ``options`` (embed()'s prompt_name, prompt, dimensions), run on
        their own on a worker thread."""
        import asyncio  # lazy: importing asyncio costs ~0.1 s of startup

        from caxton_models.runtime.batcher import merger_for

        if isinstance(texts, str):
            texts = [texts]
        merger = merger_for(self)
        if batch_size is None and not options and 0 < len(texts) <= merger.max_texts // 4:
            # Checked here: a bad text must fail its own caller, not everyone merged with it.
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
            self._prompt(kind, None, None)  # raises on a bad kind
            return await merger.embed(list(texts), kind=kind, normalize=normalize)
        loop = asyncio.get_running_loop()
        call = functools.partial(
            self.embed, texts, kind=kind, normalize=normalize, batch_size=batch_size, **options
        )
        return await loop.run_in_executor(None, call)

    async def aembed_iter(
        self, texts: Iterable[str], *, kind: Kind = "passage", chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[FloatArray]:
        """Async counterpart of ``embed_iter``."""
        chunk: list[str] = []
        for t in texts:
            chunk.append(t)
            if len(chunk) >= chunk_size:
                yield await self.aembed(chunk, kind=kind)
                chunk = []
        if chunk:
            yield await self.aembed(chunk, kind=kind)

    # -------------------------------------------------------------- bookkeeping

    @property
    def memory_bytes(self) -> int:
        """Estimated resident size: the weights (as loaded) plus the tokenizer."""
        data = self.graph_path.with_name(self.graph_path.name + ".data")
        weights = self.graph_path.stat().st_size + (data.stat().st_size if data.is_file() else 0)
        return int(weights + self.config.tokenizer_path.stat().st_size * 4)

    def close(self) -> None:
        """Releases the session and worker threads; the Embedder is unusable after."""
        self._batches.close()
        self._session = None

    def __repr__(self) -> str:
        return (
            f"Embedder(model_id={self.model_id!r}, dimensions={self.dimensions}, "
            f"max_sequence_length={self.max_sequence_length}, space={self.space!r})"
        )


def validate_runtime(
    path: str | os.PathLike[str], *, expected_dimensions: int | None = None, **kwargs: Any
) -> ModelValidation:
    """The spec's runtime check of the folder ``path``: it loads (``kwargs`` go
    to :meth:`Embedder.from_dir`), embeds "Hello world", has
    ``expected_dimensions``, and what that cost. Never raises for a broken model."""
    return check_runtime(lambda: Embedder.from_dir(path, **kwargs), expected_dimensions)
