"""Filesystem, archive, format and metadata rows: planted symlinks, hostile
archives, malformed ONNX / safetensors / JSON, registry.json truncated at
every offset, bad metadata, the clock going backwards."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from caxton_models.acquire.validate import check_file_formats
from caxton_models.errors import CacheFull, CaxtonError, InvalidModelFormat
from caxton_models.ops import cli
from caxton_models.store import CacheLimits, ModelCache
from tests.faults.harness import Ctx, scenario
from tests.faults.repo import (
    COMMITS,
    FaultProxy,
    hub,
    manager,
    onnx_model,
    repo_sha256,
    write_config,
)

W = "onnx/model.onnx"


def _install(ctx: Ctx, *names: str) -> Path:
    cfg = write_config(ctx.work / "caxton.yaml")
    with FaultProxy(hub().url) as proxy:
        mgr = manager(cfg, proxy.url)
        for n in names:
            ctx.call(mgr.ensure, n)
    return cfg


@scenario("planted-symlinks", rows=(25, 26))
def planted_symlinks(ctx: Ctx) -> None:
    """Symlinks at every predictable name in the cache, pointing at the
    canary: never followed; files never world-writable even with umask 0."""
    cfg = write_config(ctx.work / "caxton.yaml")
    ctx.cache.mkdir()
    (ctx.cache / "downloads").mkdir()
    target = ctx.canary / "keep"
    plants = [
        f"downloads/tiny@{COMMITS['tiny']}",
        f"downloads/tiny@{COMMITS['tiny']}.lock",
        ".lock",
        "registry.json",
        ".inuse",
        "tiny-b",
    ]
    for rel in plants:
        os.symlink(
            target if not rel.endswith("@" + COMMITS["tiny"]) else ctx.canary, ctx.cache / rel
        )
    ctx.begin()
    old = os.umask(0)
    try:
        with FaultProxy(hub().url) as proxy:
            mgr = manager(cfg, proxy.url)
            e = None
            try:
                path, _ = mgr.ensure("tiny")
            except CaxtonError as err:  # a refusal is fine; following the link is not
                ctx.record_exception(err)
                e = err
            if e is None:
                assert path.is_dir() and not path.is_symlink()
                for dirpath, _, files in os.walk(path):
                    for f in files:
                        assert os.stat(os.path.join(dirpath, f)).st_mode & 0o002 == 0
    finally:
        os.umask(old)
    assert sorted(os.listdir(ctx.canary)) == ["keep"]
    for rel in plants:  # remove what we planted; the cache keeps no temp behind
        if os.path.islink(ctx.cache / rel):
            os.unlink(ctx.cache / rel)
    ModelCache(ctx.cache).reclaim_temp(0)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def _member(name: str, data: bytes | None = b"{}", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@scenario("hostile-archives", rows=(33, 34, 35, 36, 37, 38))
def hostile_archives(ctx: Ctx) -> None:
    """`caxton model install` of hostile archives and folders, and `export`
    onto a planted symlink: refused, the installed model unchanged."""
    _install(ctx, "tiny")
    ctx.protect("tiny")
    cases = {
        "dotdot": [_member("../escape")],
        "absolute": [_member("/etc/caxton-evil")],
        "symlink": [_member("link", None, tarfile.SYMTYPE, str(ctx.canary / "keep"))],
        "hardlink": [_member("a"), _member("b", None, tarfile.LNKTYPE, "a")],
        "link-then-file": [_member("d", None, tarfile.SYMTYPE, str(ctx.canary)), _member("d/x")],
        "fifo": [_member("f", None, tarfile.FIFOTYPE)],
        "device": [_member("c", None, tarfile.CHRTYPE)],
        "registry": [_member("registry.json")],
        "our-metadata": [_member(".caxton_metadata")],
        "duplicate": [_member("config.json", b"1"), _member("config.json", b"2")],
        "bomb": [_member("config.json", b"0" * (64 << 20))],
    }
    archives = {k: _tar(ctx.work / f"{k}.tar.gz", v) for k, v in cases.items()}
    linked = ctx.work / "linked"
    linked.mkdir()
    (linked / "config.json").write_text("{}")
    os.symlink(ctx.canary / "keep", linked / "tokenizer.json")
    os.symlink(ctx.canary / "keep", ctx.out / "export.tar.gz")
    ctx.begin()
    for case, archive in archives.items():
        with ctx.case(case):
            code = _cli(ctx, ["model", "install", "--model-id", "tiny", "--source", str(archive)])
            assert code not in (0, None), f"{case} installed"
    code = _cli(ctx, ["model", "install", "--model-id", "tiny", "--source", str(linked)])
    assert code != 0, "a folder with a link outside was installed"
    code = _cli(
        ctx, ["model", "export", "--model-id", "tiny", "--output", str(ctx.out / "export.tar.gz")]
    )
    assert code == 0 and not os.path.islink(ctx.out / "export.tar.gz")
    assert (ctx.canary / "keep").read_text().startswith("canary")
    assert not Path("/etc/caxton-evil").exists()


def _cli(ctx: Ctx, argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


@scenario("malformed-formats", rows=(39, 40, 41, 42, 43))
def malformed_formats(ctx: Ctx) -> None:
    """A mirror serves malformed weights (safetensors N = 2^63, N past the
    file, offsets out of range; ONNX whose external data points outside the
    folder or past EOF; JSON that is not JSON): InvalidModelFormat naming the
    model and file, nothing published. Links and FIFOs as external data are
    refused by the same check on a folder."""
    import struct

    cfg = write_config(ctx.work / "caxton.yaml", "download: {retry_attempts: 1}\n")
    st_bad = {
        "n-2^63": struct.pack("<Q", 2**63) + b"{}",
        "n-past-eof": struct.pack("<Q", 5000) + b"{}",
        "offsets": _st({"w": {"dtype": "F32", "shape": [9], "data_offsets": [0, 10**12]}}),
        "no-brace": struct.pack("<Q", 2) + b"[]",
        "non-utf8": struct.pack("<Q", 2) + b"\xff\xfe",
    }
    onnx_bad = {
        "dotdot": onnx_model(external={"location": "../../canary/keep", "length": "4"}),
        "absolute": onnx_model(external={"location": str(ctx.canary / "keep")}),
        "missing": onnx_model(external={"location": "weights.bin"}),
        "truncated-protobuf": onnx_model(b"x" * 100)[:-40],
    }
    json_bad = {"config.json": b"{not json", "tokenizer.json": b"\xff\xfe"}
    cfg_pt = ctx.work / "pt.yaml"
    cfg_pt.write_text(
        "models:\n  pt: {model_id: caxton-faults/tiny, dimensions: 8, "
        "model_type: sentence_transformer}\n"
    )
    ctx.begin()
    for case, body in st_bad.items():
        with ctx.case(f"safetensors {case}"):
            _served_bad(ctx, cfg, "tiny-st", "model.safetensors", body)
    for case, body in onnx_bad.items():
        with ctx.case(f"onnx {case}"):
            _served_bad(ctx, cfg, "tiny", W, body)
    for rel, body in json_bad.items():
        with ctx.case(rel):
            _served_bad(ctx, cfg, "tiny", rel, body)
    # Link, FIFO, past-EOF external data: only a folder can hold those.
    folder = ctx.out / "folder"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "data").write_bytes(b"1234")
    os.symlink(ctx.canary / "keep", folder / "onnx" / "link")
    os.mkfifo(folder / "onnx" / "fifo")
    for case, ext in {
        "symlink": {"location": "link"},
        "fifo": {"location": "fifo"},
        "past-eof": {"location": "data", "offset": "2", "length": "3"},
    }.items():
        with ctx.case(f"onnx folder {case}"):
            (folder / W).write_bytes(onnx_model(external=ext))
            ctx.expect(InvalidModelFormat, check_file_formats, folder, [W], model="m", names=(W,))
    (folder / W).write_bytes(onnx_model(external={"location": "data", "length": "4"}))
    check_file_formats(folder, [W])  # inside, regular, long enough: accepted
    # Pickle weights are refused before any request (row 42).
    with FaultProxy(hub().url) as proxy:
        ctx.expect(CaxtonError, manager(cfg_pt, proxy.url).ensure, "pt", names=("pt",))
        assert proxy.requests == []
    ModelCache(ctx.cache).reclaim_temp(0)  # the next run reclaims the failed attempts


def _st(header: object) -> bytes:
    import struct

    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def _served_bad(ctx: Ctx, cfg: Path, name: str, rel: str, body: bytes) -> None:
    """Serve ``body`` for ``rel`` (listing and file agree, so only the format
    check can catch it) and expect a typed refusal naming the file."""
    import hashlib

    from caxton_models.ops.server import Catalog, ServerThread
    from tests.faults.repo import MODELS, repo_dir

    src = ctx.out / f"repo-{name}"
    if src.exists():
        import shutil

        shutil.rmtree(src)
    shutil_copy(repo_dir(name), src)
    (src / rel).write_bytes(body)
    cat = Catalog.from_folder(src, MODELS[name][0], commit=hashlib.sha1(body).hexdigest())
    with ServerThread(cat) as srv, FaultProxy(srv.url) as proxy:
        ctx.expect(InvalidModelFormat, manager(cfg, proxy.url).ensure, name, names=(rel, name))
    assert not (ctx.cache / name).exists()


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


@scenario("registry-truncated", rows=(47, 51))
def registry_truncated(ctx: Ctx) -> None:
    """registry.json cut at every byte offset (and emptied, and not JSON):
    every read recovers the index from the model dirs and no model is lost;
    a model dir deleted or added behind our back is resynced."""
    _install(ctx, "tiny", "tiny-b")
    ctx.protect("tiny")
    ctx.protect("tiny-b")
    reg = ctx.cache / "registry.json"
    good = reg.read_bytes()
    ctx.begin()
    step = 1 if not ctx.cheap else max(1, len(good) // 97)
    for cut in [*range(0, len(good), step), len(good) - 1]:
        reg.write_bytes(good[:cut])
        index = ModelCache(ctx.cache).read_index()
        assert sorted(index["models"]) == ["tiny", "tiny-b"], cut
    for junk in (b"", b"\x00" * 50, b"[]", b'{"schema_version": 99}', b"\xff\xfe"):
        reg.write_bytes(junk)
        assert sorted(ModelCache(ctx.cache).read_index()["models"]) == ["tiny", "tiny-b"]
    assert json.loads(reg.read_text())["models"]  # rewritten whole
    with FaultProxy(hub().url) as proxy:  # and a load after it makes no request
        ctx.call(manager(ctx.work / "caxton.yaml", proxy.url).ensure, "tiny")
        assert proxy.requests == []


@scenario("bad-metadata-and-clock", rows=(48, 49, 50, 52))
def bad_metadata_and_clock(ctx: Ctx) -> None:
    """Metadata with wrong types, dates before 1970 or far ahead, and the
    clock stepping back during eviction: no crash, nothing lost, the pinned
    and in-use models never evicted, a limit below one model is typed."""
    import caxton_models.store._cache as cache_mod

    _install(ctx, "tiny", "tiny-b", "tiny-c")
    ctx.protect("tiny")
    write_config(ctx.work / "small.yaml", "memory:\n  model_cache: {max_size_gb: 0.0000001}\n")
    ctx.begin()
    meta_b = ctx.cache / "tiny-b" / ".caxton_metadata"
    good_b = json.loads(meta_b.read_text())
    dates = ["1969-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "0000", -5, None, 1e309, "now"]
    cache = ModelCache(ctx.cache)
    for d in dates:
        meta_b.write_text(json.dumps({**good_b, "last_access": d, "download_date": d}))
        m = ctx.call(cache.get, "tiny-b")
        assert m is not None and m.last_access() <= datetime.now(timezone.utc) + timedelta(1)
    bad: object
    for bad in ({**good_b, "total_size_bytes": -1}, {**good_b, "schema_version": 99}, [], {}):
        meta_b.write_text(json.dumps(bad))
        assert ctx.call(cache.get, "tiny-b") is not None  # unverified or read-only, kept
    meta_b.write_text(json.dumps(good_b))
    # The clock steps back a day between two reads of "now".
    real = cache_mod.now_utc
    ticks = iter([real(), real() - timedelta(days=1)] * 50)
    cache_mod.now_utc = lambda: next(ticks, real())
    try:
        cache.touch("tiny-c")
        cache.flush_access()
        cache.set_pinned("tiny", True)
        with cache.in_use("tiny-b"):
            ctx.expect(CacheFull, cache.make_room, CacheLimits(max_models=1))
            assert sorted(m.name for m in cache.installed()) == ["tiny", "tiny-b", "tiny-c"]
            gone = ctx.call(cache.make_room, CacheLimits(max_models=2))
        assert gone == ["tiny-c"], gone
    finally:
        cache_mod.now_utc = real
    assert (ctx.cache / "tiny").is_dir() and (ctx.cache / "tiny-b").is_dir()
    # A size limit smaller than one model: a typed error before evicting anything.
    cfg = ctx.work / "small.yaml"
    with FaultProxy(hub().url) as proxy:
        ctx.expect(CaxtonError, manager(cfg, proxy.url).ensure, "tiny-c")
    assert (ctx.cache / "tiny").is_dir() and (ctx.cache / "tiny-b").is_dir()
    assert repo_sha256("tiny", W)
    ModelCache(ctx.cache).reclaim_temp(0)  # the next run reclaims the refused attempt
