"""The on-disk cache: atomic install, index recovery, eviction, access tracking."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from caxton_models.acquire._install import install_from_dir
from caxton_models.errors import (
    CacheFull,
    ChecksumMismatch,
    InsufficientDiskSpace,
    InvalidModelFormat,
    InvalidPath,
    UnsafeModel,
    ValidationFailed,
)
from caxton_models.registry import Registry
from caxton_models.store import (
    CHECKSUM_FILE,
    METADATA_FILE,
    CacheLimits,
    Metadata,
    ModelCache,
    format_time,
    owner_token,
    parse_time,
)
from tests.support.cache import install, make_src

META_KEYS = {
    "schema_version",
    "name",
    "model_id",
    "revision",
    "commit",
    "download_date",
    "last_validated",
    "download_source",
    "total_size_bytes",
    "file_count",
    "validation_status",
    "access_count",
    "last_access",
}


def test_install_real_minilm(tmp_path: Path, minilm_dir: Path) -> None:
    spec = Registry().get("all-MiniLM-L6-v2")
    cache = ModelCache(tmp_path / "c")
    m = install_from_dir(
        cache,
        spec.name,
        minilm_dir,
        model_id=spec.model_id,
        revision=spec.revision,
        commit=spec.revision,
        expected=spec.checksums,
        required_files=spec.required_files,
    )
    assert m.status == "verified" and m.path == tmp_path / "c" / spec.name
    sums = dict(
        (name.removeprefix("./"), digest)
        for digest, name in (
            line.split() for line in (minilm_dir / "SHA256SUMS").read_text().splitlines()
        )
    )
    assert m.manifest is not None
    for path, entry in m.manifest.items():
        if path != "SHA256SUMS":
            assert entry.sha256 == sums[path]
    meta = json.loads((m.path / METADATA_FILE).read_text())
    assert set(meta) >= META_KEYS
    assert meta["commit"] == spec.revision and meta["validation_status"] == "verified"
    assert meta["download_date"].endswith("Z")
    index = json.loads((tmp_path / "c" / "registry.json").read_text())
    assert index["schema_version"] == 1
    entry = index["models"][spec.name]
    assert {
        "model_id",
        "revision",
        "commit",
        "path",
        "size_bytes",
        "pinned",
        "installed_at",
    } <= set(entry)
    # Never world-writable (cargo CVE-2023-38497).
    for p in [m.path, *m.path.rglob("*")]:
        assert not os.lstat(p).st_mode & stat.S_IWOTH, p
    assert list((tmp_path / "c" / "downloads").iterdir()) == []


def test_checksum_mismatch_installs_nothing_and_keeps_old(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    old = install(cache, tmp_path, "m")
    old_meta = (old.path / METADATA_FILE).read_bytes()
    src = make_src(tmp_path / "new", 2000, tag="n")
    with pytest.raises(ChecksumMismatch) as exc:
        install_from_dir(cache, "m", src, expected={"config.json": "0" * 64})
    assert exc.value.expected == "0" * 64
    assert "config.json" in str(exc.value)
    assert (old.path / METADATA_FILE).read_bytes() == old_meta  # I3: complete entry unchanged
    assert (old.path / "onnx" / "model.onnx").stat().st_size == 1000
    assert list((tmp_path / "c" / "downloads").iterdir()) == []  # I6


def test_install_refuses_links_fifos_pickles_and_bad_formats(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    sentinel = tmp_path / "secret"
    sentinel.write_text("do not copy")
    src = make_src(tmp_path / "s1")
    os.symlink(sentinel, src / "tokenizer.json")
    with pytest.raises(InvalidPath, match="symlink"):
        install_from_dir(cache, "a", src)
    src = make_src(tmp_path / "s2")
    os.mkfifo(src / "pipe")
    with pytest.raises(InvalidPath, match="regular"):
        install_from_dir(cache, "a", src)
    src = make_src(tmp_path / "s3")
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeModel):
        install_from_dir(cache, "a", src)
    src = make_src(tmp_path / "s4")
    (src / "config.json").write_text("{not json")
    with pytest.raises(InvalidModelFormat, match=r"config\.json"):
        install_from_dir(cache, "a", src)
    src = make_src(tmp_path / "s5")
    with pytest.raises(ValidationFailed, match=r"tokenizer\.json"):
        install_from_dir(cache, "a", src, required_files=["tokenizer.json"])
    assert cache.installed() == []
    assert list((tmp_path / "c" / "downloads").iterdir()) == []


def test_export_manifest_is_checked(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    m = install(cache, tmp_path, "m")
    export = tmp_path / "export"
    import shutil

    shutil.copytree(m.path, export)
    cache2 = ModelCache(tmp_path / "c2")
    again = install_from_dir(cache2, "m", export)
    assert again.metadata is not None and again.metadata.model_id == "org/m"
    (export / "config.json").write_text('{"tampered": true}')
    with pytest.raises(ChecksumMismatch):
        install_from_dir(ModelCache(tmp_path / "c3"), "m", export)


def test_registry_json_truncated_at_every_offset_is_rebuilt(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    for n in ("a", "b"):
        install(cache, tmp_path, n)
    index = tmp_path / "c" / "registry.json"
    good = index.read_bytes()
    for cut in range(0, len(good), 7):
        index.write_bytes(good[:cut])
        data = ModelCache(tmp_path / "c").read_index()
        assert set(data["models"]) == {"a", "b"}
        assert (tmp_path / "c" / "a" / "onnx" / "model.onnx").exists()  # never deleted
    for junk in (b"\x00\xff", b"[]", b'{"schema_version": 9, "models": {}}', b"null"):
        index.write_bytes(junk)
        assert set(ModelCache(tmp_path / "c").read_index()["models"]) == {"a", "b"}
    assert json.loads(index.read_bytes())["schema_version"] == 1


def test_bad_metadata_is_unverified_newer_schema_read_only(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    a = install(cache, tmp_path, "a")
    b = install(cache, tmp_path, "b")
    meta = json.loads((a.path / METADATA_FILE).read_text())
    for bad in (
        {**meta, "total_size_bytes": -1},
        {**meta, "commit": "zz"},
        {**meta, "access_count": "x"},
        {k: v for k, v in meta.items() if k != "model_id"},
        {**meta, "surprise": 1},
        [1, 2],
    ):
        (a.path / METADATA_FILE).write_text(json.dumps(bad))
        got = cache.get("a")
        assert got is not None and got.status in ("unverified", "corrupt") and got.problem
    (b.path / METADATA_FILE).write_text(json.dumps({**meta, "name": "b", "schema_version": 2}))
    got_b = cache.get("b")
    assert got_b is not None and got_b.read_only
    # The newer-schema entry is never evicted and never rewritten.
    before = (b.path / METADATA_FILE).read_bytes()
    cache.touch("b")
    cache.flush_access()
    assert (b.path / METADATA_FILE).read_bytes() == before
    with pytest.raises(CacheFull):
        cache.make_room(CacheLimits(max_models=0 + 1), incoming_bytes=1, incoming_name="z")


def test_manifest_parse_refuses_traversal(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    a = install(cache, tmp_path, "a")
    man = json.loads((a.path / CHECKSUM_FILE).read_text())
    man["files"]["../../etc/passwd"] = {
        "size": 1,
        "sha256": "0" * 64,
        "git_oid": None,
        "lfs": False,
    }
    (a.path / CHECKSUM_FILE).write_text(json.dumps(man))
    got = cache.get("a")
    assert got is not None and got.manifest is None and got.status == "corrupt"


def test_crash_between_renames_restores_old(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    a = install(cache, tmp_path, "a")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # Simulate: the old dir was moved aside, then the process died.
    aside = tmp_path / "c" / "downloads" / f"a.old.{dead.pid}-0000beef.beef"
    os.rename(a.path, aside)
    again = ModelCache(tmp_path / "c")
    got = again.get("a")
    assert got is not None and got.status == "verified"
    assert not aside.exists()
    # The same state owned by a live process is that process's business.
    live = tmp_path / "c" / "downloads" / f"a.old.{owner_token(cache.root)}.beef"
    os.rename(got.path, live)
    assert ModelCache(tmp_path / "c").get("a") is None and live.exists()


def test_dead_staging_reclaimed_live_kept(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    cache.ensure_dirs()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    d = tmp_path / "c" / "downloads"
    (d / f"m.staging.{dead.pid}-0000abcd.abcd").mkdir()
    (d / f"m.staging.{dead.pid}-0000abcd.abcd" / "half").write_bytes(b"x" * 10)
    (d / f"m.staging.{owner_token(cache.root)}.ef01").mkdir()
    ModelCache(tmp_path / "c").recover()
    assert not (d / f"m.staging.{dead.pid}-0000abcd.abcd").exists()
    assert (d / f"m.staging.{owner_token(cache.root)}.ef01").exists()
    # By age: a resumable part dir survives until temp_max_age.
    part = d / ("m@" + "a" * 40)
    part.mkdir()
    (part / "model.onnx.part").write_bytes(b"123")
    assert cache.reclaim_temp(3600) == []
    old = 1_000_000_000
    os.utime(part / "model.onnx.part", (old, old))
    os.utime(part, (old, old))
    assert cache.reclaim_temp(3600) == [part.name]
    assert cache.temp_bytes() == 0


def _age(cache: ModelCache, name: str, days: int, *, installed: bool = False) -> None:
    when = format_time(datetime.now(timezone.utc) - timedelta(days=days))
    changes = {"download_date": when} if installed else {"last_access": when}
    cache.update_metadata(name, **changes)


def test_lru_eviction_by_size_and_count(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    for i, n in enumerate(("a", "b", "c", "d")):
        install(cache, tmp_path, n, size=1000)
        _age(cache, n, 10 - i)  # a is the least recently used
    _age(cache, "a", 1)  # ... until it is used again: now b is LRU
    evicted = cache.make_room(CacheLimits(max_models=3), incoming_bytes=1, incoming_name="e")
    assert evicted == ["b", "c"]
    names = {m.name for m in cache.installed()}
    assert names == {"a", "d"}
    per_model = cache.get("a").size_bytes  # type: ignore[union-attr]
    evicted = cache.make_room(
        CacheLimits(max_bytes=2 * per_model),
        incoming_bytes=per_model,
        incoming_name="e",
    )
    assert evicted == ["d"]
    assert set(json.loads((tmp_path / "c" / "registry.json").read_text())["models"]) == {"a"}


def test_fifo_eviction_uses_install_date(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    for i, n in enumerate(("a", "b", "c")):
        install(cache, tmp_path, n)
        _age(cache, n, 10 - i, installed=True)
        _age(cache, n, 0)  # all used just now: fifo ignores that
    fifo = CacheLimits(max_models=2, policy="fifo")
    assert cache.make_room(fifo, incoming_name="z") == [
        "a",
        "b",
    ]


def test_pinned_and_in_use_never_evicted(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    for i, n in enumerate(("a", "b", "c")):
        install(cache, tmp_path, n)
        _age(cache, n, 10 - i)
    cache.set_pinned("a", True)
    with cache.in_use("b"):
        # Room for a fourth model "z" within 3: only c may go.
        assert cache.make_room(CacheLimits(max_models=3), incoming_name="z") == ["c"]
        # Now only pinned/in-use models remain: a typed error, nothing evicted.
        with pytest.raises(CacheFull):
            cache.make_room(CacheLimits(max_models=2), incoming_name="z")
        assert {m.name for m in cache.installed()} == {"a", "b"}
        assert "b" in ModelCache(tmp_path / "c").users()  # visible to other processes (lease file)
    assert "b" not in ModelCache(tmp_path / "c").users()
    assert cache.make_room(CacheLimits(max_models=2), incoming_name="z") == ["b"]


def test_manual_policy_and_oversized_model(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    install(cache, tmp_path, "a")
    with pytest.raises(CacheFull, match="manual"):
        cache.make_room(CacheLimits(max_models=1, policy="manual"), incoming_name="b")
    with pytest.raises(CacheFull, match="max_size_gb"):
        cache.make_room(CacheLimits(max_bytes=10), incoming_bytes=11, incoming_name="b")
    assert [m.name for m in cache.installed()] == ["a"]
    # Limits are applied on install too.
    with pytest.raises(CacheFull):
        install(cache, tmp_path, "b", limits=CacheLimits(max_models=1, policy="manual"))


def test_access_tracking_is_batched(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c", access_flush_interval=3600)
    a = install(cache, tmp_path, "a")
    before = (a.path / METADATA_FILE).stat().st_mtime_ns
    raw_before = (a.path / METADATA_FILE).read_bytes()
    for _ in range(100):
        cache.touch("a")
    assert (a.path / METADATA_FILE).read_bytes() == raw_before  # no write per call
    assert (a.path / METADATA_FILE).stat().st_mtime_ns == before
    got = cache.get("a")
    assert got is not None and got.metadata is not None and got.metadata.access_count == 100
    cache.flush_access()
    on_disk = json.loads((a.path / METADATA_FILE).read_text())
    assert on_disk["access_count"] == 100 and on_disk["last_access"].endswith("Z")
    fast = ModelCache(tmp_path / "c", access_flush_interval=0)
    fast.touch("a")
    assert json.loads((a.path / METADATA_FILE).read_text())["access_count"] == 101


def test_disk_space_evicts_then_raises(tmp_path: Path) -> None:
    free = {"bytes": 0}
    cache = ModelCache(tmp_path / "c", disk_free=lambda p: free["bytes"])
    free["bytes"] = 10**12
    install(cache, tmp_path, "a")
    install(cache, tmp_path, "b")
    _age(cache, "a", 5)

    def after_evict(p: Path) -> int:
        return 10**12 if len(cache.installed()) < 2 else 100

    cache._disk_free = after_evict
    cache.ensure_disk_space(1000, CacheLimits(reserve_bytes=0))
    assert [m.name for m in cache.installed()] == ["b"]
    cache._disk_free = lambda p: 5
    with pytest.raises(InsufficientDiskSpace) as exc:
        cache.ensure_disk_space(1000, CacheLimits(reserve_bytes=0))
    assert exc.value.required == 1000 and exc.value.available == 5


def test_cleanup_unused(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    install(cache, tmp_path, "old")
    install(cache, tmp_path, "new")
    install(cache, tmp_path, "pinned")
    _age(cache, "old", 40)
    _age(cache, "pinned", 40)
    cache.set_pinned("pinned", True)
    assert cache.cleanup_unused(30 * 86400, CacheLimits()) == ["old"]
    assert {m.name for m in cache.installed()} == {"new", "pinned"}


def test_symlinks_in_cache_are_never_followed(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    install(cache, tmp_path, "a")
    sentinel = tmp_path / "sentinel.json"
    sentinel.write_text('{"keep": true}')
    st = sentinel.stat()
    index = tmp_path / "c" / "registry.json"
    index.unlink()
    os.symlink(sentinel, index)
    data = ModelCache(tmp_path / "c").read_index()  # refuses the link, rebuilds
    assert set(data["models"]) == {"a"}
    assert (
        sentinel.read_text() == '{"keep": true}' and sentinel.stat().st_mtime_ns == st.st_mtime_ns
    )
    assert not index.is_symlink()
    # A model dir that is a symlink is not a model.
    other = make_src(tmp_path / "elsewhere")
    os.symlink(other, tmp_path / "c" / "evil")
    assert cache.get("evil") is None
    assert "evil" not in {m.name for m in cache.installed()}


def test_files_deleted_behind_our_back_resync(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    install(cache, tmp_path, "a")
    install(cache, tmp_path, "b")
    import shutil

    shutil.rmtree(tmp_path / "c" / "b")
    assert set(cache.rebuild_index()["models"]) == {"a"}


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        ("2025-09-10T14:30:00Z", datetime(2025, 9, 10, 14, 30, tzinfo=timezone.utc)),
        ("1900-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ],
)
def test_parse_time_clamps(raw: str, expect: datetime) -> None:
    assert parse_time(raw) == expect


def test_future_time_clamped_to_now() -> None:
    now = datetime.now(timezone.utc)
    assert parse_time("2999-01-01T00:00:00Z", now=now) == now


def test_metadata_round_trip() -> None:
    m = Metadata(
        name="a",
        model_id="o/a",
        revision="main",
        commit="a" * 40,
        download_date="2025-01-01T00:00:00Z",
        last_validated=None,
        download_source="h",
        total_size_bytes=1,
        file_count=1,
    )
    assert Metadata.from_json(json.loads(json.dumps(m.to_json()))) == m


def test_read_only_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only filesystem (simulated: every write through ``os`` fails with
    EROFS, which also holds for root, unlike chmod): loads work, access tracking is best effort,
    installing is PermissionDenied and leaves nothing behind."""
    import errno

    from caxton_models.errors import PermissionDenied
    from caxton_models.store import _fs as cache_mod

    cache = ModelCache(tmp_path / "c")
    install(cache, tmp_path, "a")
    src = make_src(tmp_path / "src-b")
    before = sorted(str(p) for p in (tmp_path / "c").rglob("*"))
    real_open = os.open
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def ro_open(path: object, flags: int, *a: object, **k: object) -> int:
        if flags & writes:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)  # type: ignore[arg-type]

    def ro(*a: object, **k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache_mod.os, "open", ro_open)
    for name in ("mkdir", "rename", "replace", "unlink"):
        monkeypatch.setattr(cache_mod.os, name, ro)
    ro_cache = ModelCache(tmp_path / "c", access_flush_interval=0)
    got = ro_cache.get("a")
    assert got is not None and got.status == "verified"
    ro_cache.touch("a")  # best effort, no error
    assert set(ro_cache.read_index()["models"]) == {"a"}
    with pytest.raises(PermissionDenied, match="read-only"):
        install_from_dir(ro_cache, "b", src)
    monkeypatch.undo()
    assert sorted(str(p) for p in (tmp_path / "c").rglob("*")) == before


def test_publish_waits_out_another_writers_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a working lock, another process publishing the same model can
    leave the folder briefly absent just after our rename; publish waits for
    its copy instead of failing with an AssertionError (the fault matrix's
    eight processes with CAXTON_NO_LOCKS=1, rep 12 of 20)."""
    from caxton_models.errors import RevisionGone

    cache = ModelCache(tmp_path / "c")
    install(cache, tmp_path, "a")
    ops = cache.revision_ops
    real = ops._read
    gaps = iter([None, None, None])
    monkeypatch.setattr(ops, "_read", lambda name: next(gaps, None) or real(name))
    again = install(cache, tmp_path, "a")
    assert again.status == "verified" and again.path == cache.model_dir("a")

    monkeypatch.setattr(ops, "_read", lambda name: None)
    with pytest.raises(RevisionGone, match="another process"):
        install(cache, tmp_path, "a")
    monkeypatch.setattr(ops, "_read", real)
    assert cache.get("a") is not None  # the copy on disk is whole
