"""Dynamic batching for many concurrent callers (the spec's ``embedding`` block).

Many small requests (one query per web request, say) each pay the fixed cost
of a model call. The batcher queues them and merges what arrives within
``max_batch_wait_ms`` of the first (up to ``max_batch_size`` texts) into one
padding-aware ``embed`` call, then hands each caller its own rows.

The queue holds at most ``queue_size`` requests. When it is full, ``submit``
raises :class:`~caxton_models.errors.BackpressureError` (``on_full="raise"``)
or waits for room (``on_full="wait"``, optionally bounded by
``put_timeout_s``, after which it raises). ``parallel_batches`` workers
assemble and run batches concurrently.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from caxton_models.config import EmbeddingConfig
from caxton_models.errors import BackpressureError, ConfigError

__all__ = ["BatcherClosed", "DynamicBatcher"]

FloatArray = npt.NDArray[np.float32]


class _Embeds(Protocol):
    def embed(self, texts: list[str], *, kind: Any = ..., normalize: Any = ...) -> FloatArray: ...


class BatcherClosed(RuntimeError):
    """The batcher was closed before this request ran."""


@dataclass
class _Request:
    texts: list[str]
    key: tuple[str, bool | None]  # requests merge only with the same kind/normalize
    future: Future[FloatArray] = field(default_factory=Future)


_STOP = object()


class DynamicBatcher:
    def __init__(
        self,
        embedder: _Embeds,
        *,
        max_batch_size: int = 256,
        max_batch_wait_ms: float = 100.0,
        queue_size: int = 1000,
        parallel_batches: int = 2,
        on_full: Literal["raise", "wait"] = "raise",
        put_timeout_s: float | None = None,
    ) -> None:
        if queue_size < 1 or max_batch_size < 1 or parallel_batches < 1:
            raise ConfigError(
                "queue_size, max_batch_size and parallel_batches must be at least 1 "
                f"(got {queue_size}, {max_batch_size}, {parallel_batches})",
                key="embedding",
            )
        if on_full not in ("raise", "wait"):
            raise ConfigError(f"on_full must be 'raise' or 'wait', not {on_full!r}", key="on_full")
        self.embedder = embedder
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_ms / 1000.0
        self.queue_size = queue_size
        self.on_full = on_full
        self.put_timeout_s = put_timeout_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._close_lock = threading.Lock()
        self.batches_run = 0
        self.texts_run = 0
        self._stats_lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._work, name=f"caxton-batcher-{i}", daemon=True)
            for i in range(parallel_batches)
        ]
        for w in self._workers:
            w.start()

    @classmethod
    def from_config(
        cls, embedder: _Embeds, config: EmbeddingConfig | None = None, **overrides: Any
    ) -> DynamicBatcher:
        """A batcher with the defaults of caxton.yaml's ``embedding:`` block
        (``config``, else the file :func:`~caxton_models.config.load_config`
        finds): ``batch_size`` texts per model call, ``max_batch_wait_ms``,
        ``queue_size``, ``parallel_batches`` workers ('auto': 2).
        ``overrides`` are this class's own keywords and win."""
        if config is None:
            from caxton_models.config import load_config

            config = load_config().embedding
        kwargs: dict[str, Any] = {
            "max_batch_size": config.batch_size,
            "max_batch_wait_ms": float(config.max_batch_wait_ms),
            "queue_size": config.queue_size,
            "parallel_batches": config.parallel_batches or 2,
        }
        kwargs.update(overrides)
        return cls(embedder, **kwargs)

    # ------------------------------------------------------------------ callers

    def submit(
        self,
        texts: Sequence[str] | str,
        *,
        kind: str = "passage",
        normalize: bool | None = None,
    ) -> Future[FloatArray]:
        """Queues texts; the future resolves to their (n, dim) embeddings."""
        if self._closed:
            raise BatcherClosed("the batcher is closed: create a new one")
        if isinstance(texts, str):
            texts = [texts]
        req = _Request(list(texts), (kind, normalize))
        if not req.texts:
            req.future.set_result(np.empty((0, 0), dtype=np.float32))
            return req.future
        try:
            if self.on_full == "raise":
                self._queue.put_nowait(req)
            else:
                self._queue.put(req, timeout=self.put_timeout_s)
        except queue.Full:
            raise BackpressureError(
                f"embedding queue is full ({self.queue_size} requests waiting): retry later, "
                "raise embedding.queue_size, or set on_full='wait'",
                queue_size=self.queue_size,
            ) from None
        return req.future

    def embed(
        self,
        texts: Sequence[str] | str,
        *,
        kind: str = "passage",
        normalize: bool | None = None,
        timeout: float | None = None,
    ) -> FloatArray:
        """Blocking: queue, wait, return this caller's rows."""
        return self.submit(texts, kind=kind, normalize=normalize).result(timeout)

    async def aembed(
        self, texts: Sequence[str] | str, *, kind: str = "passage", normalize: bool | None = None
    ) -> FloatArray:
        """Awaitable; never blocks the event loop (a full queue in ``wait``
        mode is waited for on a worker thread)."""
        if self.on_full == "wait":
            loop = asyncio.get_running_loop()
            fut = await loop.run_in_executor(
                None, lambda: self.submit(texts, kind=kind, normalize=normalize)
            )
        else:
            fut = self.submit(texts, kind=kind, normalize=normalize)
        return await asyncio.wrap_future(fut)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------------ workers

    def _collect(self, first: _Request) -> tuple[list[_Request], Any]:
        """Gathers requests with first's key until the batch is full or the
        wait is over. Returns the batch and a request that did not fit (or
        _STOP), which opens the next batch."""
        batch = [first]
        count = len(first.texts)
        deadline = time.monotonic() + self.max_batch_wait_s
        while count < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                nxt = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return batch, None
            if nxt is _STOP or nxt.key != first.key or count + len(nxt.texts) > self.max_batch_size:
                return batch, nxt
            batch.append(nxt)
            count += len(nxt.texts)
        return batch, None

    def _run(self, batch: list[_Request]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        texts = [t for r in live for t in r.texts]
        kind, normalize = live[0].key
        try:
            vecs = self.embedder.embed(texts, kind=kind, normalize=normalize)
        except BaseException as e:
            for r in live:
                r.future.set_exception(e)
            return
        start = 0
        for r in live:
            r.future.set_result(vecs[start : start + len(r.texts)])
            start += len(r.texts)
        with self._stats_lock:
            self.batches_run += 1
            self.texts_run += len(texts)

    def _work(self) -> None:
        carry: Any = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is _STOP:
                return
            batch, carry = self._collect(item)
            self._run(batch)
            if carry is _STOP:
                return

    # ------------------------------------------------------------------ shutdown

    def close(self, *, cancel_pending: bool = False) -> None:
        """Stops the workers. Queued requests run first unless
        ``cancel_pending``, in which case they fail with BatcherClosed."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if cancel_pending:
            while True:
                try:
                    req = self._queue.get_nowait()
                except queue.Empty:
                    break
                if req is not _STOP and req.future.set_running_or_notify_cancel():
                    req.future.set_exception(BatcherClosed("the batcher was closed"))
        for _ in self._workers:
            self._queue.put(_STOP)
        for w in self._workers:
            w.join()

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
