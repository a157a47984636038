"""RevisionStore built alone: every change of revision state (stage, switch,
state.json, removal, recovery) happens under the lock it was given, so no
caller has to remember to take it."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caxton_models.store import ModelCache
from caxton_models.store import _revisions as revisions_mod
from caxton_models.store._revisions import RevisionStore
from tests.support.revisions import A, B, commit_of, put


class CountingLock:
    """A re-entrant lock that knows whether this thread holds it."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = threading.local()

    def held(self) -> bool:
        return getattr(self.depth, "n", 0) > 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self.rlock:
            self.depth.n = getattr(self.depth, "n", 0) + 1
            try:
                yield
            finally:
                self.depth.n -= 1


def two_revisions(tmp_path: Path) -> tuple[Path, Path]:
    """A cache root with ``m`` at A, and a finalized staging folder of ``m`` at B."""
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    other = ModelCache(tmp_path / "other")
    put(other, tmp_path, B)
    staging = cache.downloads / "m.staging.test"
    shutil.copytree(other.model_dir("m"), staging)
    return cache.root, staging


def test_every_change_happens_under_the_stores_own_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, staging = two_revisions(tmp_path)
    lock = CountingLock()
    writes: list[tuple[str, bool]] = []
    for fn in ("write_json_atomic", "fsync_dir", "rmtree"):
        real = getattr(revisions_mod, fn)

        def spy(*a: Any, _real: Any = real, _fn: str = fn, **k: Any) -> Any:
            writes.append((_fn, lock.held()))
            return _real(*a, **k)

        monkeypatch.setattr(revisions_mod, fn, spy)
    store = RevisionStore(root, lock)
    current = ModelCache(root).get("m")
    store.stage("m", staging, B, current)
    store.switch("m", B, current)
    assert commit_of(root / "m") == B and store.state("m")["previous"] == A
    store.set_state("m", tracking="main")
    store.recover("m")
    assert store.remove("m", A) == [A] and store.state("m")["previous"] is None
    assert {fn for fn, _ in writes} == {"write_json_atomic", "fsync_dir", "rmtree"}
    assert [w for w in writes if not w[1]] == []  # nothing written outside the lock


def test_a_state_change_waits_for_whoever_holds_the_lock(tmp_path: Path) -> None:
    root, _ = two_revisions(tmp_path)
    lock = CountingLock()
    store = RevisionStore(root, lock)
    done = threading.Event()

    def change() -> None:
        store.set_state("m", latest_commit=B)
        done.set()

    with lock():
        writer = threading.Thread(target=change)
        writer.start()
        assert not done.wait(0.3)  # blocked: the store took the lock itself
        assert "latest_commit" not in store.state("m")
    writer.join(30)
    assert done.is_set() and store.state("m")["latest_commit"] == B


@pytest.mark.parametrize("pin_after", [True, False])
def test_a_pin_belongs_to_the_model_not_to_one_revision(tmp_path: Path, pin_after: bool) -> None:
    """A pin set (or cleared) after a revision was stored survives a rollback
    and the switch back: the pin is the model's, whichever revision is current."""
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    if not pin_after:
        cache.set_pinned("m", True)
    put(cache, tmp_path, B)  # A stored beside B, with the pin A had then
    cache.set_pinned("m", pin_after)
    for commit in (A, B):
        current = cache.switch("m", commit)
        assert commit_of(current.path) == commit and current.pinned is pin_after
        assert cache.read_index()["models"]["m"]["pinned"] is pin_after
