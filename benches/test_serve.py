"""Throughput of `caxton model serve` against nginx serving the same file.

Both servers run as child processes on 127.0.0.1 and serve the real
all-MiniLM-L6-v2 ``model.safetensors`` (87 MiB); the same client (curl, C, writing
to /dev/null) fetches it with 1 connection, and with 4 connections each taking a
quarter by Range (as caxton's downloader does). The mirror must not be the
bottleneck of our own download benchmarks.

Pull-through (issue 16), same run: ``pull-warm`` is a mirror A whose cache was filled
from B by pull-through, against nginx; ``test_pull_through_cold`` (gated) times a fresh,
empty A fetching a small file and the weights from B (first byte, total) against curl
fetching them from B directly, in interleaved rounds.

Real run:
    pytest benches/test_serve.py --benchmark-enable --benchmark-min-time=1 -p no:randomly -s
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from tests.support.hubfaults import MINILM_REPO_ID, minilm_sha256s

from benches import gating
from benches._servers import caxton_serve, free_port, running
from caxton_models import _core

FILE = "model.safetensors"
RESULTS: dict[tuple[int, str], float] = {}  # (connections, impl) -> median MB/s


def _nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "")
    if not path:
        pytest.skip("nginx not installed (Debian package nginx-light or nginx); it is the baseline")
    return path


@pytest.fixture(scope="module")
def nginx_url(repos: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _nginx()
    work = tmp_path_factory.mktemp("nginx")
    port = free_port()
    # A static-file configuration as a mirror would use it: sendfile, no access log.
    # Workers drop to "nobody" when started as root; pytest's temp dirs are 0700.
    user = "user root;" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    conf = f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {repos}; }}
    }}
}}
"""
    (work / "nginx.conf").write_text(conf)
    with running([binary, "-p", str(work), "-c", str(work / "nginx.conf")], port, "nginx"):
        yield f"http://127.0.0.1:{port}/{MINILM_REPO_ID}/{FILE}"


@pytest.fixture(scope="module")
def caxton_url(hub_url: str) -> str:
    return f"{hub_url}/{MINILM_REPO_ID}/resolve/main/{FILE}"


