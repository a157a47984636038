"""caxton_models.ray.Embed: the batch formats, and a two-node local Ray cluster.

The cluster test starts ``ray start --head`` and a second node (``ray start
--address``) on this machine, each with its own cache folder and 1 CPU, both
pointed at one mirror on 127.0.0.1 (``ServerThread`` serving the real MiniLM,
behind a recording proxy). Four actors (two per node) embed the first 300
PyPI summaries; the vectors must equal single-process ``embed`` and the
mirror must have sent the weights once per node, not once per actor.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models.errors import ConfigError
from caxton_models.ops.server import ServerThread
from tests.support.hubfaults import MINILM_COMMIT, FaultProxy, minilm_catalog, requested_bytes
from tests.support.ray_local import (
    assert_loopback_only,
    end_leftovers,
    in_loopback_netns,
    rerun_in_loopback_netns,
)

pa = pytest.importorskip("pyarrow", reason="pyarrow comes with the test extra (ray[data])")
pd = pytest.importorskip("pandas", reason="pandas comes with the test extra (ray[data])")

from caxton_models.ray import Embed  # noqa: E402

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
N_TEXTS = 300


@pytest.fixture(scope="module")
def texts(corpora_dir: Path) -> list[str]:
    return (
        (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()[:N_TEXTS]
    )


@pytest.fixture(scope="module")
def expected(minilm_dir: Path, texts: list[str], graph_cache_dir: Path) -> np.ndarray:
    from caxton_models.runtime.embedder import Embedder

    return Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir).embed(texts)


# ---------------------------------------------------------------- Embed, in-process


@pytest.fixture
def embed(minilm_dir: Path) -> Embed:
    return Embed(str(minilm_dir))


def _check(table: Any, ids: list[int], expected: np.ndarray, embed: Embed) -> None:
    assert table.column_names == ["id", "text", "embedding", "model_id", "model_revision"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert table.column("id").to_pylist() == ids  # the caller's row order
    vecs = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, 384)
    assert (vecs * expected[ids]).sum(axis=1).min() >= 0.9999
    assert set(table.column("model_id").to_pylist()) == {embed.embedder.model_id}
    assert set(table.column("model_revision").to_pylist()) == {embed.embedder.revision}


def test_numpy_pandas_and_arrow_batches(embed: Embed, texts: list[str], expected: np.ndarray):
    ids = [5, 3, 17, 0, 9]
    sel = [texts[i] for i in ids]
    numpy_batch = {"id": np.array(ids), "text": np.array(sel, dtype=object)}
    _check(embed(numpy_batch), ids, expected, embed)
    _check(embed(pd.DataFrame({"id": ids, "text": sel})), ids, expected, embed)
    _check(embed(pa.table({"id": ids, "text": sel})), ids, expected, embed)
    empty = embed(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}))
    assert empty.num_rows == 0 and empty.schema.field("embedding").type.list_size == 384


def test_model_id_and_revision_come_from_the_cache(tmp_path: Path, minilm_dir: Path, monkeypatch):
    from caxton_models.acquire.manager import ModelManager

    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "caxton.yaml").write_text("download: {enabled: false}\n")
    monkeypatch.setenv("CAXTON_CONFIG", str(tmp_path / "caxton.yaml"))
    ModelManager(functional=False).install_from_dir("all-MiniLM-L6-v2", minilm_dir)
    out = Embed("all-MiniLM-L6-v2")(pa.table({"text": ["Hello world"]}))
    assert out.column("model_id").to_pylist() == [MODEL_ID]
    assert out.column("model_revision").to_pylist() == [MINILM_COMMIT]


def test_bad_batches_and_arguments_say_what_to_do(embed: Embed, minilm_dir: Path):
    with pytest.raises(ConfigError, match="no column 'text'") as e:
        embed(pa.table({"body": ["x"]}))
    assert e.value.key == "column"
    with pytest.raises(TypeError, match="row 1 of column 'text' is NoneType"):
        embed(pa.table({"text": ["x", None]}))
    with pytest.raises(TypeError, match="dict of numpy arrays, a pandas DataFrame"):
        embed([{"text": "x"}])
    with pytest.raises(TypeError, match="shape"):
        embed({"text": np.array(["x"], dtype=object), "img": np.zeros((1, 2, 2))})
    with pytest.raises(ConfigError, match="overwrite"):
        Embed(str(minilm_dir), output_column="text")
    with pytest.raises(ConfigError, match="kind"):
        Embed(str(minilm_dir), kind="question")
    custom = Embed(str(minilm_dir), column="body", output_column="vec", kind="query")
    assert custom(pa.table({"body": ["x"]})).column_names[-3:] == [
        "vec",
        "model_id",
        "model_revision",
    ]


# ---------------------------------------------------------------- two nodes on this machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_exe() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


class _Node:
    """One ``ray start --block`` in its own session, ended by its process group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [_ray_exe(), "start", "--block", *args],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The group may outlive its leader for a moment (workers): end it too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            break
        self._out.close()


