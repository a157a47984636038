"""The dynamic batcher: merging, per-caller results, backpressure, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from caxton_models.errors import BackpressureError
from caxton_models.runtime.batcher import BatcherClosed, CallMerger, DynamicBatcher, merger_for


class FakeEmbedder:
    """Embeds text t as [len(t), hash of kind]; can be held at a gate."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = False

    def embed(self, texts: Sequence[str], *, kind: str = "passage", **kw: object) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("model exploded")
        self.calls.append((len(texts), kind))
        return np.array([[len(t), kind == "query"] for t in texts], dtype=np.float32)


def test_concurrent_requests_are_merged_and_split_back():
    fake = FakeEmbedder()
    with DynamicBatcher(fake, max_batch_wait_ms=200, max_batch_size=1000, parallel_batches=1) as b:
        barrier = threading.Barrier(20)

        def call(i: int) -> np.ndarray:
            barrier.wait()
            return b.embed(["x" * (i + 1)] * (i % 3 + 1))

        with ThreadPoolExecutor(20) as ex:
            outs = list(ex.map(call, range(20)))
    for i, o in enumerate(outs):
        assert o.shape == (i % 3 + 1, 2) and (o[:, 0] == i + 1).all()
    assert len(fake.calls) < 20  # merged
    assert sum(n for n, _ in fake.calls) == sum(i % 3 + 1 for i in range(20))


def test_requests_with_different_kinds_are_not_merged():
    fake = FakeEmbedder()
    with DynamicBatcher(fake, max_batch_wait_ms=100, parallel_batches=1) as b:
        fq = b.submit(["q"], kind="query")
        fp = b.submit(["p"], kind="passage")
        assert fq.result(5)[0, 1] == 1.0 and fp.result(5)[0, 1] == 0.0
    assert sorted(k for _, k in fake.calls) == ["passage", "query"]


def test_max_batch_size_caps_a_batch():
    fake = FakeEmbedder()
    fake.gate.clear()
    with DynamicBatcher(fake, max_batch_size=4, max_batch_wait_ms=50, parallel_batches=1) as b:
        first = b.submit(["a"])
        fake.entered.wait(5)  # the worker is busy: the rest queue up
        futs = [b.submit(["t", "t"]) for _ in range(4)]
        fake.gate.set()
        first.result(5)
        for f in futs:
            assert f.result(5).shape == (2, 2)
    assert max(n for n, _ in fake.calls) <= 4


def test_full_queue_raises_backpressure_error():
    fake = FakeEmbedder()
    fake.gate.clear()
    b = DynamicBatcher(fake, queue_size=2, max_batch_wait_ms=0, parallel_batches=1)
    running = b.submit(["busy"])
    fake.entered.wait(5)
    queued = [b.submit(["q1"]), b.submit(["q2"])]
    with pytest.raises(BackpressureError, match="queue is full") as err:
        b.submit(["overflow"])
    assert getattr(err.value, "queue_size", None) == 2
    fake.gate.set()
    assert running.result(5).shape == (1, 2)
    assert all(f.result(5).shape == (1, 2) for f in queued)
    b.close()


def test_full_queue_waits_when_configured():
    fake = FakeEmbedder()
    fake.gate.clear()
    b = DynamicBatcher(fake, queue_size=1, max_batch_wait_ms=0, parallel_batches=1, on_full="wait")
    b.submit(["busy"])
    fake.entered.wait(5)
    b.submit(["q1"])
    got: list[np.ndarray] = []
    t = threading.Thread(target=lambda: got.append(b.embed(["waits"])))
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and not got  # blocked on the full queue, not failed
    fake.gate.set()
    t.join(5)
    assert got and got[0].shape == (1, 2)
    b.close()


def test_wait_mode_with_timeout_gives_backpressure_error():
    fake = FakeEmbedder()
    fake.gate.clear()
    b = DynamicBatcher(
        fake,
        queue_size=1,
        max_batch_wait_ms=0,
        parallel_batches=1,
        on_full="wait",
        put_timeout_s=0.1,
    )
    b.submit(["busy"])
    fake.entered.wait(5)
    b.submit(["q1"])
    with pytest.raises(BackpressureError):
        b.submit(["late"])
    fake.gate.set()
    b.close()


def test_model_errors_reach_every_caller_in_the_batch():
    fake = FakeEmbedder()
    fake.fail = True
    with DynamicBatcher(fake, max_batch_wait_ms=50) as b:
        futs = [b.submit([f"t{i}"]) for i in range(3)]
        for f in futs:
            with pytest.raises(RuntimeError, match="exploded"):
                f.result(5)


def test_close_runs_queued_work_or_cancels_it():
    fake = FakeEmbedder()
    fake.gate.clear()
    b = DynamicBatcher(fake, max_batch_wait_ms=0, parallel_batches=1)
    b.submit(["busy"])
    fake.entered.wait(5)
    pending = b.submit(["pending"])
    threading.Timer(0.1, fake.gate.set).start()
    b.close(cancel_pending=True)
    with pytest.raises(BatcherClosed):
        pending.result(5)
    with pytest.raises(BatcherClosed):
        b.submit(["after close"])


def test_aembed_from_many_tasks():
    fake = FakeEmbedder()

    async def main() -> list[np.ndarray]:
        with DynamicBatcher(fake, max_batch_wait_ms=20) as b:
            return await asyncio.gather(*(b.aembed(["y" * i]) for i in range(1, 50)))

    outs = asyncio.run(main())
    assert [float(o[0, 0]) for o in outs] == list(range(1, 50))
    assert len(fake.calls) < 49


