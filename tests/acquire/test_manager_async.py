"""The asyncio surface: ``aload``, ``ModelManager.aensure`` / ``adownload``
never block the event loop, and cancelling one stops its download.

The loop's liveness is shown by what a ticker coroutine observes, not by
timing: while the download runs, the ticker sees its byte count grow.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import caxton_models
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import load_config
from caxton_models.ops.server import Catalog, ServerThread
from tests.support.hubfaults import Fault, FaultProxy, minilm_catalog

MINI = "all-MiniLM-L6-v2"
ONNX = "onnx/model.onnx"


@pytest.fixture(scope="module")
def server(minilm_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(Catalog(source="test").merge(minilm_catalog(minilm_dir))) as srv:
        yield srv


@pytest.fixture
def mgr(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModelManager, FaultProxy]]:
    with FaultProxy(server.url) as proxy:
        monkeypatch.setenv("HF_ENDPOINT", proxy.url)
        monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
        (tmp_path / "caxton.yaml").write_text("")
        yield ModelManager(load_config(tmp_path / "caxton.yaml"), functional=False), proxy


class Bytes:
    """A progress callback (called on the core's thread)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self, delta: int) -> None:
        with self._lock:
            self.n += delta


def test_adownload_keeps_the_loop_running_and_cancels(
    mgr: tuple[ModelManager, FaultProxy],
) -> None:
    manager, proxy = mgr
    # 90 MB at 200 kB/s per connection: minutes, unless cancelled.
    proxy.faults = [Fault(path=rf"/resolve/.*/{ONNX}$", method="GET", rate=200_000)]
    progress = Bytes()

    async def scenario() -> list[int]:
        task = asyncio.create_task(manager.adownload(MINI, progress=progress))
        seen: list[int] = []
        while len(set(seen)) < 4:  # the loop ticks and sees the download advance
            assert not task.done()
            await asyncio.sleep(0.02)
            seen.append(progress.n)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # returns once the transfer has stopped: nothing runs unseen
        return seen

    seen = asyncio.run(scenario())
    assert seen == sorted(seen) and seen[-1] > 0
    assert manager.cache.get(MINI) is None
    assert any(manager.cache.downloads.iterdir())  # kept for a resume
    after = len(proxy.requests)
    threading.Event().wait(0.5)
    assert len(proxy.requests) == after  # the core stopped asking

    # No fault now: aensure resumes and finishes, the loop still free.
    proxy.faults = []
    path, spec = asyncio.run(manager.aensure(MINI))
    assert spec.name == MINI and (path / ONNX).is_file()
    assert manager.cache.get(MINI) is not None


def test_aload_runs_off_the_loop() -> None:
    async def scenario() -> tuple[object, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        emb = await caxton_models.aload("bundled-mini")
        during = ticks
        stop.set()
        await t
        return emb, during

    emb, during = asyncio.run(scenario())
    assert isinstance(emb, caxton_models.Embedder) and emb.dimensions == 384
    assert during > 1  # the ticker ran while the model loaded
    assert caxton_models.load("bundled-mini") is emb  # the same loaded model
