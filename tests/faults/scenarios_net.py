"""Network rows (1-14, 46): one download of the tiny model through a
FaultProxy with one fault, then the fault lifted and a second run. Every case
ends installed and verified, or with a typed error and nothing published."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from caxton_models import _core
from caxton_models.errors import (
    AccessDenied,
    CaxtonError,
    ChecksumMismatch,
    ConfigError,
    InsufficientDiskSpace,
    InvalidModelFormat,
    InvalidPath,
    ModelNotFound,
    OfflineError,
    ServerError,
)
from caxton_models.store import ModelCache
from tests.faults.harness import SENTINEL, Ctx, scenario
from tests.faults.repo import COMMITS, Fault, FaultProxy, hub, manager, repo_sha256, write_config
from tests.support.faultserver import Faults, FaultServer

W = "onnx/model.onnx"
FAST = "download: {retry_attempts: 2, retry_delay_ms: 20, request_timeout: 2}\n"

# name -> (rows, fault, expected error or None when the download must succeed)
CASES: dict[str, tuple[tuple[int, ...], Fault, type[CaxtonError] | None]] = {
    "drop-once": ((1,), Fault(path=W, drop_at=700_000, times=1), None),
    "drop-always-at-0": ((1,), Fault(path=W, drop_at=0), CaxtonError),
    "stall-once": ((2,), Fault(path=W, stall_after=100_000, stall_seconds=4, times=1), None),
    "500-then-200": ((3,), Fault(path=W, status_seq=[500, 503]), None),
    "429-retry-after": ((3,), Fault(path=W, status_seq=[429], retry_after="1"), None),
    "401": ((3,), Fault(path=W, status_seq=[401] * 9), AccessDenied),
    "403-gated": ((3,), Fault(path=W, status_seq=[403] * 9, error_code="GatedRepo"), AccessDenied),
    "404": ((3,), Fault(path=W, status_seq=[404] * 9, error_code="EntryNotFound"), CaxtonError),
    "range-ignored": ((4,), Fault(path=W, drop_at=500_000, times=1), None),
    "short-body": ((7,), Fault(path=W, content_length=5000, times=1), None),
    "no-length": ((8,), Fault(path=W, content_length="none", times=1), None),
    "junk-length": ((8,), Fault(path=W, content_length="junk", times=1), None),
    "flip-once": ((10,), Fault(path=W, flip_byte=123_456, times=1), ChecksumMismatch),
    "flip-always": ((10,), Fault(path=W, flip_byte=123_456), CaxtonError),
    "zeros": ((11,), Fault(path=W, zeros=True), CaxtonError),
    "html-200": ((11,), Fault(path=W, body=b"<html>rate limited</html>"), CaxtonError),
}
# Range ignored on the resume: the first response drops, the retry gets a 200.
CASES["range-ignored"][1].ignore_range = True


@scenario("net-transfer-faults", rows=(1, 2, 3, 4, 7, 8, 10, 11))
def transfer_faults(ctx: Ctx) -> None:
    cfg = write_config(ctx.work / "caxton.yaml", FAST)
    names = list(CASES)
    if ctx.cheap:  # the test command: the cases that finish fast
        names = [n for n in names if n not in ("stall-once",)]
    ctx.begin()
    want = repo_sha256("tiny", W)
    for case in names:
        with ctx.case(case):
            _one_transfer(ctx, cfg, case, want)


def _one_transfer(ctx: Ctx, cfg: Path, case: str, want: str) -> None:
    if True:  # one case, named in any failure by ctx.case
        _rows, fault, error = CASES[case]
        with FaultProxy(hub().url, [_copy(fault)]) as proxy:
            mgr = manager(cfg, proxy.url)
            if error is None:
                path, _ = ctx.call(mgr.ensure, "tiny")
                assert _core.sha256_file(path / W) == want, case
            else:
                e = ctx.expect(error, mgr.ensure, "tiny")
                assert not (ctx.cache / "tiny").exists(), f"{case}: published after {e}"
                assert "model.onnx" in str(e) or "tiny" in str(e), f"{case}: {e}"
                if case in ("401", "403-gated", "404"):  # never retried
                    assert len(proxy.seen("model.onnx", "GET")) == 1, case
        if error is not None:  # the fault lifted: the next run resumes or starts over
            with FaultProxy(hub().url) as proxy:
                path, _ = ctx.call(manager(cfg, proxy.url).ensure, "tiny")
        assert _core.sha256_file(ctx.cache / "tiny" / W) == want, case
        ctx.call(ModelCache(ctx.cache).remove, "tiny")


def _copy(f: Fault) -> Fault:
    from dataclasses import replace

    return replace(f, status_seq=list(f.status_seq))


@scenario("net-core-range-faults", rows=(4, 5, 6, 8, 9))
def core_range_faults(ctx: Ctx) -> None:
    """The engine alone (FaultServer knobs the proxy lacks): a wrong
    Content-Range, an ETag change, gzip, a long body. Bytes are spliced never."""
    data = os.urandom(3 << 20)
    digest = _core.sha256_file(_tmp(ctx, data))
    cases = {
        "bad-content-range": (Faults(bad_content_range=True, bad_content_range_times=2), True),
        "always-bad-range": (Faults(bad_content_range=True), True),
        "etag-change": (Faults(etag_change=True, etag_change_body=True, drop_at=1 << 20), False),
        "ignore-range": (Faults(ignore_range=True, drop_at=1 << 20), True),
        "gzip": (Faults(gzip=True), False),
        "long-body": (Faults(long_body=4096), True),  # each range is cut at its end
        # hyper refuses the message: a typed NetworkError, nothing written
        "negative-length": (Faults(content_length="-1"), False),
    }
    ctx.begin()
    ctx.cache.mkdir()
    with FaultServer() as srv:
        for case, (faults, ok) in cases.items():
            with ctx.case(case):
                url = srv.add(f"/{case}", data, faults)
                dest = ctx.cache / case
                headers = {"Authorization": f"Bearer {SENTINEL}"}
                kw: dict[str, Any] = {
                    "sha256": digest,
                    "headers": headers,
                    "chunk_size": 1 << 20,
                    "retries": 3,
                }
                if ok:
                    ctx.call(_core.download, url, dest, **kw)
                    assert _core.sha256_file(dest) == digest, case
                else:
                    ctx.expect(CaxtonError, _core.download, url, dest, **kw)
                    assert not dest.exists(), case
                for p in ctx.cache.iterdir():
                    if p.name.startswith(case + "."):
                        p.unlink()  # resumable state of a failed case: the next run's to claim
                if dest.exists():
                    dest.unlink()


def _tmp(ctx: Ctx, data: bytes) -> Path:
    p = ctx.work / "blob"
    p.write_bytes(data)
    return p


@scenario("net-token-redirects", rows=(12, 44, 45, 46))
def token_redirects(ctx: Ctx) -> None:
    """LFS files redirected to a second origin (another port, and another host
    name): the download succeeds and no request there carries the token."""
    cfg = write_config(ctx.work / "caxton.yaml", FAST)
    data = os.urandom(2 << 20)
    digest = _core.sha256_file(_tmp(ctx, data))
    ctx.begin()
    for host in ("127.0.0.1", "localhost"):
        with (
            FaultProxy(hub().url, host=host) as cdn,
            FaultProxy(hub().url, [Fault(path=W, redirect_to=cdn.url)]) as proxy,
        ):
            _path, _ = ctx.call(manager(cfg, proxy.url).ensure, "tiny")
            seen = cdn.seen("model.onnx")
            assert seen, "the redirect target was never asked"
            assert all("authorization" not in r.headers for r in seen), host
            assert all("cookie" not in r.headers for r in seen), host
            assert proxy.seen("model.onnx")[0].headers.get("authorization")
        ctx.call(ModelCache(ctx.cache).remove, "tiny")
    # A redirect chain that comes back to the first origin, and a resume whose
    # first request goes to the target: the target never sees the token.
    with FaultServer() as a, FaultServer() as b:
        a.add("/back", data)
        b.add("/hop", b"", Faults(redirect_to=a.url("/back")))
        a.add("/start", b"", Faults(redirect_to=b.url("/hop")))
        b.add("/blob", data, Faults(drop_at=1 << 20))
        a.add("/resume", b"", Faults(redirect_to=b.url("/blob")))
        ctx.cache.mkdir(exist_ok=True)
        hdr = {"Authorization": f"Bearer {SENTINEL}"}
        for start in ("/start", "/resume"):
            dest = ctx.cache / start.strip("/")
            ctx.call(_core.download, a.url(start), dest, sha256=digest, headers=hdr)
            assert _core.sha256_file(dest) == digest
            dest.unlink()
        assert all("authorization" not in r.headers for r in b.requests)
    # Credentials in the endpoint URL itself are redacted in every message.
    with FaultProxy(hub().url, [Fault(path=W, status_seq=[403] * 9)]) as proxy:
        url = proxy.url.replace("http://", f"http://user:{SENTINEL}@") + f"/?token={SENTINEL}"
        ctx.expect(ConfigError, manager(cfg, url).ensure, "tiny", names=("credentials",))


@scenario("net-offline-and-space", rows=(13, 14))
def offline_and_space(ctx: Ctx) -> None:
    cfg = write_config(ctx.work / "caxton.yaml", FAST)
    ctx.begin()
    with FaultProxy(hub().url) as proxy:
        mgr = manager(cfg, proxy.url)
        # Declared size beyond free space: refused before a byte of the weights.
        mgr.cache._disk_free = lambda p: 1000
        ctx.expect(InsufficientDiskSpace, mgr.ensure, "tiny")
        assert not proxy.seen("model.onnx", "GET")
        assert not (ctx.cache / "tiny").exists()
        ctx.call(manager(cfg, proxy.url).ensure, "tiny")
        ctx.protect("tiny")
        n = len(proxy.requests)
    os.environ["CAXTON_OFFLINE"] = "1"
    with FaultProxy(hub().url) as proxy:
        _path, _ = ctx.call(manager(cfg, proxy.url).ensure, "tiny")
        assert proxy.requests == [] and n > 0
        # An incomplete copy offline: a typed error, nothing changed.
        ctx.expect(OfflineError, manager(cfg, proxy.url).ensure, "tiny-b", names=("tiny-b",))
    del os.environ["CAXTON_OFFLINE"]


@scenario("net-hostile-listings", rows=(15, 16, 28, 29, 30, 31, 32))
def hostile_listings(ctx: Ctx) -> None:
    """A mirror lists unsafe names, bad hashes or a commit `../x`: the whole
    snapshot is refused before any file is requested or written."""
    import json

    cfg = write_config(ctx.work / "caxton.yaml", FAST)
    commit = COMMITS["tiny"]
    names = [
        "../../x", "a/../../x", "..\\x", "/etc/x", "C:\\x", "C:x", "\\\\h\\s\\x", "\\x",
        "CON", "nul.txt", "COM1", "a.", "a ", "a:b", "a<b", "a|b", "a?b", "a*b", "a\u0000b",
        "x" * 256, "d/" * 600 + "x", "\u202eexe.txt",
    ]  # fmt: skip
    twins = [["Config.json", "config.json"], ["caf\u00e9.json", "cafe\u0301.json"]]
    ok_entry = {"type": "file", "path": "config.json", "size": 10, "oid": "0" * 40}
    listings = [[{**ok_entry, "path": n}] for n in names] + [
        [{**ok_entry, "path": a}, {**ok_entry, "path": b}] for a, b in twins
    ]
    bad_hash = {**ok_entry, "path": W, "size": 5, "lfs": {"oid": "zz" * 32, "size": 5}}
    listings.append([bad_hash])
    ctx.begin()
    for listing in listings:
        body = json.dumps(listing).encode()
        with FaultProxy(hub().url, [Fault(path="/tree/", body=body)]) as proxy:
            ctx.expect(REFUSED, _ens, cfg, proxy)
            assert not proxy.seen("/resolve/"), listing
    rev = json.dumps({"id": "caxton-faults/tiny", "sha": "../x", "siblings": []}).encode()
    with FaultProxy(hub().url, [Fault(path="/revision/", body=rev)]) as proxy:
        ctx.expect(REFUSED, _ens, cfg, proxy)
        assert not proxy.seen("/resolve/")
    assert not (ctx.cache / "tiny").exists() and commit


REFUSED = (InvalidPath, InvalidModelFormat, ModelNotFound, ServerError)


def _ens(cfg: Path, proxy: FaultProxy) -> None:
    manager(cfg, proxy.url).ensure("tiny")
