"""A mirror serves a commit only from files that belong to that commit: after a cache
switches revisions under it, after a folder is edited in place, and for a model it
installed from a folder (which recorded no branch)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from caxton_models import _core
from caxton_models.acquire._install import install_from_dir
from caxton_models.ops.server import Catalog, ServerThread
from caxton_models.store import ModelCache
from tests.support.cli import cli_serve
from tests.support.protobuf import fake_onnx
from tests.support.rawhttp import request

REPO = "org/mini"
A, B = "a" * 40, "b" * 40
SMALL = ("config.json", "sentence_bert_config.json", "vocab.txt")
WEIGHTS = "onnx/model.onnx"


def _revision(minilm_dir: Path, dest: Path, tag: str) -> Path:
    """A small model; revision "b" changes ``sentence_bert_config.json`` without changing
    its size (256 -> 128) and its weights with the same size, the worst case for a
    server that checks sizes only."""
    (dest / "onnx").mkdir(parents=True)
    for rel in SMALL:
        shutil.copyfile(minilm_dir / rel, dest / rel)
    if tag == "b":
        st = (minilm_dir / "sentence_bert_config.json").read_text()
        (dest / "sentence_bert_config.json").write_text(st.replace("256", "128"))
    (dest / WEIGHTS).write_bytes(fake_onnx(40_002, fill=tag.encode()))
    return dest


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _etag_matches(headers: dict[str, str], body: bytes) -> bool:
    etag = headers["etag"].strip('"')
    return etag in (_git_oid(body), hashlib.sha256(body).hexdigest())


@pytest.fixture
def switched(tmp_path: Path, minilm_dir: Path) -> tuple[Path, Path]:
    """A cache holding ``org/mini`` at A, and the folder A was installed from."""
    cache = ModelCache(tmp_path / "cache")
    src_a = _revision(minilm_dir, tmp_path / "src-a", "a")
    install_from_dir(cache, "mini", src_a, model_id=REPO, revision="main", commit=A)
    return tmp_path / "cache", src_a


def test_a_commit_is_served_from_its_own_files_after_an_update(
    switched: tuple[Path, Path], tmp_path: Path, minilm_dir: Path
) -> None:
    from huggingface_hub import hf_hub_download

    cache_dir, src_a = switched
    with ServerThread(Catalog.from_cache(cache_dir)) as srv:
        # Asked once before the switch (a client that cached A's headers, say).
        st, h, body = request(srv.url, "GET", f"/{REPO}/resolve/{A}/sentence_bert_config.json")
        assert st == 200 and _etag_matches(h, body)
        # `caxton model update`: B becomes current, A moves to .revisions/mini/A.
        src_b = _revision(minilm_dir, tmp_path / "src-b", "b")
        install_from_dir(
            ModelCache(cache_dir), "mini", src_b, model_id=REPO, revision="main", commit=B
        )
        assert (cache_dir / ".revisions" / "mini" / A).is_dir()
        for rel in (*SMALL, WEIGHTS):
            want = (src_a / rel).read_bytes()
            st, h, body = request(srv.url, "GET", f"/{REPO}/resolve/{A}/{rel}")
            assert (st, h["x-repo-commit"]) == (200, A), rel
            assert body == want, f"{rel}: not A's bytes"
            assert _etag_matches(h, body), f"{rel}: the ETag does not name the body"
        got = hf_hub_download(
            REPO, "sentence_bert_config.json", revision=A, endpoint=srv.url, cache_dir=tmp_path
        )
        assert Path(got).read_bytes() == (src_a / "sentence_bert_config.json").read_bytes()
        # B is served too, by its own commit.
        st, h, body = request(srv.url, "GET", f"/{REPO}/resolve/{B}/sentence_bert_config.json")
        assert st == 200 and b"128" in body and _etag_matches(h, body)


def test_a_stored_revision_is_its_own_entry(
    switched: tuple[Path, Path], tmp_path: Path, minilm_dir: Path
) -> None:
    cache_dir, _ = switched
    src_b = _revision(minilm_dir, tmp_path / "src-b", "b")
    install_from_dir(ModelCache(cache_dir), "mini", src_b, model_id=REPO, revision="main", commit=B)
    cat = Catalog.from_cache(cache_dir)
    assert {c for _, c in cat.snapshots} == {A, B}
    assert cat.commit_of(REPO, "main") == B  # a stored revision names no branch
    a_dir = cache_dir / ".revisions" / "mini" / A
    for rel, f in cat.lookup(REPO, A).files.items():
        assert f.local == a_dir / rel


def test_a_cache_file_edited_in_place_is_never_served(switched: tuple[Path, Path]) -> None:
    cache_dir, _ = switched
    target = cache_dir / "mini" / "sentence_bert_config.json"
    with ServerThread(Catalog.from_cache(cache_dir)) as srv:
        path = f"/{REPO}/resolve/main/sentence_bert_config.json"
        assert request(srv.url, "GET", path)[0] == 200
        stat = target.stat()
        os.chmod(target, 0o644)
        # Same size, same mtime (cp --preserve=timestamps): only the bytes differ.
        target.write_bytes(target.read_bytes().replace(b"256", b"512"))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        st, h, body = request(srv.url, "GET", path)
        assert st == 404 and b"512" not in body
        assert h["x-error-code"] == "EntryNotFound"
        # A restart does not trust it either: its bytes are newer than the manifest.
    os.utime(target, None)
    with ServerThread(Catalog.from_cache(cache_dir)) as srv:
        st, _, body = request(srv.url, "GET", path)
        assert st == 404 and b"512" not in body


def test_a_repos_folder_edited_in_place_serves_no_stale_etag(
    tmp_path: Path, minilm_dir: Path
) -> None:
    repo = _revision(minilm_dir, tmp_path / "repos" / "org" / "mini", "a")
    (repo / ".caxton_metadata").write_text(json.dumps({"commit": A, "revision": "main"}))
    with ServerThread(Catalog.from_repos(tmp_path / "repos")) as srv:
        path = f"/{REPO}/resolve/main/config.json"
        st, h, before = request(srv.url, "GET", path)
        assert st == 200 and _etag_matches(h, before)
        data = bytearray(before)
        data[10:11] = b"X" if data[10:11] != b"X" else b"Y"
        (repo / "config.json").write_bytes(bytes(data))
        st, h, body = request(srv.url, "GET", path)
        # Re-hashed: the new bytes under their own ETag, never under the old one.
        assert st == 200 and body == bytes(data) and _etag_matches(h, body)
        assert h["etag"].strip('"') == _core.git_blob_sha1_file(repo / "config.json")


def test_main_is_the_current_revision_of_an_install_that_recorded_no_branch(
    tmp_path: Path, minilm_dir: Path
) -> None:
    from huggingface_hub import snapshot_download

    cache_dir = tmp_path / "cache"
    src = _revision(minilm_dir, tmp_path / "src-a", "a")
    # Installed from a folder, never fetched: it records commit A and no branch.
    install_from_dir(ModelCache(cache_dir), "mini", src, model_id=REPO, commit=A)
    with ServerThread(Catalog.from_cache(cache_dir)) as srv:
        st, h, body = request(srv.url, "GET", f"/api/models/{REPO}/revision/main")
        assert (st, json.loads(body)["sha"]) == (200, A)
        assert h["x-caxton-ref-source"] == "current-revision"
        st, h, _ = request(srv.url, "HEAD", f"/{REPO}/resolve/main/config.json")
        assert (st, h["x-repo-commit"], h["x-caxton-ref-source"]) == (200, A, "current-revision")
        st, _, body = request(srv.url, "GET", f"/api/models/{REPO}/refs")
        assert json.loads(body)["branches"][0]["targetCommit"] == A
        # huggingface_hub at its default revision, no --ref: byte-identical files.
        out = Path(snapshot_download(REPO, endpoint=srv.url, cache_dir=tmp_path / "hf"))
        for rel in (*SMALL, WEIGHTS):
            assert (out / rel).read_bytes() == (src / rel).read_bytes(), rel
        # A commit asked for by its id is no branch answered for it.
        st, h, _ = request(srv.url, "HEAD", f"/{REPO}/resolve/{A}/config.json")
        assert st == 200 and "x-caxton-ref-source" not in h
        # Other branch names are not guessed.
        st, h, _ = request(srv.url, "GET", f"/api/models/{REPO}/revision/dev")
        assert (st, h["x-error-code"]) == (404, "RevisionNotFound")

    # B becomes current; the operator's --ref still wins over it.
    src_b = _revision(minilm_dir, tmp_path / "src-b", "b")
    install_from_dir(ModelCache(cache_dir), "mini", src_b, model_id=REPO, commit=B)
    cat = Catalog.from_cache(cache_dir)
    assert cat.lookup(REPO, "main").commit == B
    cat.pin_ref(REPO, "main", A)
    with ServerThread(cat) as srv:
        st, h, body = request(srv.url, "GET", f"/api/models/{REPO}/revision/main")
        assert (st, json.loads(body)["sha"]) == (200, A)
        assert "x-caxton-ref-source" not in h


# The client in a subprocess, so that 2.x can be put first on its path while the
# test command's own huggingface_hub stays 1.x.
_CLIENT = """
import json, sys
import huggingface_hub as hf
out = hf.snapshot_download(sys.argv[1], endpoint=sys.argv[2], cache_dir=sys.argv[3])
print(json.dumps({"version": hf.__version__, "path": out}))
"""


@pytest.mark.parametrize("major", ["1", "2"])
def test_snapshot_download_at_the_default_revision_from_a_served_install(
    major: str, tmp_path: Path, minilm_dir: Path, request: pytest.FixtureRequest
) -> None:
    """huggingface_hub 1.x and 2.x, at their default revision, against `caxton
    model serve` with no --ref on a cache holding a model installed from a folder
    (never fetched upstream, so no branch recorded): byte-identical files, at
    the commit the install recorded."""
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "PYTHONPATH"):
        env.pop(var, None)
    if major == "2":
        env["PYTHONPATH"] = str(request.getfixturevalue("huggingface_hub_2"))
    cache_dir = tmp_path / "cache"
    src = _revision(minilm_dir, tmp_path / "src-a", "a")
    install_from_dir(ModelCache(cache_dir), "mini", src, model_id=REPO, commit=A)
    with cli_serve(cache_dir, tmp_path / "serve.stderr") as url:
        proc = subprocess.run(
            [sys.executable, "-c", _CLIENT, REPO, url, str(tmp_path / "hf")],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"].split(".")[0] == major, got
    out = Path(got["path"])
    assert out.name == A
    for rel in (*SMALL, WEIGHTS):
        assert (out / rel).read_bytes() == (src / rel).read_bytes(), rel
    refs = tmp_path / "hf" / f"models--{REPO.replace('/', '--')}" / "refs" / "main"
    assert refs.read_text() == A
