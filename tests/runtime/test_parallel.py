"""The batch pool the Embedder and the task heads share: one batch per core
by default, results in the caller's order, threads only when they help."""

from __future__ import annotations

import threading

from caxton_models.runtime._parallel import BatchPool, cpu_count


def test_defaults_to_one_batch_per_core_on_one_thread_each() -> None:
    pool = BatchPool(None, None, name="t")
    assert pool.threads == cpu_count()
    assert pool.parallel_batches == pool.threads
    assert pool.intra == 1


def test_threads_are_split_between_the_batches_in_flight() -> None:
    pool = BatchPool(8, 2, name="t")
    assert (pool.threads, pool.parallel_batches, pool.intra) == (8, 2, 4)
    assert BatchPool(2, 8, name="t").intra == 1  # never below one thread


def test_map_keeps_the_order_and_runs_on_the_pool_threads() -> None:
    pool = BatchPool(2, 2, name="caxton-test")
    names: list[str] = []

    def run(k: int) -> int:
        names.append(threading.current_thread().name)
        return k * k

    assert list(pool.map(run, 5)) == [0, 1, 4, 9, 16]
    assert all(n.startswith("caxton-test") for n in names)
    pool.close()
    # Closed, it starts afresh when used again (the Embedder reopens nothing,
    # but a close must not leave a dead executor behind).
    assert list(pool.map(run, 3)) == [0, 1, 4]
    pool.close()


def test_one_batch_or_one_lane_runs_on_the_callers_thread() -> None:
    me = threading.current_thread().name
    seen: list[str] = []

    def run(k: int) -> int:
        seen.append(threading.current_thread().name)
        return k

    assert list(BatchPool(2, 2, name="t").map(run, 1)) == [0]
    assert list(BatchPool(4, 1, name="t").map(run, 3)) == [0, 1, 2]
    assert seen == [me] * 4
