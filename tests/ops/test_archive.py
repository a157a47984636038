"""Export archives are reproducible; hostile archives are refused whole.

Rows 33-38 of RELIABILITY.md: traversal, absolute names, links, devices,
FIFOs, bombs (bytes, entries, headers), our own names, duplicates.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from caxton_models.errors import ArchiveError, ChecksumMismatch, InvalidPath
from caxton_models.ops.archive import (
    MANIFEST_NAME,
    ArchiveLimits,
    ExportManifest,
    export_dir,
    extract_archive,
)

FILES = {
    "config.json": b'{"hidden_size": 4}',
    "tokenizer.json": b'{"model": {}}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "onnx/model.onnx": os.urandom(300_000),
}


def _model_dir(root: Path) -> tuple[Path, dict[str, tuple[int, str]]]:
    d = root / "model"
    for rel, data in FILES.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d, {rel: (len(b), hashlib.sha256(b).hexdigest()) for rel, b in FILES.items()}


def _manifest(files: dict[str, tuple[int, str]], **extra: object) -> ExportManifest:
    return ExportManifest(
        name="tiny",
        model_id="acme/tiny",
        revision="main",
        commit="a" * 40,
        files=files,
        spec={"dimensions": 4},
        **extra,  # type: ignore[arg-type]
    )


def test_export_is_reproducible_and_round_trips(tmp_path: Path) -> None:
    model, files = _model_dir(tmp_path)
    a = export_dir(model, files, tmp_path / "a.tar.gz", manifest=_manifest(files))
    os.utime(model / "config.json", (1, 1))  # mtimes must not leak into the archive
    b = export_dir(model, files, tmp_path / "b.tar.gz", manifest=_manifest(files))
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert a.files == len(FILES)

    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [MANIFEST_NAME, *sorted(FILES)]
        owners = {(m.uid, m.gid, m.uname, m.gname, m.mode) for m in members}
        assert owners == {(0, 0, "", "", 0o644)}
        assert len({m.mtime for m in members}) == 1

    dest = tmp_path / "out"
    dest.mkdir()
    manifest = extract_archive(tmp_path / "a.tar.gz", dest)
    assert manifest is not None
    assert manifest.files == files and manifest.commit == "a" * 40
    assert manifest.spec == {"dimensions": 4}
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data
    assert not (dest / MANIFEST_NAME).exists()


def test_export_refuses_a_corrupted_cache_entry(tmp_path: Path) -> None:
    model, files = _model_dir(tmp_path)
    (model / "config.json").write_bytes(b'{"hidden_size": 5}')
    with pytest.raises(ChecksumMismatch, match="verify --full"):
        export_dir(model, files, tmp_path / "x.tar.gz", manifest=_manifest(files))
    assert list(tmp_path.glob("*x.tar.gz*")) == []


def test_export_replaces_a_symlink_without_following_it(tmp_path: Path) -> None:
    model, files = _model_dir(tmp_path)
    sentinel = tmp_path / "sentinel"
    sentinel.write_bytes(b"keep me")
    link = tmp_path / "out.tar.gz"
    link.symlink_to(sentinel)
    export_dir(model, files, link, manifest=_manifest(files))
    assert sentinel.read_bytes() == b"keep me"
    assert not link.is_symlink() and tarfile.is_tarfile(link)


def test_export_into_missing_folder_is_clear(tmp_path: Path) -> None:
    model, files = _model_dir(tmp_path)
    with pytest.raises(InvalidPath, match="does not exist"):
        export_dir(model, files, tmp_path / "nope" / "x.tar.gz", manifest=_manifest(files))


# ------------------------------------------------------------------ hostile


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = True) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _reg(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


HOSTILE: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "dotdot": [_reg("../escape")],
    "dotdot-inner": [_reg("a/../../escape")],
    "absolute": [_reg("/etc/caxton-evil")],
    "drive": [_reg("C:/evil")],
    "backslash": [_reg("..\\evil")],
    "windows-device": [_reg("nul.txt")],
    "symlink-outside": [_special("link", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink-inside": [_reg("a"), _special("b", tarfile.SYMTYPE, "a")],
    "hardlink": [_reg("a"), _special("b", tarfile.LNKTYPE, "a")],
    "link-then-file": [_special("d", tarfile.SYMTYPE, "/tmp"), _reg("d/x")],
    "char-device": [_special("dev", tarfile.CHRTYPE)],
    "block-device": [_special("blk", tarfile.BLKTYPE)],
    "fifo": [_special("fifo", tarfile.FIFOTYPE)],
    "registry": [_reg("registry.json", b"{}")],
    "our-metadata": [_reg(".caxton_metadata", b"{}")],
    "our-checksum-nested": [_reg("sub/.caxton_checksum", b"{}")],
    "duplicate": [_reg("config.json", b"1"), _reg("config.json", b"2")],
    "case-twins": [_reg("Config.json", b"1"), _reg("config.json", b"2")],
    "bad-manifest": [_reg(MANIFEST_NAME, b"not json")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("gz", [True, False], ids=["tar.gz", "tar"])
def test_hostile_archive_is_refused(tmp_path: Path, case: str, gz: bool) -> None:
    archive = _tar(tmp_path / "evil.tar", HOSTILE[case], gz=gz)
    dest = tmp_path / "dest"
    dest.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises((ArchiveError, InvalidPath)) as info:
        extract_archive(archive, dest)
    assert "evil.tar" in str(info.value) or "refusing" in str(info.value)
    # Nothing escaped the staging folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/etc/caxton-evil").exists()


def test_gzip_bomb_stops_at_the_budget(tmp_path: Path) -> None:
    size = 256 << 20  # 256 MiB of zeros, ~250 KiB compressed
    info = tarfile.TarInfo("weights.bin")
    info.size = size
    raw = gzip.GzipFile(tmp_path / "bomb.tar.gz", "wb", compresslevel=1)
    with raw, tarfile.open(fileobj=raw, mode="w|") as tar:

        class Zeros(io.RawIOBase):
            left = size

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, Zeros())
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="too large") as e:
        extract_archive(tmp_path / "bomb.tar.gz", dest)
    assert e.value.reason == "too_large"
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    budget = ArchiveLimits().budget((tmp_path / "bomb.tar.gz").stat().st_size)
    assert written <= budget


def test_too_many_entries(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "many.tar", [_reg(f"f{i}", b"") for i in range(60)])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="more than 50 entries"):
        extract_archive(archive, dest, limits=ArchiveLimits(max_entries=50))


def test_huge_pax_header(tmp_path: Path) -> None:
    info, data = _reg("a")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    archive = _tar(tmp_path / "pax.tar", [(info, data)])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="PAX header"):
        extract_archive(archive, dest)


def test_truncated_archive(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "t.tar", [_reg("big", os.urandom(100_000))], gz=False)
    archive.write_bytes(archive.read_bytes()[:50_000])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError, match=r"truncated|corrupt"):
        extract_archive(archive, dest)


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"<html>not found</html>" * 100)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError):
        extract_archive(junk, dest)


def test_plain_hub_layout_archive_has_no_manifest(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "hub.tar.gz", [_reg("./config.json", b"{}"), _reg("onnx/m.onnx")])
    dest = tmp_path / "dest"
    dest.mkdir()
    assert extract_archive(archive, dest) is None
    assert (dest / "config.json").read_bytes() == b"{}"
    assert (dest / "onnx/m.onnx").read_bytes() == b"x"
