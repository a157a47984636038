"""Management work for asyncio callers: run on a worker thread, so the event
loop keeps running, and cancellable like Ctrl-C (the transfer stops, its
parts are kept for a resume)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


class _Cancelled(KeyboardInterrupt):
    """An asyncio caller cancelled: raised from the core's progress tick, it
    stops the transfer as Ctrl-C does (parts kept, no other endpoint tried)."""


class _Tick:
    """The progress callback of a download run off the event loop: forwards
    to the caller's, and raises once the awaiting task was cancelled."""

    def __init__(self, progress: Callable[[int], object] | None) -> None:
        self.cancelled = threading.Event()
        self._progress = progress
        plan = getattr(progress, "plan", None)
        if plan is not None:
            self.plan = plan

    def __call__(self, delta: int) -> object:
        if self.cancelled.is_set():
            raise _Cancelled("the awaiting task was cancelled")
        return self._progress(delta) if self._progress is not None else None


async def off_loop(work: Callable[[_Tick], _T], progress: Callable[[int], object] | None) -> _T:
    """Runs ``work`` on the default executor. When the awaiting task is
    cancelled, the transfer is stopped and awaited before the cancel goes on,
    so no download keeps running unseen."""
    import asyncio  # lazy: only asyncio callers pay for it

    tick = _Tick(progress)
    future = asyncio.get_running_loop().run_in_executor(None, work, tick)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        tick.cancelled.set()
        with contextlib.suppress(BaseException):
            await future
        raise
