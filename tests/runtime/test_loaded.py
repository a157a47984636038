"""The loaded-model manager: lazy loading, limits, eviction, single flight, idle unload."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from caxton_models.errors import ConfigError
from caxton_models.runtime.loaded import ModelMemoryManager


class FakeModel:
    def __init__(self, name: str, memory_bytes: int) -> None:
        self.name = name
        self.memory_bytes = memory_bytes

    def embed(self, texts: Sequence[str], **kwargs: object) -> np.ndarray:
        return np.full((len(texts), 2), len(self.name), dtype=np.float32)


class Loader:
    def __init__(self, mb: int = 100, delay: float = 0.0, fail: set[str] | None = None) -> None:
        self.mb, self.delay, self.fail = mb, delay, fail or set()
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, name: str) -> FakeModel:
        with self.lock:
            self.calls.append(name)
        time.sleep(self.delay)
        if name in self.fail:
            raise FileNotFoundError(f"no model {name}")
        return FakeModel(name, self.mb * 2**20)


def test_lazy_loading_and_reuse():
    loader = Loader()
    mm = ModelMemoryManager(loader)
    assert mm.loaded() == [] and loader.calls == []
    a = mm.get("a")
    assert mm.get("a") is a and loader.calls == ["a"]
    assert mm.embed("a", ["x", "y"]).shape == (2, 2)


def test_lru_eviction_by_count():
    mm = ModelMemoryManager(Loader(), max_loaded_models=2)
    mm.get("a")
    mm.get("b")
    mm.get("a")  # a is now the most recently used
    mm.get("c")
    assert mm.loaded() == ["a", "c"] and mm.evictions == ["b"]


def test_fifo_eviction_ignores_use():
    mm = ModelMemoryManager(Loader(), max_loaded_models=2, eviction_policy="fifo")
    mm.get("a")
    mm.get("b")
    mm.get("a")
    mm.get("c")
    assert mm.loaded() == ["b", "c"] and mm.evictions == ["a"]


def test_eviction_by_memory_limit():
    # 400 MiB each under a 1 GiB limit: the third load evicts the first.
    mm = ModelMemoryManager(Loader(mb=400), max_loaded_models=10, memory_limit_gb=1.0)
    mm.get("a")
    mm.get("b")
    assert mm.memory_bytes == 800 * 2**20
    mm.get("c")
    assert mm.loaded() == ["b", "c"]
    # A single model larger than the limit still loads (alone).
    big = ModelMemoryManager(Loader(mb=2048), memory_limit_gb=1.0)
    big.get("x")
    big.get("y")
    assert big.loaded() == ["y"]


def test_manual_policy_never_evicts(caplog: pytest.LogCaptureFixture):
    mm = ModelMemoryManager(Loader(), max_loaded_models=1, eviction_policy="manual")
    mm.get("a")
    mm.get("b")
    assert mm.loaded() == ["a", "b"] and "manual" in caplog.text
    assert mm.unload("a") and not mm.unload("a")
    assert mm.loaded() == ["b"]


def test_evicted_model_memory_is_released():
    mm = ModelMemoryManager(Loader(), max_loaded_models=1)
    ref = weakref.ref(mm.get("a"))
    mm.get("b")
    gc.collect()
    assert ref() is None


def test_single_flight_eight_threads_one_load():
    loader = Loader(delay=0.3)
    mm = ModelMemoryManager(loader)
    barrier = threading.Barrier(8)

    def ask(_: int) -> FakeModel:
        barrier.wait()
        return mm.get("m")

    with ThreadPoolExecutor(8) as ex:
        models = list(ex.map(ask, range(8)))
    assert loader.calls == ["m"] and mm.loads == 1
    assert all(m is models[0] for m in models)


def test_failed_load_reaches_every_waiter_and_is_retried():
    loader = Loader(delay=0.2, fail={"bad"})
    mm = ModelMemoryManager(loader)
    barrier = threading.Barrier(4)

    def ask(_: int) -> BaseException | None:
        barrier.wait()
        try:
            mm.get("bad")
        except FileNotFoundError as e:
            return e
        return None

    with ThreadPoolExecutor(4) as ex:
        errors = list(ex.map(ask, range(4)))
    assert all(isinstance(e, FileNotFoundError) for e in errors)
    assert loader.calls == ["bad"]
    with pytest.raises(FileNotFoundError):
        mm.get("bad")  # a later call tries again
    assert loader.calls == ["bad", "bad"] and mm.loaded() == []


def test_idle_unload_with_a_fake_clock():
    now = [0.0]
    mm = ModelMemoryManager(Loader(), idle_unload_s=60, clock=lambda: now[0])
    mm.get("a")
    now[0] = 30.0
    mm.get("b")
    now[0] = 70.0
    assert mm.unload_idle() == ["a"]
    assert mm.loaded() == ["b"]
    now[0] = 200.0
    assert mm.unload_idle() == ["b"]
    mm.close()


def test_idle_reaper_thread_unloads():
    mm = ModelMemoryManager(Loader(), idle_unload_s=0.1)
    mm.get("a")
    deadline = time.monotonic() + 10
    while "a" in mm and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "a" not in mm
    mm.close()


def test_model_in_use_is_not_unloaded_as_idle():
    now = [0.0]
    started, release = threading.Event(), threading.Event()

    class Slow(FakeModel):
        def embed(self, texts: Sequence[str], **kwargs: object) -> np.ndarray:
            started.set()
            release.wait(5)
            return super().embed(texts)

    mm = ModelMemoryManager(lambda n: Slow(n, 1), idle_unload_s=10, clock=lambda: now[0])
    t = threading.Thread(target=mm.embed, args=("a", ["x"]))
    t.start()
    started.wait(5)
    now[0] = 100.0
    assert mm.unload_idle() == []
    release.set()
    t.join()
    assert mm.unload_idle(now=200.0) == ["a"]


def test_preload_and_concurrent_embed():
    loader = Loader()
    mm = ModelMemoryManager(loader, preload_models=["a", "bb"])
    assert mm.loaded() == ["a", "bb"]
    with ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda i: mm.embed(["a", "bb"][i % 2], ["t"] * (i + 1)), range(16)))
    assert [o.shape[0] for o in outs] == list(range(1, 17))
    assert [float(o[0, 0]) for o in outs[:2]] == [1.0, 2.0]
    assert loader.calls == ["a", "bb"]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_loaded_models": 0}, {"memory_limit_gb": 0}, {"eviction_policy": "random"}],
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        ModelMemoryManager(Loader(), **kwargs)


def test_manager_with_the_real_loader(minilm_dir, graph_cache_dir):
    from caxton_models.runtime.embedder import Embedder

    mm = ModelMemoryManager(
        lambda p: Embedder.from_dir(p, graph_cache_dir=graph_cache_dir), max_loaded_models=1
    )
    v = mm.embed(str(minilm_dir), ["Hello world"])
    assert v.shape == (1, 384)
    assert mm.memory_bytes > 80 * 2**20  # the weights, at least
