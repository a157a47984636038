"""Pull-through by model, not by batch: an ONNX graph fetched before its external data,
lookups that a slow transfer cannot hold up, and installed models that are the upstream's
commit only once the upstream's listing says so."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import huggingface_hub as hf
import pytest

from caxton_models.acquire._install import install_from_dir
from caxton_models.ops.server import Catalog, ServeOptions, ServerThread, Upstream
from caxton_models.store import ModelCache
from tests.support.hubfaults import Fault, FaultProxy
from tests.support.protobuf import onnx_model
from tests.support.rawhttp import request

REPO, OTHER, BAD = "org/ext", "org/other", "org/bad"
COMMIT, OTHER_COMMIT, BAD_COMMIT = "e" * 40, "f" * 40, "d" * 40
DATA = bytes(range(64))


def _repo(root: Path) -> Path:
    """A model whose ONNX graph keeps its weights in ``onnx/model.onnx_data``."""
    (root / "onnx").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"hidden_size": 8}))
    ext = {"location": "model.onnx_data", "offset": "0", "length": str(len(DATA))}
    (root / "onnx" / "model.onnx").write_bytes(onnx_model(external=ext))
    (root / "onnx" / "model.onnx_data").write_bytes(DATA)
    return root


@pytest.fixture(scope="module")
def upstream_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repo(tmp_path_factory.mktemp("up") / "ext")


@pytest.fixture(scope="module")
def upstream(upstream_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    other = tmp_path_factory.mktemp("up") / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    cat = Catalog.from_folder(upstream_dir, REPO, commit=COMMIT)
    cat.merge(Catalog.from_folder(other, OTHER, commit=OTHER_COMMIT))
    bad = tmp_path_factory.mktemp("up") / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    cat.merge(Catalog.from_folder(bad, BAD, commit=BAD_COMMIT))
    with ServerThread(cat) as srv:
        yield srv.url


def _mirror(upstream: str, cache: Path, workers: int = 4) -> ServerThread:
    cache.mkdir(parents=True, exist_ok=True)
    up = Upstream([upstream], cache, timeout=5.0, retries=1, workers=workers)
    return ServerThread(Catalog.from_cache(cache), options=ServeOptions(upstream=up))


def test_an_onnx_graph_before_its_external_data(
    upstream: str, upstream_dir: Path, tmp_path: Path
) -> None:
    with _mirror(upstream, tmp_path / "cache") as a:
        for rel in ("onnx/model.onnx", "onnx/model.onnx_data", "config.json"):  # optimum's order
            got = hf.hf_hub_download(REPO, rel, endpoint=a.url, cache_dir=tmp_path / "hf")
            assert Path(got).read_bytes() == (upstream_dir / rel).read_bytes(), rel
        # The whole model was checked once it was whole, and found good...
        assert _upstream_health(a.url)["format_problems"] == {}
        # ... where a model whose file is not what its name says is reported, and its
        # bytes (the upstream's, verified against its listing) are still served.
        st, _, body = request(a.url, "GET", f"/{BAD}/resolve/main/config.json")
        assert (st, body) == (200, b"{not json")
        # Checked after the file went out (it was verified; publishing comes after).
        for _ in range(200):
            problems = _upstream_health(a.url)["format_problems"]
            if problems:
                break
            time.sleep(0.05)
        assert list(problems) == [f"{BAD}@{BAD_COMMIT}"]


def _upstream_health(url: str) -> dict[str, Any]:
    _, _, body = request(url, "GET", "/health")
    (check,) = [c for c in json.loads(body)["checks"] if c["name"] == "mirror_upstream"]
    assert check["status"] == ("warn" if check["data"]["format_problems"] else "ok")
    data: dict[str, Any] = check["data"]
    return data


def test_a_slow_transfer_does_not_hold_up_lookups(upstream: str, tmp_path: Path) -> None:
    stall = Fault(path=r"/resolve/.*/config\.json$", method="GET", stall_after=0,
                  stall_seconds=3.0, times=1)  # fmt: skip
    with FaultProxy(upstream, [stall]) as proxy, _mirror(proxy.url, tmp_path / "c", 1) as a:
        # The one fetch thread is busy with a transfer that stalls...
        slow = ThreadPoolExecutor(1).submit(
            request, a.url, "GET", f"/{REPO}/resolve/{COMMIT}/config.json"
        )
        while not proxy.seen(r"/config\.json$", "GET"):
            threading.Event().wait(0.02)
        # ... and a lookup of another repo is answered meanwhile, not after it.
        st, _, body = request(a.url, "GET", f"/api/models/{OTHER}/revision/main")
        assert st == 200 and json.loads(body)["sha"] == OTHER_COMMIT
        assert not slow.done(), "the lookup waited for the slow transfer"
        assert slow.result(timeout=60)[0] == 200  # its retry gets the file


def _claimed_install(cache: Path, src: Path, source: str = "archive:/tmp/x.tar.gz") -> None:
    """What an archive's manifest makes of a folder: ``REPO@COMMIT``, on its word."""
    install_from_dir(ModelCache(cache), "ext", src, model_id=REPO, revision="main",
                     commit=COMMIT, source=source, check_formats=False)  # fmt: skip


def test_an_installed_model_is_the_upstreams_commit_only_where_the_hashes_match(
    upstream: str, upstream_dir: Path, tmp_path: Path
) -> None:
    forged = tmp_path / "forged"
    shutil.copytree(upstream_dir, forged)
    (forged / "config.json").write_text(json.dumps({"hidden_size": 9}))  # same size
    cache = tmp_path / "cache"
    _claimed_install(cache, forged)
    with FaultProxy(upstream) as proxy, _mirror(proxy.url, cache) as a:
        # The listing says otherwise: the upstream's bytes, fetched.
        st, _, body = request(a.url, "GET", f"/{REPO}/resolve/{COMMIT}/config.json")
        assert (st, body) == (200, (upstream_dir / "config.json").read_bytes())
        assert proxy.seen(r"/config\.json$", "GET")
        # A file whose hashes match the listing is served from the install, not fetched.
        st, _, body = request(a.url, "GET", f"/{REPO}/resolve/{COMMIT}/onnx/model.onnx_data")
        assert (st, body) == (200, DATA)
        assert not proxy.seen(r"/model\.onnx_data$", "GET")


def test_an_unconfirmed_install_is_not_the_upstreams_commit_while_it_is_down(
    upstream_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _claimed_install(cache, upstream_dir)
    with _mirror("http://127.0.0.1:9", cache) as a:  # nothing listens there
        st, h, _ = request(a.url, "GET", f"/{REPO}/resolve/{COMMIT}/config.json")
        assert (st, h["x-error-code"]) == (502, "UpstreamUnavailable")
    # The same cache without an upstream serves what the operator installed.
    with ServerThread(Catalog.from_cache(cache)) as plain:
        st, _, body = request(plain.url, "GET", f"/{REPO}/resolve/{COMMIT}/config.json")
        assert (st, body) == (200, (upstream_dir / "config.json").read_bytes())
