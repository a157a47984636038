"""A random sequence of cache operations (install, use, pin, evict, corrupt the
index, crash mid-replace) against a model of what must hold after each one:
limits respected or a typed error, pinned/in-use models never evicted, the index
equal to the model directories, no temp files left."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from caxton_models.acquire._install import install_from_dir
from caxton_models.errors import CacheFull
from caxton_models.store import CacheLimits, ModelCache
from tests.support.protobuf import fake_onnx

NAMES = ["a", "b", "c", "d", "e"]


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="caxton-stateful-"))
        self.cache = ModelCache(self.tmp / "cache", access_flush_interval=0)
        self.limit_bytes = 3000
        self.limit_models = 3
        self.pinned: set[str] = set()
        self.in_use: set[str] = set()
        self.present: set[str] = set()

    def teardown(self) -> None:
        for n in list(self.in_use):
            self.cache.release(n)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _src(self, name: str, size: int) -> Path:
        src = self.tmp / f"src-{name}-{size}"
        if not src.exists():
            (src / "onnx").mkdir(parents=True)
            (src / "config.json").write_text(json.dumps({"n": name}))
            (src / "onnx" / "model.onnx").write_bytes(fake_onnx(size))
        return src

    @rule(
        name=st.sampled_from(NAMES),
        size=st.integers(100, 1500),
        policy=st.sampled_from(["lru", "fifo"]),
    )
    def install(self, name: str, size: int, policy: str) -> None:
        before = set(self.present)
        try:
            install_from_dir(
                self.cache,
                name,
                self._src(name, size),
                limits=CacheLimits(
                    max_bytes=self.limit_bytes, max_models=self.limit_models, policy=policy
                ),
            )
        except CacheFull:
            # Typed error before evicting anything.
            assert {m.name for m in self.cache.installed()} == before
            return
        evicted = before - {m.name for m in self.cache.installed()}
        assert not evicted & (self.pinned | self.in_use)
        self.present = {m.name for m in self.cache.installed()}
        assert name in self.present

    @rule(name=st.sampled_from(NAMES))
    def use(self, name: str) -> None:
        if name in self.present:
            self.cache.touch(name)

    @rule(name=st.sampled_from(NAMES))
    def pin(self, name: str) -> None:
        if name in self.present:
            self.cache.set_pinned(name, True)
            self.pinned.add(name)

    @rule(name=st.sampled_from(NAMES))
    def unpin(self, name: str) -> None:
        if name in self.pinned and name in self.present:
            self.cache.set_pinned(name, False)
            self.pinned.discard(name)

    @rule(name=st.sampled_from(NAMES))
    def acquire(self, name: str) -> None:
        if name in self.present and name not in self.in_use:
            self.cache.acquire(name)
            self.in_use.add(name)

    @rule(name=st.sampled_from(NAMES))
    def release(self, name: str) -> None:
        if name in self.in_use:
            self.cache.release(name)
            self.in_use.discard(name)

    @rule(cut=st.integers(0, 400))
    def truncate_index(self, cut: int) -> None:
        index = self.tmp / "cache" / "registry.json"
        if index.exists():
            index.write_bytes(index.read_bytes()[:cut])
            for n in self.in_use:
                self.cache.release(n)
            self.cache = ModelCache(self.tmp / "cache", access_flush_interval=0)
            for n in self.in_use:  # the new object is the same process: keep its leases
                self.cache.acquire(n)

    @rule(name=st.sampled_from(NAMES))
    def crash_mid_replace(self, name: str) -> None:
        """The old copy was moved aside by a process that then died."""
        if name in self.present and name not in self.in_use:
            os.rename(
                self.tmp / "cache" / name,
                self.tmp / "cache" / "downloads" / f"{name}.old.999999999-000000ab.ab",
            )
            fresh = ModelCache(self.tmp / "cache", access_flush_interval=0)
            assert fresh.get(name) is not None  # restored on open

    @invariant()
    def within_limits_and_consistent(self) -> None:
        models = self.cache.installed()
        names = {m.name for m in models}
        assert self.pinned <= names and self.in_use <= names
        assert sum(m.size_bytes for m in models) <= self.limit_bytes
        assert len(models) <= self.limit_models
        assert all(m.status == "verified" for m in models)
        index = self.cache.read_index()
        assert set(index["models"]) == names
        downloads = self.tmp / "cache" / "downloads"
        if downloads.exists():
            assert [p for p in os.listdir(downloads) if ".staging." in p or ".trash." in p] == []


TestCache = CacheMachine.TestCase
TestCache.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
