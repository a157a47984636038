"""Our file hashing against hashlib.file_digest and the blake3 package.

Real run (1 GiB, page-cached):
    pytest benches/test_hashing.py --benchmark-enable --benchmark-min-rounds=5 -s
The smoke run (benchmarks disabled) hashes a small file once.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from caxton_models import _core

GIB = 1 << 30


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory, bench_enabled: bool) -> Path:
    size = GIB if bench_enabled else 8 << 20
    path = tmp_path_factory.mktemp("hash") / "big.bin"
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    # Read once so every contender starts from the page cache.
    _core.sha256_file(path)
    return path


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
