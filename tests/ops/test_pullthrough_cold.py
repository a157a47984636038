"""Issue 24's cold pull-through path and issue 21's one fetcher.

A cold file reaches its client as soon as every byte is verified; the disk syncs after
that, and the entry is published only once it is durable. The mirror and the manager
share ``acquire._fetch``: a job names the cache entry, repo and revision, with no
registry model behind it.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caxton_models.acquire import _fetch
from caxton_models.acquire.hub import HubClient
from caxton_models.config import load_config
from caxton_models.errors import DownloadError
from caxton_models.ops.server import Catalog, ServeOptions, ServerThread, Upstream
from caxton_models.ops.server.pullthrough import PullThrough, entry_name
from caxton_models.store import ModelCache
from tests.support.hubfaults import MINILM_COMMIT, MINILM_REPO_ID, minilm_catalog, minilm_sha256s
from tests.support.rawhttp import request

SMALL = "tokenizer.json"


@pytest.fixture(scope="module")
def mirror_b(minilm_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(minilm_catalog(minilm_dir)) as srv:
        yield srv


def _mirror_a(upstream: str, cache: Path) -> ServerThread:
    cache.mkdir(parents=True, exist_ok=True)
    up = Upstream([upstream], cache, timeout=5.0, retries=1)
    return ServerThread(Catalog.from_cache(cache), options=ServeOptions(upstream=up))


class _Order:
    """What happened, in order: files synced, clients answered, entries finalized."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_sync: str | None = None) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        real_fsync, real_finalize, real_hand = os.fsync, ModelCache.finalize, PullThrough._hand_over

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if fail_sync is not None and path.endswith("/" + fail_sync):
                raise OSError(errno.EIO, "Input/output error")
            self._add("fsync", path)
            real_fsync(fd)

        def finalize(staging: Path, **kw: Any) -> Any:
            self._add("finalize", str(kw["name"]))
            return real_finalize(staging, **kw)

        def hand_over(pt: PullThrough, key: Any, new: list[str], *args: Any) -> None:
            real_hand(pt, key, new, *args)
            for rel in new:
                self._add("answered", rel)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(ModelCache, "finalize", staticmethod(finalize))
        monkeypatch.setattr(PullThrough, "_hand_over", hand_over)

    def _add(self, what: str, detail: str) -> None:
        with self._lock:
            self.events.append((what, detail))

    def index(self, what: str, suffix: str) -> int:
        for i, (w, d) in enumerate(self.events):
            if w == what and d.endswith(suffix):
                return i
        raise AssertionError(f"no {what} of {suffix} in {self.events}")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_cold_file_is_answered_verified_then_synced_then_published(
    mirror_b: ServerThread, minilm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = _Order(monkeypatch)
    cache = tmp_path / "a"
    with _mirror_a(mirror_b.url, cache) as a:
        status, _, body = request(a.url, "GET", f"/{MINILM_REPO_ID}/resolve/main/{SMALL}")
    assert status == 200
    assert body == (minilm_dir / SMALL).read_bytes()
    # The client had its verified bytes before the disk was asked to keep them, and the
    # entry was finalized (then published) only once they were kept.
    answered = order.index("answered", SMALL)
    synced = order.index("fsync", "/" + SMALL)
    finalized = order.index("finalize", entry_name(MINILM_REPO_ID, MINILM_COMMIT))
    assert answered < synced < finalized, order.events
    entry = cache / entry_name(MINILM_REPO_ID, MINILM_COMMIT)
    listed = json.loads((entry / ".caxton_checksum").read_text())["files"]
    assert listed[SMALL]["sha256"] == minilm_sha256s(minilm_dir)[SMALL]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_a_file_the_disk_cannot_keep_is_not_published_and_is_fetched_again(
    mirror_b: ServerThread, minilm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "a"
    with monkeypatch.context() as m:
        _Order(m, fail_sync=SMALL)
        with _mirror_a(mirror_b.url, cache) as a:
            # The verified bytes were answered before the sync failed; nothing is published.
            status, _, body = request(a.url, "GET", f"/{MINILM_REPO_ID}/resolve/main/{SMALL}")
            assert status == 200 and body == (minilm_dir / SMALL).read_bytes()
    entry = cache / entry_name(MINILM_REPO_ID, MINILM_COMMIT)
    assert not (entry / ".caxton_metadata").exists()
    # With a healthy disk the next mirror fetches and publishes it.
    with _mirror_a(mirror_b.url, cache) as a:
        status, _, body = request(a.url, "GET", f"/{MINILM_REPO_ID}/resolve/main/{SMALL}")
    assert status == 200 and body == (minilm_dir / SMALL).read_bytes()
    meta = json.loads((entry / ".caxton_metadata").read_text())
    assert meta["validation_status"] == "verified" and meta["commit"] == MINILM_COMMIT


def test_one_fetcher_takes_a_repo_a_commit_and_an_entry_name(
    mirror_b: ServerThread, minilm_dir: Path, tmp_path: Path
) -> None:
    """No registry model: any repo's files, published under the name the caller gives."""
    hub = HubClient([mirror_b.url], token="", offline=False, timeout=5.0, retries=1)
    info = hub.resolve(MINILM_REPO_ID, MINILM_COMMIT)
    files = [info.file(p) for p in ("config.json", SMALL)]
    cache = ModelCache(tmp_path / "cache")
    job = _fetch.Job(
        cache=cache,
        config=load_config(),
        hub=hub,
        name="any-name",
        model_id=MINILM_REPO_ID,
        revision="main",
        info=info,
        files=files,
        expected={f.path: f.sha256 for f in files},
        installed=None,
        source="mirror-b",
    )
    out = _fetch.run(job)
    assert out == cache.model_dir("any-name")
    meta = json.loads((out / ".caxton_metadata").read_text())
    assert (meta["model_id"], meta["revision"], meta["commit"]) == (
        MINILM_REPO_ID,
        "main",
        MINILM_COMMIT,
    )
    for f in files:
        assert (out / f.path).read_bytes() == (minilm_dir / f.path).read_bytes()


def test_sync_failure_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "f").write_bytes(b"x")
    job: Any = type("J", (), {"name": "m", "commit": "c" * 40})()

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(DownloadError, match="cannot write it to disk"):
        _fetch._make_durable(job, work, ["sub/f"])
