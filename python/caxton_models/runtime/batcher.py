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

:class:`CallMerger` is what ``Embedder.aembed`` uses: no queue limit and no
waiting. A drain thread runs whatever is pending as one ``embed`` call (which
cuts it into token-budget batches, one per core); what arrives meanwhile forms
the next call. A lone request runs at once, so its latency is that of a plain
``embed``, while a burst of callers is merged into few large calls. Results
reach each event loop in one wake-up per batch, not one per caller.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from caxton_models.config import EmbeddingConfig
from caxton_models.errors import BackpressureError, ConfigError

__all__ = ["BatcherClosed", "CallMerger", "DynamicBatcher", "merger_for"]

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


# ---------------------------------------------------------------------- CallMerger


@dataclass
class _Call:
    texts: list[str]
    key: tuple[str, bool | None]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[FloatArray]


def _deliver(outcomes: list[tuple[asyncio.Future[FloatArray], Any, bool]]) -> None:
    """Runs on the callers' event loop: one wake-up hands out a whole batch."""
    for fut, value, failed in outcomes:
        if fut.done():  # the caller gave up (cancelled) meanwhile
            continue
        if failed:
            fut.set_exception(value)
        else:
            fut.set_result(value)


class CallMerger:
    """Merges concurrent ``await merger.embed(texts)`` calls into few
    ``embed`` calls, without waiting for more to arrive.

    One drain thread runs at a time: it takes every pending request with the
    key (kind, normalize) of the oldest one, up to ``max_texts`` texts, embeds
    them in one call and hands each caller its rows; then it takes what came
    in meanwhile. It lingers ``linger_s`` for new work, then exits, so an idle
    merger holds no thread (and nothing keeps its embedder alive).
    """

    def __init__(
        self,
        embed: Callable[..., FloatArray],
        *,
        max_texts: int = 1024,
        linger_s: float = 0.5,
    ) -> None:
        if max_texts < 1:
            raise ConfigError(f"max_texts must be at least 1 (got {max_texts})", key="embedding")
        self._embed = embed
        self.max_texts = max_texts
        self.linger_s = linger_s
        self._pending: collections.deque[_Call] = collections.deque()
        self._cond = threading.Condition()
        self._draining = False
        self.calls_run = 0
        self.texts_run = 0

    async def embed(
        self, texts: list[str], *, kind: str = "passage", normalize: bool | None = None
    ) -> FloatArray:
        """Queues ``texts`` (validated by the caller: a bad text would fail
        everyone merged with it) and waits for their rows."""
        loop = asyncio.get_running_loop()
        call = _Call(list(texts), (kind, normalize), loop, loop.create_future())
        with self._cond:
            self._pending.append(call)
            if self._draining:
                self._cond.notify()
                start = False
            else:
                self._draining = start = True
        if start:
            threading.Thread(target=self._drain, name="caxton-merger", daemon=True).start()
        return await call.future

    def _take(self) -> list[_Call] | None:
        """The next batch, or None when the thread should exit. Holds the lock."""
        with self._cond:
            if not self._pending:
                self._cond.wait(self.linger_s)
            if not self._pending:
                self._draining = False
                return None
            key = self._pending[0].key
            batch: list[_Call] = []
            count = 0
            rest: list[_Call] = []
            while self._pending and count < self.max_texts:
                call = self._pending.popleft()
                if call.future.cancelled():
                    continue
                if call.key != key or (batch and count + len(call.texts) > self.max_texts):
                    rest.append(call)
                    continue
                batch.append(call)
                count += len(call.texts)
            self._pending.extendleft(reversed(rest))
            return batch

    def _drain(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Call]) -> None:
        texts = [t for c in batch for t in c.texts]
        kind, normalize = batch[0].key
        outcomes: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        try:
            vecs = self._embed(texts, kind=kind, normalize=normalize)
        except BaseException as e:  # every caller of the batch gets the error
            for c in batch:
                outcomes.setdefault(c.loop, []).append((c.future, e, True))
        else:
            start = 0
            for c in batch:
                outcomes.setdefault(c.loop, []).append(
                    (c.future, vecs[start : start + len(c.texts)], False)
                )
                start += len(c.texts)
            self.calls_run += 1
            self.texts_run += len(texts)
        for loop, items in outcomes.items():
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, items)


_mergers: weakref.WeakKeyDictionary[Any, CallMerger] = weakref.WeakKeyDictionary()
_mergers_lock = threading.Lock()


def merger_for(embedder: Any, *, max_texts: int = 1024) -> CallMerger:
    """The one CallMerger of ``embedder`` (created on first use). It holds
    the embedder only through a weak reference, so it never keeps it alive."""
    with _mergers_lock:
        merger = _mergers.get(embedder)
        if merger is None:
            ref = weakref.WeakMethod(embedder.embed)

            def embed(texts: list[str], **kw: Any) -> FloatArray:
                fn = ref()
                if fn is None:
                    raise BatcherClosed("the embedder was garbage-collected")
                return fn(texts, **kw)

            merger = _mergers[embedder] = CallMerger(embed, max_texts=max_texts)
        return merger
