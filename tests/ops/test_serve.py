"""`caxton model serve`: the protocol details, what it refuses to serve, and the CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from caxton_models import _core
from caxton_models.acquire.hub import HubClient
from caxton_models.ops.server import Catalog, CatalogError, ServeOptions, ServerThread
from tests.support.cli import cli_serve
from tests.support.hubfaults import (
    MINILM_COMMIT,
    MINILM_REPO_ID,
    make_cache_entry,
    minilm_catalog,
    minilm_sha256s,
)
from tests.support.rawhttp import request

REPO = MINILM_REPO_ID


# -- resolve -----------------------------------------------------------------------------------


def test_head_headers_match_the_hub(minilm_server: ServerThread, minilm_dir: Path) -> None:
    sums = minilm_sha256s(minilm_dir)
    st, h, body = request(minilm_server.url, "HEAD", f"/{REPO}/resolve/main/model.safetensors")
    size = (minilm_dir / "model.safetensors").stat().st_size
    assert st == 200 and body == b""
    assert h["x-repo-commit"] == MINILM_COMMIT
    assert h["etag"] == f'"{sums["model.safetensors"]}"'  # LFS: the sha256
    assert h["x-linked-etag"] == h["etag"]
    assert h["x-linked-size"] == h["content-length"] == str(size)
    assert h["accept-ranges"] == "bytes"
    st, h, _ = request(minilm_server.url, "HEAD", f"/{REPO}/resolve/{MINILM_COMMIT}/config.json")
    assert st == 200
    # Small file: the git blob sha1, as `git hash-object` gives it.
    assert h["etag"] == f'"{_core.git_blob_sha1_file(minilm_dir / "config.json")}"'


def test_get_full_and_ranges(minilm_server: ServerThread, minilm_dir: Path) -> None:
    data = (minilm_dir / "vocab.txt").read_bytes()
    size = len(data)
    path = f"/{REPO}/resolve/main/vocab.txt"
    st, h, body = request(minilm_server.url, "GET", path)
    assert (st, body) == (200, data)
    cases = {
        "bytes=10-19": (10, 20),
        "bytes=1000-": (1000, size),
        "bytes=-7": (size - 7, size),
        "bytes=0-0": (0, 1),
        f"bytes={size - 1}-{size + 100}": (size - 1, size),
    }
    for rng, (a, b) in cases.items():
        st, h, body = request(minilm_server.url, "GET", path, {"Range": rng})
        assert st == 206, rng
        assert body == data[a:b], rng
        assert h["content-range"] == f"bytes {a}-{b - 1}/{size}"
        assert h["content-length"] == str(b - a)
    st, h, _ = request(minilm_server.url, "GET", path, {"Range": f"bytes={size}-"})
    assert st == 416 and h["content-range"] == f"bytes */{size}"
    # Multi-range and junk are ignored: the whole file, never a wrong slice.
    for rng in ("bytes=0-1,5-6", "items=0-5", "bytes=x-y"):
        st, _, body = request(minilm_server.url, "GET", path, {"Range": rng})
        assert (st, body) == (200, data), rng


def test_if_range_with_a_stale_etag_sends_the_whole_file(
    minilm_server: ServerThread, minilm_dir: Path
) -> None:
    data = (minilm_dir / "tokenizer.json").read_bytes()
    path = f"/{REPO}/resolve/main/tokenizer.json"
    _, h, _ = request(minilm_server.url, "HEAD", path)
    st, _, body = request(
        minilm_server.url, "GET", path, {"Range": "bytes=5-", "If-Range": h["etag"]}
    )
    assert (st, body) == (206, data[5:])
    st, _, body = request(
        minilm_server.url, "GET", path, {"Range": "bytes=5-", "If-Range": '"stale"'}
    )
    assert (st, body) == (200, data)


def test_missing_things_carry_x_error_code(minilm_server: ServerThread) -> None:
    st, h, _ = request(minilm_server.url, "HEAD", f"/{REPO}/resolve/main/missing.bin")
    assert (st, h["x-error-code"], h["x-repo-commit"]) == (404, "EntryNotFound", MINILM_COMMIT)
    st, h, _ = request(minilm_server.url, "GET", f"/{REPO}/resolve/v9/config.json")
    assert (st, h["x-error-code"]) == (404, "RevisionNotFound")
    st, h, _ = request(minilm_server.url, "GET", f"/{REPO}/resolve/{'0' * 40}/config.json")
    assert (st, h["x-error-code"]) == (404, "RevisionNotFound")
    st, h, _ = request(minilm_server.url, "GET", "/nobody/nothing/resolve/main/config.json")
    assert (st, h["x-error-code"]) == (404, "RepoNotFound")
    st, h, _ = request(minilm_server.url, "GET", "/api/models/nobody/nothing/revision/main")
    assert (st, h["x-error-code"]) == (404, "RepoNotFound")
    st, h, _ = request(minilm_server.url, "GET", "/api/datasets/squad")
    assert st == 404


@pytest.mark.parametrize(
    "path",
    [
        "../../../../etc/passwd",
        "onnx/../../../../etc/passwd",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "..%2f..%2f..%2fetc%2fpasswd",
        "/etc/passwd",
        "SHA256SUMS",  # in the folder, but not a repo file
        ".caxton_metadata",
        "onnx",
    ],
)
def test_paths_never_escape_the_manifest(minilm_server: ServerThread, path: str) -> None:
    st, _, body = request(minilm_server.url, "GET", f"/{REPO}/resolve/main/{path}")
    assert st == 404
    assert b"root:" not in body


# -- API -------------------------------------------------------------------------------------


def test_revision_api_and_tree(minilm_server: ServerThread, minilm_dir: Path) -> None:
    sums = minilm_sha256s(minilm_dir)
    for rev in ("main", MINILM_COMMIT):
        st, _, body = request(minilm_server.url, "GET", f"/api/models/{REPO}/revision/{rev}")
        info = json.loads(body)
        assert st == 200 and info["sha"] == MINILM_COMMIT and info["id"] == REPO
        assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(sums)
    st, _, body = request(minilm_server.url, "GET", f"/api/models/{REPO}/tree/main?recursive=true")
    tree = json.loads(body)
    files = {e["path"]: e for e in tree if e["type"] == "file"}
    assert sorted(files) == sorted(sums)
    assert files["onnx/model.onnx"]["lfs"]["oid"] == sums["onnx/model.onnx"]
    assert "lfs" not in files["tokenizer.json"]
    assert all(re.fullmatch(r"[0-9a-f]{40}", e["oid"]) for e in tree)
    # Non-recursive listings show folders; a sub-path lists that folder.
    st, _, body = request(minilm_server.url, "GET", f"/api/models/{REPO}/tree/main")
    top = {e["path"]: e["type"] for e in json.loads(body)}
    assert top["onnx"] == "directory" and "onnx/model.onnx" not in top
    st, _, body = request(
        minilm_server.url, "GET", f"/api/models/{REPO}/tree/{MINILM_COMMIT}/1_Pooling"
    )
    assert [e["path"] for e in json.loads(body)] == ["1_Pooling/config.json"]
    st, h, _ = request(minilm_server.url, "GET", f"/api/models/{REPO}/tree/main/nope")
    assert (st, h["x-error-code"]) == (404, "EntryNotFound")


# -- redirect to a second origin, gated repos --------------------------------------------------


def test_lfs_redirect_to_a_second_origin(minilm_dir: Path) -> None:
    with ServerThread(minilm_catalog(minilm_dir), lfs_redirect=True) as srv:
        assert srv.lfs_url and srv.lfs_url != srv.url
        st, h, _ = request(srv.url, "HEAD", f"/{REPO}/resolve/main/onnx/model.onnx")
        assert st == 302
        assert h["x-linked-size"] == str((minilm_dir / "onnx/model.onnx").stat().st_size)
        assert h["location"].startswith(srv.lfs_url + "/lfs/")
        loc = urlsplit(h["location"])
        st, _, body = request(srv.lfs_url, "GET", loc.path, {"Range": "bytes=0-99"})
        assert (st, body) == (206, (minilm_dir / "onnx/model.onnx").read_bytes()[:100])
        # Small files are never redirected.
        st, _, _ = request(srv.url, "HEAD", f"/{REPO}/resolve/main/config.json")
        assert st == 200


def test_gated_repo_needs_a_token(minilm_dir: Path) -> None:
    opts = ServeOptions(gated=frozenset({REPO}), tokens=frozenset({"hf_good"}))
    with ServerThread(minilm_catalog(minilm_dir), options=opts) as srv:
        path = f"/{REPO}/resolve/main/config.json"
        st, h, _ = request(srv.url, "GET", path)
        assert (st, h["x-error-code"]) == (401, "GatedRepo")
        st, h, _ = request(srv.url, "GET", path, {"Authorization": "Bearer hf_bad"})
        assert (st, h["x-error-code"]) == (403, "GatedRepo")
        st, _, body = request(srv.url, "GET", path, {"Authorization": "Bearer hf_good"})
        assert (st, body) == (200, (minilm_dir / "config.json").read_bytes())


# -- sources: a caxton cache, a folder of repos -------------------------------------------------


def _small_repo(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}\n')
    (root / "sub" / "weights.bin").write_bytes(os.urandom(4096))
    (root / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    return root


def test_cache_serves_only_verified_files_of_the_right_size(tmp_path: Path) -> None:
    src = _small_repo(tmp_path / "src")
    cache = tmp_path / "cache"
    commit = "a" * 40
    entry = make_cache_entry(cache, "tiny", src, "acme/tiny", commit)
    make_cache_entry(cache, "broken", src, "acme/broken", "b" * 40, status="corrupt")
    # Tamper: a listed file that grew, a listed path that escapes, a symlink.
    sums = json.loads((entry / ".caxton_checksum").read_text())
    (entry / "config.json").unlink()
    (entry / "config.json").write_text('{"a": 1, "tampered": true}\n')
    outside = tmp_path / "secret.txt"
    outside.write_text("TOPSECRET")
    (entry / "link.txt").symlink_to(outside)
    sums["files"]["link.txt"] = {"size": 9, "sha256": "0" * 64, "git_oid": None, "lfs": False}
    # A manifest naming a path that escapes is not a manifest the store reads:
    # the entry is corrupt and nothing of it is served.
    hostile = json.loads(json.dumps(sums))
    hostile["files"]["../../secret.txt"] = {"size": 9, "sha256": "0" * 64, "git_oid": None}
    (entry / ".caxton_checksum").write_text(json.dumps(hostile))
    assert Catalog.from_cache(cache).repo_ids == []
    (entry / ".caxton_checksum").write_text(json.dumps(sums))

    catalog = Catalog.from_cache(cache)
    assert catalog.repo_ids == ["acme/tiny"]
    snap = catalog.lookup("acme/tiny", "main")
    assert snap.commit == commit
    assert sorted(snap.files) == [".gitattributes", "sub/weights.bin"]
    assert snap.files["sub/weights.bin"].lfs
    with ServerThread(catalog) as srv:
        st, _, body = request(srv.url, "GET", f"/acme/tiny/resolve/{commit}/sub/weights.bin")
        assert (st, body) == (200, (src / "sub" / "weights.bin").read_bytes())
        for p in ("config.json", "link.txt", "../../secret.txt"):
            st, _, body = request(srv.url, "GET", f"/acme/tiny/resolve/main/{p}")
            assert st == 404 and b"TOPSECRET" not in body
        # A file swapped for a symlink after start-up is not followed.
        weights = entry / "sub" / "weights.bin"
        saved = weights.read_bytes()
        same_size = tmp_path / "same-size-secret.bin"
        same_size.write_bytes(b"TOPSECRET".ljust(len(saved), b"!"))  # passes the size check
        weights.unlink()
        weights.symlink_to(same_size)
        st, _, body = request(srv.url, "GET", "/acme/tiny/resolve/main/sub/weights.bin")
        assert st == 404 and b"TOPSECRET" not in body
        weights.unlink()
        weights.write_bytes(saved)
        # A file that changes after start-up is no longer served.
        (entry / "sub" / "weights.bin").unlink()
        (entry / "sub" / "weights.bin").write_bytes(b"short")
        st, _, _ = request(srv.url, "GET", "/acme/tiny/resolve/main/sub/weights.bin")
        assert st == 404


def test_repos_folder_layout_and_commit(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    _small_repo(root / "acme" / "one")
    _small_repo(root / "solo")
    (root / "acme" / "one" / ".caxton_metadata").write_text(
        json.dumps({"commit": "c" * 40, "revision": "v1"})
    )
    (root / "solo" / "evil").symlink_to("/etc/passwd")
    catalog = Catalog.from_repos(root)
    assert catalog.repo_ids == ["acme/one", "solo"]
    assert catalog.lookup("acme/one", "v1").commit == "c" * 40
    assert catalog.lookup("acme/one", "main").commit == "c" * 40
    solo = catalog.lookup("solo", "main")
    assert "evil" not in solo.files
    # Without metadata the commit is a stable function of the files.
    assert Catalog.from_repos(root).lookup("solo", "main").commit == solo.commit
    assert re.fullmatch(r"[0-9a-f]{40}", solo.commit)
    with pytest.raises(CatalogError):
        Catalog.from_repos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError):
        Catalog.from_repos(tmp_path / "empty")


# -- the CLI, with the real files, to huggingface_hub -------------------------------------------


def test_cli_serves_a_real_cache_to_both_clients(minilm_dir: Path, tmp_path: Path) -> None:
    hf = pytest.importorskip("huggingface_hub", reason="the real Hub client (test extra)")
    cache = tmp_path / "cache"
    make_cache_entry(cache, "all-MiniLM-L6-v2", minilm_dir, REPO, MINILM_COMMIT)
    with cli_serve(cache, tmp_path / "serve.stderr") as url:
        sums = minilm_sha256s(minilm_dir)
        out = Path(hf.snapshot_download(REPO, endpoint=url, cache_dir=tmp_path / "hf"))
        for name, digest in sums.items():
            assert _core.sha256_file(out / name) == digest, name
        # And to our own client, through the Rust core.
        client = HubClient([url])
        info = client.resolve(REPO, "main")
        assert info.commit == MINILM_COMMIT
        assert sorted(f.path for f in info.files) == sorted(sums)
        for f in info.files:
            dest = tmp_path / "ours" / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(info, f.path, dest)
            assert _core.sha256_file(dest) == sums[f.path], f.path


def test_many_concurrent_range_requests_reassemble_the_file(
    minilm_server: ServerThread, minilm_dir: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = (minilm_dir / "onnx" / "model.onnx").read_bytes()
    n = 16
    bounds = [len(data) * i // n for i in range(n + 1)]

    def part(i: int) -> bytes:
        rng = f"bytes={bounds[i]}-{bounds[i + 1] - 1}"
        st, _, body = request(
            minilm_server.url, "GET", f"/{REPO}/resolve/main/onnx/model.onnx", {"Range": rng}
        )
        assert st == 206
        return body

    with ThreadPoolExecutor(8) as pool:
        assert b"".join(pool.map(part, range(n))) == data