@pytest.fixture(scope="module")
def pull_warm_url(caxton_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A pull-through mirror in front of B whose cache already holds the file."""
    b = caxton_url.split("/" + MINILM_REPO_ID)[0]
    cache = tmp_path_factory.mktemp("pull-warm")
    with caxton_serve(["--cache", str(cache), "--upstream", b]) as a:
        url = f"{a}/{MINILM_REPO_ID}/resolve/main/{FILE}"
        _curl(url, os.devnull)  # the pull: afterwards every byte comes from A's cache
        yield url


def _curl(url: str, out: str, rng: str | None = None) -> None:
    cmd = ["curl", "-sSf", "--noproxy", "*", "-o", out, url]
    if rng:
        cmd += ["-r", rng]
    subprocess.run(cmd, check=True)


def _fetch(url: str, size: int, connections: int, out_dir: Path | None) -> int:
    """Fetch the file with `connections` parallel Range requests; return bytes received."""
    bounds = [size * i // connections for i in range(connections + 1)]
    outs = [str(out_dir / f"part{i}") if out_dir else os.devnull for i in range(connections)]
    ranges = [f"{bounds[i]}-{bounds[i + 1] - 1}" for i in range(connections)]
    if connections == 1:
        _curl(url, outs[0])
    else:
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(_curl, [url] * connections, outs, ranges))
    return size


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("impl", ["caxton", "nginx", "pull_warm"])
def test_serve_throughput(
    benchmark: BenchmarkFixture,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    minilm_dir: Path,
    tmp_path: Path,
    impl: str,
    connections: int,
) -> None:
    if not shutil.which("curl"):
        pytest.skip("curl not installed; it is the common client of both servers")
    url = request.getfixturevalue(f"{impl}_url")
    size = (minilm_dir / FILE).stat().st_size
    # Correctness first: the bytes reassembled from the parts are the model's.
    _fetch(url, size, connections, tmp_path)
    whole = tmp_path / "whole"
    with whole.open("wb") as fh:
        for i in range(connections):
            fh.write((tmp_path / f"part{i}").read_bytes())
    assert _core.sha256_file(whole) == minilm_sha256s(minilm_dir)[FILE]

    times: list[float] = []

    def run() -> int:
        t = time.perf_counter()
        n = _fetch(url, size, connections, None)
        times.append(time.perf_counter() - t)
        return n

    benchmark.group = f"serve {FILE} ({size >> 20} MiB), {connections} connection(s)"
    benchmark.extra_info["bytes"] = size
    assert benchmark(run) == size
    # The median of every timed fetch: the machine is shared, so min() flatters outliers.
    mbps = size / statistics.median(times) / 1e6
    RESULTS[(connections, impl)] = mbps
    benchmark.extra_info["MB/s"] = round(mbps)
    line = f"\n[serve] {impl:9s} {connections} conn: {mbps:8.0f} MB/s"
    base = RESULTS.get((connections, "nginx"))
    if base is not None and impl != "nginx":
        line += f"   {impl}/nginx = {mbps / base:.2f}"
    with capsys.disabled():  # shown without -s
        print(line)


def _timed_curl(url: str) -> tuple[float, float]:
    """(time to first byte, total) of one GET, as curl measures them."""
    out = subprocess.run(
        ["curl", "-sSf", "--noproxy", "*", "-o", os.devnull, "-w",
         "%{time_starttransfer} %{time_total}", url],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


# A file under 64 MiB, asked for first (so its cold time includes resolving main).
SMALL = "tokenizer.json"


def _cold_round(b: str, cache: Path, minilm_dir: Path) -> dict[str, tuple[float, float]]:
    """A fresh, empty mirror A in front of B: the small file, then the weights."""
    with caxton_serve(["--cache", str(cache), "--upstream", b]) as a:
        base = f"{a}/{MINILM_REPO_ID}/resolve/main"
        got = {name: _timed_curl(f"{base}/{name}") for name in (SMALL, FILE)}
        for name in (SMALL, FILE):  # and the bytes are the model's
            out = cache / f"got-{name}"
            _curl(f"{base}/{name}", str(out))
            assert _core.sha256_file(out) == minilm_sha256s(minilm_dir)[name]
        return got


@pytest.mark.gate
def test_pull_through_cold(
    caxton_url: str,
    minilm_dir: Path,
    tmp_path: Path,
    bench_enabled: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A fresh, empty mirror A fetching from B, against the same GETs straight from B,
    in interleaved rounds (the order swapped every round).

    Gated: the weights' total, direct / cold; and a small file's first byte from cold
    A against its whole GET from B (A sends no byte it has not verified, so a cold first
    byte is at least one whole fetch). Both targets are 0.5 (cold within 2x of direct).
    """
    if not shutil.which("curl"):
        pytest.skip("curl not installed; it is the client of both")
    b = caxton_url.split("/" + MINILM_REPO_ID)[0]
    rounds = gating.rounds_for("pull_through_cold_vs_direct", bench_enabled)
    direct: list[dict[str, tuple[float, float]]] = []
    cold: list[dict[str, tuple[float, float]]] = []
    base_b = f"{b}/{MINILM_REPO_ID}/resolve/main"
    n = iter(range(1000))

    def run_direct() -> None:
        direct.append({name: _timed_curl(f"{base_b}/{name}") for name in (SMALL, FILE)})

    def run_cold() -> None:
        cold.append(_cold_round(b, tmp_path / f"a{next(n)}", minilm_dir))

    gating.interleaved({"direct": run_direct, "cold": run_cold}, rounds)
    large = gating.round_ratios([d[FILE][1] for d in direct], [c[FILE][1] for c in cold])
    small = gating.round_ratios([d[SMALL][1] for d in direct], [c[SMALL][0] for c in cold])

    def med(xs: list[dict[str, tuple[float, float]]], name: str, i: int) -> float:
        return statistics.median(x[name][i] for x in xs) * 1e3

    with capsys.disabled():
        print(f"\n[pull-through cold, median of {rounds} interleaved round(s)]")
        for name in (SMALL, FILE):
            for label, xs in (("direct from B", direct), ("cold A <- B", cold)):
                print(f"  {name:18s} {label:14s} first byte {med(xs, name, 0):8.1f} ms   "
                      f"total {med(xs, name, 1):8.1f} ms")  # fmt: skip
        print(f"  cold/direct total ({FILE}) = {1 / statistics.median(large):.2f}x")
        print(f"  cold first byte / direct total ({SMALL}) = {1 / statistics.median(small):.2f}x")
    gating.check(
        "pull_through_cold_vs_direct",
        statistics.median(large),
        enabled=bench_enabled,
        rounds=rounds,
        detail=f"{FILE}: cold {med(cold, FILE, 1):.0f} ms, direct {med(direct, FILE, 1):.0f} ms; "
        f"{gating.spread(large)}",
    )
    gating.check(
        "pull_through_small_first_byte",
        statistics.median(small),
        enabled=bench_enabled,
        rounds=rounds,
        detail=f"{SMALL}: cold first byte {med(cold, SMALL, 0):.0f} ms, direct total "
        f"{med(direct, SMALL, 1):.0f} ms; {gating.spread(small)}",
    )
