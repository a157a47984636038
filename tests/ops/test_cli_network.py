"""``caxton model download`` and ``caxton embed`` as subprocesses, against a
Hub-protocol server on 127.0.0.1 serving the real all-MiniLM-L6-v2 files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from caxton_models.ops.server import ServerThread
from tests.support.hubfaults import Fault, FaultProxy, requested_bytes

MODEL = "all-MiniLM-L6-v2"
TOKEN = "hf_SENTINELcliSENTINELcli0123456789"


def caxton(
    *args: str, cache: Path, endpoint: str | None = None, check: int | None = 0, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_TOKEN": TOKEN, **env}
    if endpoint:
        full_env["HF_ENDPOINT"] = endpoint
    proc = subprocess.run(
        [sys.executable, "-m", "caxton_models", "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
        check=False,
    )
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    assert TOKEN not in proc.stdout + proc.stderr
    return proc


def test_download_then_cached_then_forced(
    minilm_server: ServerThread, tmp_path: Path, minilm_dir: Path
) -> None:
    cache = tmp_path / "cache"
    out = caxton("model", "download", MODEL, "--json", cache=cache, endpoint=minilm_server.url)
    data = json.loads(out.stdout)
    assert data["downloaded_bytes"] > 90_000_000  # onnx/model.onnx and the small files
    files = data["installed"]["files"]
    assert files["config.json"]["sha256"] == (
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
    )
    assert "model.safetensors" not in files  # an ONNX model: the PyTorch weights are not needed
    assert (cache / MODEL / "onnx" / "model.onnx").read_bytes() == (
        minilm_dir / "onnx" / "model.onnx"
    ).read_bytes()
    # Not a terminal: plain progress lines, a plan and a summary, no bar redraws.
    assert "file(s)" in out.stderr and "\r" not in out.stderr
    assert data["installed"]["metadata"]["commit"] == "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"

    again = caxton("model", "download", MODEL, cache=cache, endpoint=minilm_server.url)
    assert "already cached and valid" in again.stdout

    forced = json.loads(
        caxton(
            "model", "download", MODEL, "--force", "--json", cache=cache, endpoint=minilm_server.url
        ).stdout
    )
    assert forced["downloaded_bytes"] > 0


def test_download_unknown_revision_is_a_clear_error(
    minilm_server: ServerThread, tmp_path: Path
) -> None:
    out = caxton("model", "download", MODEL, "--revision", "no-such-branch", cache=tmp_path,
                 endpoint=minilm_server.url, check=4)  # fmt: skip
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("caxton: error: ModelNotFound") and "no-such-branch" in lines[-1]
    assert not (tmp_path / MODEL).exists()


def test_download_with_the_server_down_exits_5(tmp_path: Path) -> None:
    out = caxton("model", "download", MODEL, cache=tmp_path, endpoint="http://127.0.0.1:9",
                 check=5)  # fmt: skip
    assert "127.0.0.1:9" in out.stderr


def test_embed_falls_back_to_bundled_and_says_so(tmp_path: Path) -> None:
    out = caxton("embed", "Hello world", "Bonjour", cache=tmp_path, CAXTON_OFFLINE="1")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["Hello world", "Bonjour"]
    assert {r["model"] for r in rows} == {"caxton/bundled-mini"}
    assert rows[0]["space"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(rows[0]["embedding"]) == 384
    assert "bundled-mini" in out.stderr and "not in the cache" in out.stderr


def test_embed_with_the_cached_default_matches_the_reference(
    minilm_server: ServerThread, tmp_path: Path, corpora_dir: Path, reference_dir: Path
) -> None:
    cache = tmp_path / "cache"
    caxton("model", "download", MODEL, cache=cache, endpoint=minilm_server.url)
    texts = (corpora_dir / "python-docs-passages.txt").read_text().splitlines()[:50]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    npy = tmp_path / "vecs.npy"
    out = caxton("embed", "--input", str(tmp_path / "in.txt"), "--output", str(npy), cache=cache,
                 CAXTON_OFFLINE="1")  # fmt: skip
    assert "sentence-transformers/all-MiniLM-L6-v2" in out.stderr  # says which model
    vecs = np.load(npy)
    ref = np.load(reference_dir / "all-MiniLM-L6-v2.python-docs-passages.npy")[:50]
    assert vecs.shape == (50, 384) and vecs.dtype == np.float32
    assert float(np.min(np.sum(vecs * ref, axis=1))) >= 0.9999


def test_embed_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "caxton_models", "--cache-dir", str(tmp_path), "embed",
         "--input", str(tmp_path / "missing.txt")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "missing.txt" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "caxton_models", "embed", "x", "--output", str(tmp_path / "v.json")],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ,
        "CAXTON_OFFLINE": "1", "CAXTON_CACHE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 1 and ".npy" in proc.stderr


def test_ctrl_c_exits_130_within_a_second_and_the_next_run_resumes(
    minilm_server: ServerThread, tmp_path: Path, minilm_dir: Path
) -> None:
    """SIGINT mid-transfer stops every file of the download at once (one cancel
    flag in the core, seen on the main thread), exits 130, and leaves parts
    that the next run resumes from instead of fetching again."""
    cache = tmp_path / "cache"
    config = tmp_path / "caxton.yaml"
    config.write_text("download:\n  chunk_size_kb: 2048\n")  # many small ranges
    weights = (minilm_dir / "onnx" / "model.onnx").stat().st_size
    onnx = r"/resolve/.*/onnx/model\.onnx$"
    env = {**os.environ, "HF_TOKEN": TOKEN, "CAXTON_CONFIG": str(config)}
    with FaultProxy(minilm_server.url, [Fault(path=onnx, method="GET", rate=1 << 20)]) as proxy:
        proc = subprocess.Popen(
            [sys.executable, "-m", "caxton_models", "--cache-dir", str(cache),
             "model", "download", MODEL],
            env={**env, "HF_ENDPOINT": proxy.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A test runner started in the background ignores SIGINT, and its
            # children would inherit that: give the child Python's own handler.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            # 24 ranges of 2 MiB asked for, at most 16 at a time: 16 MiB are whole.
            while len(proxy.seen(onnx, "GET")) < 24:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=30)
            elapsed = time.monotonic() - sent
        finally:
            proc.kill()
        out, err = proc.communicate()
        assert rc == 130, (rc, out, err)
        assert elapsed < 1.0, elapsed
        assert TOKEN not in out + err
        assert not (cache / MODEL).exists()
        proxy.faults.clear()  # the same endpoint, now at full speed
        before = len(proxy.requests)
        again = subprocess.run(
            [sys.executable, "-m", "caxton_models", "--cache-dir", str(cache),
             "model", "download", MODEL, "--json"],
            env={**env, "HF_ENDPOINT": proxy.url}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        rerun = [
            r for r in proxy.requests[before:] if re.search(onnx, r.path) and r.method == "GET"
        ]
    assert again.returncode == 0, again.stderr
    fetched = requested_bytes(rerun, weights)
    assert fetched <= weights - (16 << 20), (fetched, weights)
    assert (cache / MODEL / "onnx" / "model.onnx").read_bytes() == (
        minilm_dir / "onnx" / "model.onnx"
    ).read_bytes()