def _wait_nodes(ray_mod, count: int, nodes: list[_Node], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in nodes:
            if n.proc.poll() is not None:
                raise AssertionError(f"ray node exited: {n.log.read_text()[-3000:]}")
        if sum(1 for n in ray_mod.nodes() if n["Alive"]) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{count} ray nodes did not come up in {timeout} s")


@pytest.fixture
def mirror(minilm_dir: Path) -> Iterator[FaultProxy]:
    with ServerThread(minilm_catalog(minilm_dir)) as srv, FaultProxy(srv.url) as proxy:
        yield proxy


def _weights_copies(proxy: FaultProxy, size: int) -> float:
    """Copies of onnx/model.onnx the mirror sent (Range requests summed)."""
    return requested_bytes(proxy.seen("/resolve/.*/onnx/model.onnx$", "GET"), size) / size


@pytest.mark.timeout(600)
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
def test_two_nodes_embed_a_corpus_through_one_mirror(
    request: pytest.FixtureRequest, minilm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs in a network namespace of its own whose only interface is
    loopback (a multi-node Ray cluster swaps 127.0.0.1 for the machine's
    address: tests/support/ray_local.py), so nothing can bind elsewhere."""
    if not in_loopback_netns():
        out = rerun_in_loopback_netns(request.node.nodeid)
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
        assert re.search(r"\b1 passed", out.stdout), out.stdout[-3000:]
        return
    mirror: FaultProxy = request.getfixturevalue("mirror")
    texts: list[str] = request.getfixturevalue("texts")
    expected: np.ndarray = request.getfixturevalue("expected")
    ray = pytest.importorskip("ray", reason="ray[data] comes with the test extra")
    # A loopback-only cluster: no token (Ray would otherwise write one under ~/.ray).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # Short: Ray's unix sockets live under it (108-byte limit on their paths).
    root = Path(tempfile.mkdtemp(prefix="cxr-", dir="/tmp"))
    caches = [root / "cache-head", root / "cache-worker"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "CAXTON_", "HF_"))}
    base_env.update(
        HF_ENDPOINT=mirror.url,
        HF_HUB_DISABLE_TELEMETRY="1",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
        # The ray CLI must find this interpreter's packages (the editable install).
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    port = _free_port()
    common = [
        "--num-cpus=1",
        "--object-store-memory=100000000",
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
    ]
    nodes: list[_Node] = []
    try:
        nodes.append(
            _Node(
                [
                    "--head",
                    f"--port={port}",
                    f"--temp-dir={root / 'ray'}",
                    "--include-dashboard=false",
                    *common,
                ],
                {**base_env, "CAXTON_CACHE_DIR": str(caches[0])},
                root / "head.log",
            )
        )
        # The second node joins once the head's GCS answers.
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert nodes[0].proc.poll() is None, (root / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ray head did not listen within 120 s"
            time.sleep(0.5)
        nodes.append(
            _Node(
                [f"--address=127.0.0.1:{port}", *common],
                {**base_env, "CAXTON_CACHE_DIR": str(caches[1])},
                root / "worker.log",
            )
        )
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, _node_ip_address="127.0.0.1")
        _wait_nodes(ray, 2, nodes)
        assert_loopback_only(ray, str(root))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
        # 0.4 CPU each: two actors fit a 1-CPU node and a third does not, so the
        # four spread two per node, with room left for Ray Data's own tasks.
        out = ds.map_batches(
            Embed,
            fn_constructor_kwargs={"model": "all-MiniLM-L6-v2"},
            concurrency=4,
            num_cpus=0.4,
            batch_size=32,
        )
        tables = ray.get(out.to_arrow_refs())
        table = pa.concat_tables(tables).combine_chunks()
    finally:
        ray.shutdown()
        for n in reversed(nodes):
            n.stop()
        end_leftovers(str(root))
    shutil.rmtree(root / "ray", ignore_errors=True)

    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    ids = table.column("id").to_pylist()
    assert ids == list(range(len(texts)))  # preserve_order: the caller's order
    vecs = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, 384)
    cos = (vecs * expected).sum(axis=1)
    assert cos.min() >= 0.9999, cos.min()
    assert set(table.column("model_id").to_pylist()) == {MODEL_ID}
    assert set(table.column("model_revision").to_pylist()) == {MINILM_COMMIT}
    # Each node has its own verified copy, fetched from the mirror once per node
    # (two actors per node: the cache's lock made the second wait and reuse).
    size = (minilm_dir / "onnx" / "model.onnx").stat().st_size
    for cache in caches:
        assert (cache / "all-MiniLM-L6-v2" / "onnx" / "model.onnx").stat().st_size == size
    copies = _weights_copies(mirror, size)
    # One download per node: ranges the engine re-issues (a slow one handed to
    # another connection) may be fetched twice in part, a second download of a
    # node would make it 3 or more.
    assert 2 <= copies < 3, f"the mirror sent the weights {copies:.2f} times for 2 nodes"
    shutil.rmtree(root, ignore_errors=True)
