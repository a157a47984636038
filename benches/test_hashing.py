"""Our file hashing against hashlib.file_digest and the blake3 package.

Real run (1 GiB, page-cached):
    pytest benches/test_hashing.py --benchmark-enable --benchmark-min-rounds=5 -s
The smoke run (benchmarks disabled) hashes a small file once.

pytest-benchmark times one contender's rounds back to back, so on a shared
machine a burst of load can land on one side only. ``test_blake3_interleaved``
alternates ours and the blake3 package round by round (swapping which goes
first) and prints the median of the per-round ratios with their spread, and
the CPU time (all threads) each side used, which load disturbs less.

It runs on two files of the same size that differ only in how they were
written, because that decides how the page cache holds them, and so what
memory-mapping costs: written in 1 MiB pieces, the cache holds ~1 MiB folios
that map one fault per folio; written in 64 KiB pieces (as when network
chunks are written as they arrive), every 64 KiB of mapping is a page fault.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benches import gating
from caxton_models import _core

GIB = 1 << 30


def _write_cached(path: Path, size: int, piece: int) -> Path:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(size // len(block)):
            for at in range(0, len(block), piece):
                f.write(block[at : at + piece])
    # Read once so every contender starts from the page cache.
    _core.sha256_file(path)
    return path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory, bench_enabled: bool) -> Path:
    size = GIB if bench_enabled else 8 << 20
    return _write_cached(tmp_path_factory.mktemp("hash") / "big.bin", size, 1 << 20)


@pytest.fixture(scope="module")
def big_file_small_writes(tmp_path_factory: pytest.TempPathFactory, bench_enabled: bool) -> Path:
    size = GIB if bench_enabled else 8 << 20
    return _write_cached(tmp_path_factory.mktemp("hash") / "big64k.bin", size, 64 << 10)


def _hashlib_sha256(path: Path) -> str:
    with path.open("rb") as f:
        if sys.version_info >= (3, 11):
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        while chunk := f.read(1 << 20):
            h.update(chunk)
        return h.hexdigest()


def _blake3_package(path: Path) -> str:
    blake3 = pytest.importorskip("blake3")
    # The package's fastest file path: mmap plus all threads.
    return str(blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest())


SHA256: dict[str, Callable[[Path], str]] = {"ours": _core.sha256_file, "hashlib": _hashlib_sha256}
BLAKE3: dict[str, Callable[[Path], str]] = {
    "ours": _core.blake3_file,
    "blake3-pkg": _blake3_package,
}


@pytest.mark.parametrize("impl", ["hashlib", "ours"])
def test_sha256_file(benchmark, big_file: Path, impl: str) -> None:
    benchmark.group = "sha256 file"
    benchmark.extra_info.update(bytes=big_file.stat().st_size, baseline=impl == "hashlib")
    digest = benchmark(SHA256[impl], big_file)
    assert digest == _hashlib_sha256(big_file)


@pytest.mark.parametrize("impl", ["blake3-pkg", "ours"])
def test_blake3_file(benchmark, big_file: Path, impl: str) -> None:
    benchmark.group = "blake3 file"
    benchmark.extra_info.update(bytes=big_file.stat().st_size, baseline=impl == "blake3-pkg")
    digest = benchmark(BLAKE3[impl], big_file)
    assert digest == _blake3_package(big_file)


@pytest.mark.parametrize("written_in", ["1MiB", "64KiB"])
def test_blake3_interleaved(
    request: pytest.FixtureRequest, written_in: str, bench_enabled: bool
) -> None:
    pytest.importorskip("blake3")
    path: Path = request.getfixturevalue(
        "big_file" if written_in == "1MiB" else "big_file_small_writes"
    )
    min_rounds = int(request.config.getoption("benchmark_min_rounds") or 5)
    rounds = max(11, 2 * min_rounds + 1) if bench_enabled else 1
    expected = _blake3_package(path)
    times: dict[str, list[float]] = {name: [] for name in BLAKE3}
    cpu: dict[str, list[float]] = {name: [] for name in BLAKE3}
    for r in range(rounds):
        order = list(BLAKE3.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            cpu_start = time.process_time()
            start = time.perf_counter()
            digest = fn(path)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
            assert digest == expected, name
    # > 1 means ours is faster; each ratio compares two back-to-back runs.
    ratios = sorted(p / o for p, o in zip(times["blake3-pkg"], times["ours"], strict=True))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    size = path.stat().st_size
    print(
        f"\nblake3 interleaved, {rounds} rounds of {size / 2**20:.0f} MiB "
        f"written in {written_in} pieces:"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"  {name:<11} median {med * 1e3:8.1f} ms  {size / med / 1e9:6.3f} GB/s  "
            f"cpu {statistics.median(cpu[name]) * 1e3:7.1f} ms"
        )
    print(
        f"  ratio pkg/ours per round: median {statistics.median(ratios):.3f}x "
        f"(q25 {quartiles[0]:.3f}, q75 {quartiles[2]:.3f}, "
        f"min {ratios[0]:.3f}, max {ratios[-1]:.3f})"
    )


@pytest.mark.gate
@pytest.mark.parametrize(
    ("gate", "algo"), [("sha256_vs_hashlib", "sha256"), ("blake3_vs_package", "blake3")]
)
def test_hashing_gate(big_file: Path, bench_enabled: bool, gate: str, algo: str) -> None:
    """Ours against the baseline, interleaved round by round, on the 1 GiB file."""
    if algo == "blake3":
        pytest.importorskip("blake3")
    ours, (base_name, base) = (
        (SHA256["ours"], ("hashlib", SHA256["hashlib"]))
        if algo == "sha256"
        else (BLAKE3["ours"], ("blake3-pkg", BLAKE3["blake3-pkg"]))
    )
    assert ours(big_file) == base(big_file)
    rounds = gating.rounds_for(gate, bench_enabled)
    times = gating.interleaved(
        {base_name: lambda: base(big_file), "ours": lambda: ours(big_file)}, rounds
    )
    ratios = gating.round_ratios(times[base_name], times["ours"])
    size = big_file.stat().st_size
    gating.check(
        gate,
        statistics.median(ratios),
        enabled=bench_enabled,
        rounds=rounds,
        detail=f"{size >> 20} MiB: ours {size / statistics.median(times['ours']) / 1e9:.2f} GB/s, "
        f"{base_name} {size / statistics.median(times[base_name]) / 1e9:.2f} GB/s; "
        f"{gating.spread(ratios)}",
    )
