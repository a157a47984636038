"""Issue 16: client -> mirror A (pull-through, empty) -> mirror B (holding MiniLM).

B is a mirror serving the real all-MiniLM-L6-v2 files; a recording proxy in front of it
counts what A fetches ("counted at B"). A starts with an empty cache.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub as hf
import pytest

from caxton_models import _core
from caxton_models.ops.server import Catalog, ServeOptions, ServerThread, Upstream
from caxton_models.ops.server.pullthrough import entry_name
from caxton_models.store import UpstreamRecords
from tests.support.hubfaults import (
    MINILM_COMMIT,
    MINILM_REPO_ID,
    Fault,
    FaultProxy,
    minilm_catalog,
    minilm_sha256s,
)
from tests.support.rawhttp import request

REPO = MINILM_REPO_ID


@pytest.fixture(scope="module")
def mirror_b(minilm_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(minilm_catalog(minilm_dir)) as srv:
        yield srv


@pytest.fixture
def at_b(mirror_b: ServerThread) -> Iterator[FaultProxy]:
    """B as A sees it: every request A sends is recorded here."""
    with FaultProxy(mirror_b.url) as proxy:
        yield proxy


def mirror_a(upstream: str, cache: Path, **opts: object) -> ServerThread:
    up = Upstream([upstream], cache, timeout=5.0, retries=1)
    cache.mkdir(parents=True, exist_ok=True)
    return ServerThread(Catalog.from_cache(cache), options=ServeOptions(upstream=up, **opts))  # type: ignore[arg-type]


def file_gets(proxy: FaultProxy, name: str) -> int:
    return len(proxy.seen(rf"/resolve/{MINILM_COMMIT}/{re.escape(name)}$", "GET"))


def _same(out: Path, minilm_dir: Path) -> list[str]:
    names = sorted(minilm_sha256s(minilm_dir))
    for name in names:
        assert filecmp.cmp(out / name, minilm_dir / name, shallow=False), name
    return names


def test_snapshot_download_default_revision_through_a_chain(
    at_b: FaultProxy, minilm_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "a-cache"
    with mirror_a(at_b.url, cache) as a:
        out = Path(hf.snapshot_download(REPO, endpoint=a.url, cache_dir=tmp_path / "hf"))
        assert out.name == MINILM_COMMIT
        names = _same(out, minilm_dir)
        # A second client is served from A's cache: B sees no new file request.
        before = len(at_b.seen("/resolve/", "GET"))
        again = hf.snapshot_download(REPO, endpoint=a.url, cache_dir=tmp_path / "hf2")
        _same(Path(again), minilm_dir)
        assert len(at_b.seen("/resolve/", "GET")) == before
    # Clients get each file the moment it verifies; the entry is published after, and a
    # stopping mirror waits for that. A recorded main -> commit and holds every file as a
    # verified cache entry.
    rec = UpstreamRecords(cache).ref(REPO, "main")
    assert rec is not None and rec.commit == MINILM_COMMIT
    entry = cache / entry_name(REPO, MINILM_COMMIT)
    meta = json.loads((entry / ".caxton_metadata").read_text())
    assert meta["validation_status"] == "verified" and meta["commit"] == MINILM_COMMIT
    listed = json.loads((entry / ".caxton_checksum").read_text())["files"]
    assert sorted(listed) == names


def test_caxton_model_download_through_a_chain(
    at_b: FaultProxy, minilm_dir: Path, tmp_path: Path
) -> None:
    with mirror_a(at_b.url, tmp_path / "a-cache") as a:
        env = {**os.environ, "HF_ENDPOINT": a.url, "CAXTON_CACHE_DIR": str(tmp_path / "mine")}
        run = subprocess.run(
            [sys.executable, "-m", "caxton_models", "model", "download", "all-MiniLM-L6-v2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        got = tmp_path / "mine" / "all-MiniLM-L6-v2"
        sums = minilm_sha256s(minilm_dir)
        listed = json.loads((got / ".caxton_checksum").read_text())["files"]
        assert listed, "nothing installed"
        for name, entry in listed.items():
            assert entry["sha256"] == sums[name], name
            assert _core.sha256_file(got / name) == sums[name], name


def test_eight_cold_clients_cause_one_fetch_per_file(
    at_b: FaultProxy, minilm_dir: Path, tmp_path: Path
) -> None:
    start = threading.Barrier(8)

    def client(i: int) -> Path:
        start.wait()
        return Path(hf.snapshot_download(REPO, endpoint=a.url, cache_dir=tmp_path / f"hf{i}"))

    with mirror_a(at_b.url, tmp_path / "a-cache") as a, ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(client, range(8)))
    for out in outs:
        names = _same(out, minilm_dir)
    for name in names:
        # The core may split one file into ranges; none starts twice at byte 0.
        gets = at_b.seen(rf"/resolve/{MINILM_COMMIT}/{re.escape(name)}$", "GET")
        firsts = [g for g in gets if g.headers.get("range", "bytes=0-").startswith("bytes=0-")]
        assert len(firsts) == 1, (name, [g.headers.get("range") for g in gets])
    assert len(at_b.seen(r"/api/models/.*/revision/main$")) == 1


def test_upstream_dropped_mid_transfer_leaves_a_clean_and_refetches(
    at_b: FaultProxy, minilm_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "a-cache"
    big = "onnx/model.onnx"
    at_b.faults.append(Fault(path=re.escape(big), method="GET", drop_at=1 << 20))
    with mirror_a(at_b.url, cache) as a:
        path = f"/{REPO}/resolve/main/{big}"
        st, h, body = request(a.url, "GET", path)
        assert st == 502 and h["x-error-code"] == "UpstreamUnavailable", (st, h)
        assert len(body) < 4096  # an error document, never part of the file
        # Nothing unverified is served or published; B was asked.
        assert file_gets(at_b, big) >= 1
        entry = cache / entry_name(REPO, MINILM_COMMIT)
        assert not (entry / big).exists()
        assert Catalog.from_cache(cache).snapshots.get((REPO, MINILM_COMMIT)) is None or (
            big not in Catalog.from_cache(cache).lookup(REPO, MINILM_COMMIT).files
        )
        st, _, _ = request(a.url, "HEAD", path)  # the listing still answers
        assert st == 200
        at_b.faults.clear()  # B is back
        before = file_gets(at_b, big)
        st, _, body = request(a.url, "GET", path)
        assert st == 200 and body == (minilm_dir / big).read_bytes()
        assert file_gets(at_b, big) > before
    # Handed over on its last verified byte, published after (the stopping mirror waits).
    assert _core.sha256_file(entry / big) == minilm_sha256s(minilm_dir)[big]


def test_upstream_down_serves_cached_and_fails_fast_on_the_rest(
    minilm_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "a-cache"
    with ServerThread(minilm_catalog(minilm_dir)) as b, mirror_a(b.url, cache) as a:
        st, _, body = request(a.url, "GET", f"/{REPO}/resolve/main/config.json")
        assert (st, body) == (200, (minilm_dir / "config.json").read_bytes())
    # B is gone; a new A over the same cache (a restart) still knows main and the files.
    with mirror_a(b.url, cache) as a:
        st, _, body = request(a.url, "GET", f"/{REPO}/resolve/main/config.json")
        assert (st, body) == (200, (minilm_dir / "config.json").read_bytes())
        st, _, body = request(a.url, "GET", f"/api/models/{REPO}/revision/main")
        assert st == 200 and json.loads(body)["sha"] == MINILM_COMMIT
        st, h, _ = request(a.url, "GET", f"/{REPO}/resolve/main/vocab.txt")
        assert st == 502 and h["x-error-code"] == "UpstreamUnavailable"
        st, h, _ = request(a.url, "GET", "/acme/never-seen/resolve/main/config.json")
        assert st == 502 and h["x-error-code"] == "UpstreamUnavailable"
        # huggingface_hub sees the mirror's 502, never a hang or a wrong file
        # (a server that is down would be a LocalEntryNotFoundError instead).
        with pytest.raises(hf.errors.HfHubHTTPError) as refused:
            hf.hf_hub_download(REPO, "vocab.txt", endpoint=a.url, cache_dir=tmp_path / "hf")
        assert refused.value.response.status_code == 502


def test_upstream_404s_keep_the_hubs_error_codes(at_b: FaultProxy, tmp_path: Path) -> None:
    with mirror_a(at_b.url, tmp_path / "a-cache") as a:
        st, h, _ = request(a.url, "GET", "/nobody/nothing/resolve/main/config.json")
        assert (st, h["x-error-code"]) == (404, "RepoNotFound")
        st, h, _ = request(a.url, "GET", f"/{REPO}/resolve/no-such-branch/config.json")
        assert (st, h["x-error-code"]) == (404, "RevisionNotFound")
        st, h, _ = request(a.url, "GET", f"/{REPO}/resolve/main/no-such-file")
        assert (st, h["x-error-code"]) == (404, "EntryNotFound")


def test_operator_ref_wins_over_upstream(at_b: FaultProxy, tmp_path: Path) -> None:
    with mirror_a(at_b.url, tmp_path / "a-cache") as a:
        a.catalog.pin_ref(REPO, "stable", MINILM_COMMIT)
        st, h, _ = request(a.url, "HEAD", f"/{REPO}/resolve/stable/config.json")
        assert (st, h["x-repo-commit"]) == (200, MINILM_COMMIT)
        assert not at_b.seen("/revision/stable")  # never asked upstream