def test_batcher_over_the_real_model(minilm_dir, graph_cache_dir):
    from caxton_models.runtime.embedder import Embedder

    emb = Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir)
    texts = [f"sentence number {i}" for i in range(40)]
    with DynamicBatcher(emb, max_batch_wait_ms=20) as b, ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda t: b.embed([t]), texts))
    np.testing.assert_allclose(np.concatenate(outs), emb.embed(texts), atol=2e-5)


# ---------------------------------------------------------------- CallMerger (aembed)


def test_merger_merges_a_burst_and_hands_each_caller_its_rows():
    fake = FakeEmbedder()
    fake.gate.clear()  # hold the first call so the burst piles up behind it
    merger = CallMerger(fake.embed)

    async def main() -> list[np.ndarray]:
        tasks = [asyncio.ensure_future(merger.embed(["y" * i])) for i in range(1, 101)]
        await asyncio.sleep(0.05)
        fake.gate.set()
        return await asyncio.gather(*tasks)

    outs = asyncio.run(main())
    assert [float(o[0, 0]) for o in outs] == list(range(1, 101))
    assert all(o.shape == (1, 2) for o in outs)
    # The first call ran alone (no waiting); the other 99 came as one batch.
    assert [n for n, _ in fake.calls] == [1, 99]
    assert merger.calls_run == 2 and merger.texts_run == 100


def test_merger_caps_texts_per_call_and_keeps_kinds_apart():
    fake = FakeEmbedder()
    fake.gate.clear()
    merger = CallMerger(fake.embed, max_texts=10)

    async def main() -> list[np.ndarray]:
        tasks = [
            asyncio.ensure_future(merger.embed(["q" * i], kind="query" if i % 2 else "passage"))
            for i in range(1, 42)
        ]
        await asyncio.sleep(0.05)
        fake.gate.set()
        return await asyncio.gather(*tasks)

    outs = asyncio.run(main())
    for i, o in enumerate(outs, start=1):
        assert o[0, 0] == i and o[0, 1] == float(i % 2)
    assert all(n <= 10 for n, _ in fake.calls)
    assert sum(n for n, _ in fake.calls) == 41


def test_merger_errors_reach_every_caller_of_the_batch_and_it_recovers():
    fake = FakeEmbedder()
    fake.fail = True
    merger = CallMerger(fake.embed)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(merger.embed(["z"]) for _ in range(5)), return_exceptions=True
        )

    outs = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) and "exploded" in str(o) for o in outs)
    fake.fail = False
    assert asyncio.run(merger.embed(["ok"]))[0, 0] == 2


def test_merger_skips_cancelled_callers_and_serves_several_event_loops():
    fake = FakeEmbedder()
    fake.gate.clear()
    merger = CallMerger(fake.embed)

    async def cancelled_then_one() -> np.ndarray:
        first = asyncio.ensure_future(merger.embed(["first"]))
        gone = asyncio.ensure_future(merger.embed(["cancelled"]))
        await asyncio.sleep(0.02)
        gone.cancel()
        fake.gate.set()
        await first
        return await merger.embed(["abc"])

    def other_loop() -> np.ndarray:
        return asyncio.run(merger.embed(["four"]))

    with ThreadPoolExecutor(1) as ex:
        out = asyncio.run(cancelled_then_one())
        assert ex.submit(other_loop).result(10)[0, 0] == 4
    assert out[0, 0] == 3
    assert 9 not in [n for n, _ in fake.calls]  # "cancelled" (9 chars) never ran
    assert sum(n for n, _ in fake.calls) == 3


def test_merger_thread_exits_when_idle():
    fake = FakeEmbedder()
    merger = CallMerger(fake.embed, linger_s=0.01)
    asyncio.run(merger.embed(["a"]))
    deadline = time.monotonic() + 5
    while any(t.name == "caxton-merger" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the drain thread outlived its linger"
        time.sleep(0.01)
    assert asyncio.run(merger.embed(["bb"]))[0, 0] == 2  # and a new one starts on demand


def test_merger_for_is_one_per_embedder_and_holds_it_weakly():
    import gc
    import weakref

    fake = FakeEmbedder()
    assert merger_for(fake) is merger_for(fake)
    assert merger_for(fake) is not merger_for(FakeEmbedder())
    ref = weakref.ref(fake)
    del fake
    gc.collect()
    assert ref() is None


def test_aembed_of_many_callers_equals_embed_on_the_real_model(minilm_dir, graph_cache_dir):
    from caxton_models.runtime.embedder import Embedder

    emb = Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir)
    texts = [f"sentence number {i} " * (i % 7 + 1) for i in range(120)]

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(emb.aembed(t) for t in texts))

    outs = asyncio.run(main())
    np.testing.assert_allclose(np.concatenate(outs), emb.embed(texts), atol=2e-5)
    assert merger_for(emb).calls_run < len(texts)  # merged
    big = asyncio.run(emb.aembed(texts * 20))  # too big to merge: runs on its own
    np.testing.assert_allclose(big[:120], np.concatenate(outs), atol=2e-5)

    async def bad_one_among_good() -> tuple[object, ...]:
        return await asyncio.gather(
            emb.aembed(["fine"]),
            emb.aembed([b"bytes"]),  # type: ignore[list-item]
            emb.aembed(["fine"], kind="question"),  # type: ignore[arg-type]
            return_exceptions=True,
        )

    good, bad_text, bad_kind = asyncio.run(bad_one_among_good())
    assert isinstance(good, np.ndarray) and good.shape == (1, emb.dimensions)
    assert isinstance(bad_text, TypeError) and "texts[0]" in str(bad_text)
    assert isinstance(bad_kind, ValueError) and "kind" in str(bad_kind)
