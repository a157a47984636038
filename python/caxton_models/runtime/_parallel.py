"""How the runtime spreads batches over cores, shared by the Embedder and the
task heads (rerankers, SPLADE): one batch per core, each on one ORT thread,
sessions tuned for shapes that change every batch, and the worker pool that
runs the batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["BatchPool", "cpu_count", "session_options"]

T = TypeVar("T")


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def session_options(threads: int, config: Mapping[str, str] | None = None) -> ort.SessionOptions:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Shapes change every batch: memory patterns only cost planning time.
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    # Idle worker threads spin-waiting steal the core the other batch runs on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # From caxton.json, e.g. bundled-mini's session.disable_quant_qdq=1, which
    # lets ORT fold its int8 embedding table into float32 once, at load.
    for key, value in (config or {}).items():
        so.add_session_config_entry(str(key), str(value))
    return so


class BatchPool:
    """Batches in flight at once, and the threads ORT gives each.

    One batch per core by default, each on one thread: for these matrix
    sizes ORT's intra-op split (a barrier per operator) costs more than it
    gains, and a single session may run concurrently. The worker threads
    start on the first call with more than one batch. Thread-safe."""

    def __init__(self, threads: int | None, parallel_batches: int | None, *, name: str) -> None:
        self.threads = int(threads or cpu_count())
        self.parallel_batches = max(1, int(parallel_batches or self.threads))
        #: ORT intra-op threads per session run.
        self.intra = max(1, self.threads // self.parallel_batches)
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, run: Callable[[int], T], count: int) -> Iterator[T]:
        """``run(k)`` for k in 0..count-1, in order; in parallel when allowed."""
        if self.parallel_batches > 1 and count > 1:
            return self._executor().map(run, range(count))
        return (run(k) for k in range(count))

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.parallel_batches, thread_name_prefix=self._name
                )
            return self._pool

    def close(self) -> None:
        """Waits for the batches in flight and stops the threads."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
