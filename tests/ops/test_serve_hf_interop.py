"""The real huggingface_hub client downloads the real all-MiniLM-L6-v2 from `caxton model serve`.

Done-criterion of issue 4: byte-identical files, and the HF cache layout the real Hub
produces (blobs named by LFS sha256 / git blob sha1, refs/main = the commit).
"""

from __future__ import annotations

import filecmp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Imported, not importorskip'd: a skip at collection would escape CAXTON_NO_SKIPS.
import huggingface_hub as hf
import huggingface_hub.errors as hf_errors
import pytest

from caxton_models.ops.server import ServerThread
from tests.support.hubfaults import MINILM_COMMIT, MINILM_REPO_ID, minilm_catalog, minilm_sha256s


@pytest.fixture(scope="module", params=[False, True], ids=["direct", "lfs-redirect"])
def server(request: pytest.FixtureRequest, minilm_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(minilm_catalog(minilm_dir), lfs_redirect=request.param) as srv:
        yield srv


def _repo_files(minilm_dir: Path) -> list[str]:
    return sorted(minilm_sha256s(minilm_dir))


def _assert_same_files(got: Path, minilm_dir: Path, names: list[str]) -> None:
    for name in names:
        assert (got / name).is_file(), f"{name} missing from the download"
        assert filecmp.cmp(got / name, minilm_dir / name, shallow=False), f"{name} differs"


@pytest.mark.parametrize("revision", [MINILM_COMMIT, "main"])
def test_snapshot_download_is_byte_identical(
    server: ServerThread, minilm_dir: Path, tmp_path: Path, revision: str
) -> None:
    cache = tmp_path / "hf-cache"
    out = Path(
        hf.snapshot_download(
            MINILM_REPO_ID, revision=revision, endpoint=server.url, cache_dir=cache, max_workers=4
        )
    )
    names = _repo_files(minilm_dir)
    assert out.name == MINILM_COMMIT
    _assert_same_files(out, minilm_dir, names)
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == names, "the mirror must serve exactly the repo's files (no SHA256SUMS)"

    # The same cache layout as the real Hub: blobs named by the Hub's ETags.
    repo_cache = cache / "models--sentence-transformers--all-MiniLM-L6-v2"
    blobs = {p.name for p in (repo_cache / "blobs").iterdir()}
    sha256s = minilm_sha256s(minilm_dir)
    assert sha256s["model.safetensors"] in blobs
    assert sha256s["onnx/model.onnx"] in blobs
    assert "72b987fd805cfa2b58c4c8c952b274a11bfd5a00" in blobs  # git blob sha1 of config.json
    assert len(blobs) == len(names)
    if revision == "main":
        assert (repo_cache / "refs" / "main").read_text() == MINILM_COMMIT


def test_hf_hub_download_single_files(
    server: ServerThread, minilm_dir: Path, tmp_path: Path
) -> None:
    for name in ["config.json", "1_Pooling/config.json", "model.safetensors"]:
        local = hf.hf_hub_download(
            MINILM_REPO_ID, name, revision="main", endpoint=server.url, cache_dir=tmp_path / "c"
        )
        assert filecmp.cmp(local, minilm_dir / name, shallow=False)
    # local_dir mode writes plain files.
    local = hf.hf_hub_download(
        MINILM_REPO_ID, "tokenizer.json", endpoint=server.url, local_dir=tmp_path / "flat"
    )
    assert Path(local) == tmp_path / "flat" / "tokenizer.json"
    assert filecmp.cmp(local, minilm_dir / "tokenizer.json", shallow=False)


def test_model_info_and_file_listing(server: ServerThread, minilm_dir: Path) -> None:
    api = hf.HfApi(endpoint=server.url)
    info = api.model_info(MINILM_REPO_ID, files_metadata=True)
    assert info.sha == MINILM_COMMIT
    by_name = {s.rfilename: s for s in info.siblings or []}
    assert sorted(by_name) == _repo_files(minilm_dir)
    st = by_name["model.safetensors"]
    assert st.size == (minilm_dir / "model.safetensors").stat().st_size
    assert st.lfs is not None and st.lfs.sha256 == minilm_sha256s(minilm_dir)["model.safetensors"]
    assert sorted(api.list_repo_files(MINILM_REPO_ID, revision=MINILM_COMMIT)) == _repo_files(
        minilm_dir
    )
    meta = hf.get_hf_file_metadata(hf.hf_hub_url(MINILM_REPO_ID, "vocab.txt", endpoint=server.url))
    assert meta.commit_hash == MINILM_COMMIT
    assert meta.size == (minilm_dir / "vocab.txt").stat().st_size


def test_errors_select_hf_exception_classes(server: ServerThread, tmp_path: Path) -> None:
    kw: dict[str, Any] = {"endpoint": server.url, "cache_dir": tmp_path}
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        hf.hf_hub_download("nobody/missing-model", "config.json", **kw)
    with pytest.raises(hf_errors.RevisionNotFoundError):
        hf.hf_hub_download(MINILM_REPO_ID, "config.json", revision="no-such-branch", **kw)
    with pytest.raises(hf_errors.EntryNotFoundError):
        hf.hf_hub_download(MINILM_REPO_ID, "no_such_file.json", **kw)
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        hf.HfApi(endpoint=server.url).model_info("nobody/missing-model")
