"""Download throughput against nginx on 127.0.0.1: ours vs curl, aria2c, huggingface_hub.

Real run (1 GiB file, 3 rounds per contender, both link kinds):
    pytest benches/test_download.py --benchmark-enable -s -p no:cacheprovider
The smoke run (benchmarks disabled) moves a 32 MiB file once per contender.

Two links, served by one nginx started here (config: benches/nginx-download.conf.in):
- "unthrottled": plain loopback, nginx sendfile.
- "capped": nginx ``limit_rate 50m`` per connection, as many CDNs and mirrors do.

Ours runs with its defaults in both (adaptive connection count) and verifies
SHA-256; curl is a single stream without verification; aria2c uses -x8;
huggingface_hub's hf_hub_download goes through the Hub emulation (302 to the CDN).
Every contender runs in a child process, so wall time, CPU seconds (user+sys)
and peak RSS are its own (os.wait4). A table with MB/s, CPU s/GiB, peak RSS
and the ratio against curl is printed at the end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benches import gating
from benches._servers import free_port, wait_listening
from caxton_models import _core

HERE = Path(__file__).parent
GIB = 1 << 30
COMMIT = "2373a2045c1ba4e9b6d4f1b4d1e0b9e8a7c6d5e4"
CONTENDERS = ["curl", "ours", "aria2c", "hf_hub_download"]
LINKS = ["unthrottled", "capped"]


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    sha: str
    size: int
    cache: Path

    def cdn_url(self, link: str) -> str:
        port = self.ports["cdn_a" if link == "unthrottled" else "cdn_b"]
        return f"http://127.0.0.1:{port}/repos/acme/big-model/{self.sha}"

    def hub(self, link: str) -> str:
        port = self.ports["hub_a" if link == "unthrottled" else "hub_b"]
        return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, bench_enabled: bool) -> Iterator[Nginx]:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(exe):
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    tmp = tmp_path_factory.mktemp("nginx")
    root = tmp / "cdn"
    root.mkdir()
    size = GIB if bench_enabled else 32 << 20
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    blob = tmp / "blob"
    with blob.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
            h.update(block)
    sha = h.hexdigest()
    blob.rename(root / sha)
    ports = {k: free_port() for k in ("hub_a", "cdn_a", "hub_b", "cdn_b")}
    conf = (HERE / "nginx-download.conf.in").read_text()
    conf = conf.format(tmp=tmp, root=root, commit=COMMIT, sha=sha, size=size, **ports)
    (tmp / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [exe, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for p in ports.values():
            wait_listening(p, proc, "nginx")
        yield Nginx(proc, ports, sha, size, tmp_path_factory.mktemp("dl"))
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


TIME = "/usr/bin/time"


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Runs `cmd`; returns its wall time, CPU seconds and peak RSS.

    GNU time measures the command from a small parent (wait4 on a child forked
    from pytest would count pytest's own RSS, inherited at fork, as the peak).
    """
    t0 = time.perf_counter()
    if os.path.exists(TIME):
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"caxton-time-{os.getpid()}"
        res = subprocess.run(
            [TIME, "-f", "%U %S %M", "-o", str(out), *cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise AssertionError(f"{cmd[0]} failed: {res.stderr.decode()[-2000:]}")
        user, sys_, rss_kb = out.read_text().split()[-3:]
        out.unlink()
        return Run(wall, float(user) + float(sys_), int(rss_kb) / 1024)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    # Upper bound: includes the RSS this process had when it forked the child.
    return Run(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024)


OURS = """
import os, sys
from caxton_models import _core
# CAXTON_BENCH_CONNECTIONS caps the connections: =1 is a deliberately slowed build.
env = os.environ.get("CAXTON_BENCH_CONNECTIONS")
conns = int(env) if env else None
r = _core.download(sys.argv[1], sys.argv[2], sha256=sys.argv[3], size=int(sys.argv[4]),
                   connections=conns)
assert r.sha256 == sys.argv[3]
print(r.connections, file=sys.stderr)
"""

HF = """
import sys
from huggingface_hub import hf_hub_download
hf_hub_download("acme/big-model", "model.bin", cache_dir=sys.argv[1])
"""


def contender(name: str, ng: Nginx, link: str, dest: Path) -> Callable[[], Run]:
    url = ng.cdn_url(link)
    if name == "ours":
        cmd = [sys.executable, "-c", OURS, url, str(dest), ng.sha, str(ng.size)]
        return lambda: run_child(cmd)
    if name == "curl":
        exe = shutil.which("curl")
        if exe is None:
            pytest.skip("curl is not installed")
        curl_cmd = [exe, "-sSf", "-o", str(dest), url]
        return lambda: run_child(curl_cmd)
    if name == "aria2c":
        exe = shutil.which("aria2c")
        if exe is None:
            pytest.skip("aria2c is not installed (apt-get install aria2)")
        cmd = [
            exe, "-q", "-x8", "-s8", "--file-allocation=none", "--allow-overwrite=true",
            "--auto-file-renaming=false", "-d", str(dest.parent), "-o", dest.name, url,
        ]  # fmt: skip
        return lambda: run_child(cmd)
    if name == "hf_hub_download":
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            pytest.skip("huggingface_hub is not installed")
        env = dict(os.environ)
        env.update(
            HF_ENDPOINT=ng.hub(link),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_ENABLE_HF_TRANSFER="0",
        )
        env.pop("HF_HUB_OFFLINE", None)
        cache = dest.parent / "hf-cache"
        return lambda: run_child([sys.executable, "-c", HF, str(cache)], env=env)
    raise AssertionError(name)


def clean(d: Path) -> None:
    for p in d.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


RESULTS: dict[tuple[str, str], list[Run]] = {}


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not RESULTS:
        return
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    write: Callable[[str], Any] = tr.write_line if tr is not None else print
    write("")
    write("download: median of rounds; CPU s/GiB and peak RSS of the downloading process")
    for link in LINKS:
        base = RESULTS.get((link, "curl"))
        base_wall = sorted(r.wall for r in base)[len(base) // 2] if base else None
        for name in CONTENDERS:
            runs = RESULTS.get((link, name))
            if not runs:
                continue
            runs = sorted(runs, key=lambda r: r.wall)
            med = runs[len(runs) // 2]
            size = SIZE[0]
            rss = max(r.rss_mb for r in runs)
            line = (
                f"  {link:<12} {name:<16} {size / med.wall / 1e6:8.1f} MB/s"
                f"  {med.cpu / (size / GIB):6.2f} CPU s/GiB  {rss:7.1f} MB RSS"
            )
            if base_wall is not None:
                line += f"  {base_wall / med.wall:6.2f}x curl"
            write(line)


SIZE = [0]


@pytest.mark.parametrize("name", CONTENDERS)
@pytest.mark.parametrize("link", LINKS)
def test_download(benchmark: Any, nginx: Nginx, bench_enabled: bool, link: str, name: str) -> None:
    dest_dir = nginx.cache / f"{link}-{name}"
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / "model.bin"
    fn = contender(name, nginx, link, dest)
    runs: list[Run] = []
    SIZE[0] = nginx.size

    def once() -> None:
        runs.append(fn())

    benchmark.group = f"download {nginx.size >> 20} MiB {link}"
    benchmark.extra_info["bytes"] = nginx.size
    benchmark.extra_info["baseline"] = name == "curl"
    rounds = 3 if bench_enabled else 1
    benchmark.pedantic(once, setup=lambda: clean(dest_dir), rounds=rounds, iterations=1)
    if not runs:  # --benchmark-disable runs the function once without recording
        once()
    RESULTS[(link, name)] = runs
    # Check what landed on disk (outside the timing).
    if name == "hf_hub_download":
        (got,) = [p for p in (dest_dir / "hf-cache").rglob("model.bin")]
    else:
        got = dest
    assert got.stat().st_size == nginx.size
    if name != "ours":  # ours verified SHA-256 itself
        assert _core.sha256_file(got) == nginx.sha
    benchmark.extra_info["cpu_s"] = min(r.cpu for r in runs)
    benchmark.extra_info["peak_rss_mb"] = max(r.rss_mb for r in runs)


@pytest.mark.gate
@pytest.mark.parametrize("link", LINKS)
def test_download_gate(nginx: Nginx, bench_enabled: bool, link: str) -> None:
    """Verified download against curl, interleaved pair by pair (order swapped
    every round): the median of the per-round ratios is gated."""
    gate = f"download_{link}_vs_curl"
    rounds = gating.rounds_for(gate, bench_enabled)
    dirs = {name: nginx.cache / f"gate-{link}-{name}" for name in ("curl", "ours")}
    runs: dict[str, list[Run]] = {"curl": [], "ours": []}

    def timed(name: str) -> Callable[[], None]:
        dirs[name].mkdir(exist_ok=True)
        fn = contender(name, nginx, link, dirs[name] / "model.bin")

        def once() -> None:
            clean(dirs[name])
            runs[name].append(fn())

        return once

    gating.interleaved({"curl": timed("curl"), "ours": timed("ours")}, rounds)
    for name, d in dirs.items():
        assert _core.sha256_file(d / "model.bin") == nginx.sha, name
        clean(d)
    # Child wall times (GNU time's child, without pytest's bookkeeping).
    ratios = gating.round_ratios([r.wall for r in runs["curl"]], [r.wall for r in runs["ours"]])
    mbps = {k: nginx.size / sorted(r.wall for r in v)[len(v) // 2] / 1e6 for k, v in runs.items()}
    conns = os.environ.get("CAXTON_BENCH_CONNECTIONS") or "adaptive"
    gating.check(
        gate,
        statistics.median(ratios),
        enabled=bench_enabled,
        rounds=rounds,
        detail=f"{nginx.size >> 20} MiB {link}: ours ({conns} connections) "
        f"{mbps['ours']:.0f} MB/s, curl {mbps['curl']:.0f} MB/s; {gating.spread(ratios)}",
    )
