"""The Rust core's file hashing against hashlib / the blake3 package."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import caxton_models
from caxton_models import _core


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "size", [0, 1, 63, 64, 65, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3_000_001]
)
def test_sha256_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = _write(tmp_path / "f.bin", data)
    assert _core.sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert _core.sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 1024, 1025, 5_000_000])
def test_blake3_matches_blake3_package(tmp_path: Path, size: int) -> None:
    blake3 = pytest.importorskip("blake3", reason="the blake3 package is in the test extra")
    data = os.urandom(size)
    path = _write(tmp_path / "f.bin", data)
    assert _core.blake3_file(path) == blake3.blake3(data).hexdigest()


@settings(deadline=None, max_examples=50)
@given(data=st.binary(max_size=10_000))
def test_sha256_property(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = _write(tmp_path_factory.mktemp("h") / "f", data)
    assert _core.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_real_model_files_match_published_sums(minilm_dir: Path) -> None:
    sums: dict[str, str] = {}
    for line in (minilm_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.removeprefix("./")] = digest
    paths = [minilm_dir / name for name in sums]
    assert _core.hash_files(paths) == list(sums.values())
    assert sums["model.safetensors"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )


def test_hash_files_order_and_algorithms(tmp_path: Path) -> None:
    blobs = [os.urandom(n) for n in (0, 10, 100_000, 2_000_000, 7)]
    paths = [_write(tmp_path / f"f{i}", b) for i, b in enumerate(blobs)]
    assert _core.hash_files(paths) == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert _core.hash_files(paths, algorithm="blake3") == [_core.blake3_file(p) for p in paths]
    assert _core.hash_files([]) == []


def test_missing_file_is_typed_and_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    for fn in (_core.sha256_file, _core.blake3_file):
        with pytest.raises(FileNotFoundError) as info:
            fn(missing)
        assert info.value.filename == str(missing)
        assert str(missing) in str(info.value)
    ok = _write(tmp_path / "ok", b"x")
    with pytest.raises(FileNotFoundError):
        _core.hash_files([ok, missing])


def test_directory_is_typed(tmp_path: Path) -> None:
    for fn in (_core.sha256_file, _core.blake3_file):
        with pytest.raises(IsADirectoryError) as info:
            fn(tmp_path)
        assert str(tmp_path) in str(info.value)


def test_permission_denied_is_typed() -> None:
    """An unreadable file raises PermissionError naming it.

    Root reads files whatever their mode, so as root the check runs in a child
    process that drops to ``nobody`` after importing the extension.
    """
    workdir = Path(tempfile.mkdtemp(prefix="caxton-perm-"))
    try:
        workdir.chmod(0o755)
        path = _write(workdir / "secret", b"x")
        path.chmod(0)
        script = (
            "import os, sys\n"
            "from caxton_models import _core\n"
            "if os.geteuid() == 0:\n"
            "    os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            "    _core.sha256_file(sys.argv[1])\n"
            "except PermissionError as e:\n"
            "    assert e.filename == sys.argv[1], e.filename\n"
            "    assert sys.argv[1] in str(e)\n"
            "    print('denied')\n"
        )
        if os.geteuid() == 0:
            out = subprocess.run(
                [sys.executable, "-c", script, str(path)],
                capture_output=True,
                text=True,
                check=True,
                cwd=workdir,
            )
            assert out.stdout.strip() == "denied", out.stderr
        else:
            with pytest.raises(PermissionError) as info:
                _core.sha256_file(path)
            assert info.value.filename == str(path)
    finally:
        shutil.rmtree(workdir)


def test_unknown_algorithm(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        _core.hash_files([tmp_path], algorithm="md5")


def test_gil_is_released_while_hashing(tmp_path: Path) -> None:
    """Another Python thread keeps running while a large file is hashed."""
    path = _write(tmp_path / "big", os.urandom(64 << 20))
    ticks = 0
    done = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        _core.sha256_file(path)
    finally:
        done.set()
        t.join()
    assert ticks > 1000


def test_public_reexports() -> None:
    assert caxton_models.sha256_file is _core.sha256_file
    assert isinstance(caxton_models.__version__, str)
    assert issubclass(caxton_models.errors.ChecksumMismatch, caxton_models.CaxtonError)
