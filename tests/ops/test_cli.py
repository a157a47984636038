"""The ``caxton`` command line, run as a user runs it: one subprocess per command,
against a temporary cache and the real all-MiniLM-L6-v2 files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import SENTINEL_TOKEN, caxton

MODEL = "all-MiniLM-L6-v2"


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every regular file under root with its size and sha256 (a cache snapshot)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(root).as_posix()] = (
                p.stat().st_size,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


def model_files(cache: Path, name: str = MODEL) -> dict[str, tuple[int, str]]:
    return {k: v for k, v in tree(cache / name).items() if not k.startswith(".caxton_")}


@pytest.fixture(scope="module")
def installed_cache(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    out = caxton(
        "model", "install", "--model-id", MODEL, "--source", str(minilm_dir),
        "--validate-checksums", "--json", cache=cache,
    )  # fmt: skip
    data = json.loads(out.stdout)
    assert data["name"] == MODEL and data["status"] == "verified"
    assert data["checked_files"] >= 12  # every Hub file the registry pins
    return cache


COMMANDS = [
    [], ["embed"], ["hash"], ["model"], ["model", "list"], ["model", "info"],
    ["model", "download"], ["model", "install"], ["model", "export"], ["model", "verify"],
    ["model", "remove"], ["model", "gc"], ["model", "serve"], ["health"], ["metrics"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "caxton")
def test_help_everywhere_with_an_example(command: list[str]) -> None:
    out = caxton(*command, "--help")
    assert "example:" in out.stdout and "exit codes:" in out.stdout


def test_usage_errors_exit_2() -> None:
    assert caxton(check=None).returncode == 2
    assert caxton("model", "install", check=None).returncode == 2
    assert caxton("model", "bogus", check=None).returncode == 2


def test_version() -> None:
    assert caxton("--version").stdout.startswith("caxton ")


def test_list(tmp_path: Path) -> None:
    rows = json.loads(caxton("model", "list", "--json", cache=tmp_path).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name[MODEL]["default"] is True
    assert by_name[MODEL]["installed"] is False
    assert by_name["bundled-mini"]["installed"] is True
    for name in ("all-mpnet-base-v2", "multilingual-e5-small", "all-MiniLM-L12-v2"):
        assert name in by_name
    text = caxton("model", "list", cache=tmp_path).stdout
    assert f"{MODEL} (default)" in text and "not installed" in text
    installed = json.loads(caxton("model", "list", "--installed", "--json", cache=tmp_path).stdout)
    assert {r["name"] for r in installed} == {"bundled-mini"}


def test_install_is_byte_identical(installed_cache: Path, minilm_dir: Path) -> None:
    assert model_files(installed_cache) == tree(minilm_dir)
    info = json.loads(caxton("model", "info", MODEL, "--json", cache=installed_cache).stdout)
    assert info["spec"]["dimensions"] == 384
    assert info["installed"]["files"]["model.safetensors"]["sha256"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    text = caxton("model", "info", MODEL, cache=installed_cache).stdout
    assert "verified" in text and "model.safetensors" in text


def test_verify_quick_and_full(installed_cache: Path) -> None:
    for flags in ([], ["--full"]):
        out = caxton("model", "verify", MODEL, *flags, "--json", cache=installed_cache)
        (report,) = json.loads(out.stdout)
        assert report["ok"] is True and report["bad_files"] == []
        assert report["mode"] == ("full" if flags else "quick")


def test_verify_finds_a_corrupt_file_and_exits_3(tmp_path: Path, minilm_dir: Path) -> None:
    cache = tmp_path / "cache"
    caxton("model", "install", "--model-id", MODEL, "--source", str(minilm_dir), cache=cache)
    target = cache / MODEL / "vocab.txt"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01  # same size: only a full check sees it
    target.write_bytes(bytes(data))
    assert caxton("model", "verify", MODEL, cache=cache).returncode == 0
    out = caxton("model", "verify", MODEL, "--full", cache=cache, check=3)
    assert "vocab.txt" in out.stdout and "--repair" in out.stdout
    target.write_bytes(b"short")
    out = caxton("model", "verify", cache=cache, check=3)  # every model, quick
    assert "vocab.txt" in out.stdout


def test_export_install_round_trip(installed_cache: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    out = json.loads(
        caxton("model", "export", "--model-id", MODEL, "--output", str(a),
               "--include-metadata", "--json", cache=installed_cache).stdout
    )  # fmt: skip
    assert out["files"] == len(model_files(installed_cache))
    caxton("model", "export", "--model-id", MODEL, "--output", str(b), "--include-metadata",
           cache=installed_cache)  # fmt: skip
    assert a.read_bytes() == b.read_bytes(), "export must be reproducible"
    with tarfile.open(a) as tar:
        manifest = json.load(tar.extractfile("caxton-manifest.json"))  # type: ignore[arg-type]
    assert manifest["spec"]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["metadata"]["name"] == MODEL
    assert manifest["commit"] == "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"

    other = tmp_path / "other-cache"
    caxton("model", "install", "--model-id", MODEL, "--source", str(a), "--validate-checksums",
           cache=other)  # fmt: skip
    assert model_files(other) == model_files(installed_cache)
    assert list((other / "downloads").iterdir()) == []  # unpack dir cleaned up
    info = json.loads(caxton("model", "info", MODEL, "--json", cache=other).stdout)
    assert info["installed"]["metadata"]["commit"] == manifest["commit"]
    # Provenance: the commit is the archive's word (a pull-through mirror checks it).
    assert info["installed"]["metadata"]["download_source"] == f"archive:{a}"

    # An unpacked export installs as a folder too.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(a) as tar:
        tar.extractall(unpacked, filter="data")
    third = tmp_path / "third-cache"
    caxton("model", "install", "--model-id", MODEL, "--source", str(unpacked), cache=third)
    assert model_files(third) == model_files(installed_cache)


def _evil_tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("config.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        data = b"pwned" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


HOSTILE = {
    "traversal": ("../../evil", tarfile.REGTYPE, ""),
    "absolute": ("/tmp/caxton-evil-abs", tarfile.REGTYPE, ""),
    "symlink": ("onnx", tarfile.SYMTYPE, "/etc"),
    "hardlink": ("vocab.txt", tarfile.LNKTYPE, "config.json"),
    "device": ("dev", tarfile.CHRTYPE, ""),
    "fifo": ("fifo", tarfile.FIFOTYPE, ""),
    "reserved": ("CON", tarfile.REGTYPE, ""),
    "our-registry": ("registry.json", tarfile.REGTYPE, ""),
    "our-metadata": (".caxton_metadata", tarfile.REGTYPE, ""),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_leave_the_cache_unchanged(
    installed_cache: Path, tmp_path: Path, case: str
) -> None:
    archive = _evil_tar(tmp_path / f"{case}.tar.gz", *HOSTILE[case])
    before = tree(installed_cache)
    out = caxton("model", "install", "--model-id", MODEL, "--source", str(archive),
                 cache=installed_cache, check=None)  # fmt: skip
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("caxton: error: ") and "Traceback" not in out.stderr
    )
    assert tree(installed_cache) == before
    assert not Path("/tmp/caxton-evil-abs").exists()
    assert not (tmp_path.parent / "evil").exists()


def test_gzip_bomb_refused(installed_cache: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    info = tarfile.TarInfo("model.safetensors")
    info.size = 512 << 20
    with gzip.open(bomb, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    before = tree(installed_cache)
    out = caxton("model", "install", "--model-id", MODEL, "--source", str(bomb),
                 cache=installed_cache, check=1)  # fmt: skip
    assert "too large" in out.stderr
    assert tree(installed_cache) == before


def test_install_refuses_a_folder_with_links_outside(installed_cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "vocab.txt").symlink_to("/etc/passwd")
    before = tree(installed_cache)
    out = caxton("model", "install", "--model-id", MODEL, "--source", str(src),
                 cache=installed_cache, check=1)  # fmt: skip
    assert "symlink" in out.stderr
    assert tree(installed_cache) == before


def test_install_wrong_checksum_refused(tmp_path: Path, minilm_dir: Path) -> None:
    src = tmp_path / "src"
    for p in minilm_dir.rglob("*"):
        if p.is_file():
            dst = src / p.relative_to(minilm_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    (src / "tokenizer_config.json").write_text('{"evil": true}')
    cache = tmp_path / "cache"
    out = caxton("model", "install", "--model-id", MODEL, "--source", str(src), cache=cache,
                 check=1)  # fmt: skip
    assert "ChecksumMismatch" in out.stderr and "tokenizer_config.json" in out.stderr
    assert not (cache / MODEL).exists()


def test_unknown_model_exits_4_with_suggestion(tmp_path: Path) -> None:
    out = caxton("model", "info", "all-MiniLM-L6", cache=tmp_path, check=4)
    assert MODEL in out.stderr  # the closest name is suggested
    out = caxton("model", "remove", MODEL, cache=tmp_path, check=4)
    assert "not installed" in out.stderr


def test_remove_and_gc(tmp_path: Path, minilm_dir: Path) -> None:
    cache = tmp_path / "cache"
    caxton("model", "install", "--model-id", MODEL, "--source", str(minilm_dir), cache=cache)
    stale = cache / "downloads" / "leftover.part"
    stale.write_bytes(b"x" * 10)
    os.utime(stale, (1_000_000, 1_000_000))  # from 1970: older than any temp_max_age
    dry = json.loads(caxton("model", "gc", "--dry-run", "--json", cache=cache).stdout)
    assert dry["temp"] == ["leftover.part"] and dry["dry_run"] is True
    assert stale.exists()
    done = json.loads(caxton("model", "gc", "--json", cache=cache).stdout)
    assert done["temp"] == ["leftover.part"] and not stale.exists()
    assert (cache / MODEL).is_dir()  # within the default limits: nothing evicted
    caxton("model", "remove", MODEL, cache=cache)
    assert not (cache / MODEL).exists()


def test_offline_download_is_one_clear_line_and_never_prints_the_token(tmp_path: Path) -> None:
    env = {"CAXTON_OFFLINE": "1", "HF_TOKEN": SENTINEL_TOKEN}
    out = caxton("model", "download", MODEL, cache=tmp_path, env=env, check=5)
    assert "offline" in out.stderr.lower()
    assert len(out.stderr.strip().splitlines()) == 1
    out = caxton("-v", "model", "download", MODEL, cache=tmp_path, env=env, check=5)
    assert SENTINEL_TOKEN not in out.stderr + out.stdout
