"""The Hugging Face cache, both ways: a model huggingface_hub put there is
installed by hard link after every byte is checked (offline too), a blob
that fails is fetched again (only that file), and a verified model exported
with ``--hf-cache`` is found by huggingface_hub offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from caxton_models.acquire.manager import ModelManager
from caxton_models.config import load_config
from caxton_models.errors import OfflineError
from caxton_models.ops.cli import main as cli_main
from caxton_models.ops.server import ServerThread
from tests.support.hubfaults import MINILM_COMMIT, MINILM_REPO_ID, FaultProxy

hf = pytest.importorskip("huggingface_hub", reason="it writes the HF cache (test extra)")

MINI = "all-MiniLM-L6-v2"
REPO_DIR = "models--" + MINILM_REPO_ID.replace("/", "--")


@pytest.fixture(scope="module")
def hub_cache(minilm_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF cache as ``snapshot_download`` fills it from our mirror (default
    revision: refs/main names the commit), without the unused safetensors."""
    root = tmp_path_factory.mktemp("hf") / "hub"
    hf.snapshot_download(
        MINILM_REPO_ID,
        endpoint=minilm_server.url,
        cache_dir=root,
        ignore_patterns=["model.safetensors"],
    )
    assert (root / REPO_DIR / "refs" / "main").read_text().strip() == MINILM_COMMIT
    return root


def blob_of(hub_cache: Path, rel: str) -> Path:
    return Path(os.path.realpath(hub_cache / REPO_DIR / "snapshots" / MINILM_COMMIT / rel))


def manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: Path, offline: bool
) -> ModelManager:
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "caxton"))
    if offline:
        monkeypatch.setenv("CAXTON_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return ModelManager(load_config())


def test_offline_install_links_every_verified_blob(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_dir: Path
) -> None:
    mgr = manager(tmp_path, monkeypatch, hub_cache, offline=True)
    path, _ = mgr.ensure(MINI)  # no network client is even built offline: 0 bytes fetched
    installed = mgr.cache.get(MINI)
    assert installed is not None and installed.status == "verified"
    assert installed.metadata is not None and installed.metadata.commit == MINILM_COMMIT
    for rel in installed.manifest or {}:
        assert os.stat(path / rel).st_ino == os.stat(blob_of(hub_cache, rel)).st_ino, rel
    import caxton_models

    vec = caxton_models.load(str(path)).embed(["Hello world"])
    assert vec.shape == (1, 384) and np.isfinite(vec).all()


def test_offline_any_repo_id_is_described_from_the_hf_cache(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = manager(tmp_path, monkeypatch, hub_cache, offline=True)
    spec = mgr.specs.describe(MINILM_REPO_ID, "main")
    assert spec.model_id == MINILM_REPO_ID and spec.dimensions == 384


def test_a_flipped_byte_in_one_blob_fetches_only_that_file(
    minilm_server: ServerThread, hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A private copy of the HF cache (blobs hard-linked), one blob rewritten.
    mine = tmp_path / "hub"
    shutil.copytree(hub_cache, mine, symlinks=True, copy_function=os.link)
    bad = blob_of(mine, "tokenizer.json")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.unlink()
    bad.write_bytes(bytes(data))
    with FaultProxy(minilm_server.url) as proxy:
        monkeypatch.setenv("HF_ENDPOINT", proxy.url)
        mgr = manager(tmp_path, monkeypatch, mine, offline=False)
        path, _ = mgr.ensure(MINI)
        fetched = sorted({r.path.rsplit(f"/{MINILM_COMMIT}/", 1)[-1]
                          for r in proxy.seen("/resolve/", "GET")})  # fmt: skip
    assert fetched == ["tokenizer.json"]
    assert (path / "tokenizer.json").read_bytes() != bytes(data)
    assert bad.read_bytes() == bytes(data)  # the HF cache is never written
    assert (
        os.stat(path / "onnx" / "model.onnx").st_ino
        == os.stat(blob_of(mine, "onnx/model.onnx")).st_ino
    )


def test_offline_with_a_bad_blob_says_what_to_do(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "hub"
    shutil.copytree(hub_cache, mine, symlinks=True, copy_function=os.link)
    bad = blob_of(mine, "config.json")
    text = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(text.replace(b"384", b"385", 1))
    mgr = manager(tmp_path, monkeypatch, mine, offline=True)
    with pytest.raises(OfflineError, match=r"config\.json .*failed verification"):
        mgr.ensure(MINI)
    assert mgr.cache.get(MINI) is None  # nothing half-installed


def test_export_to_the_hf_cache_is_found_offline(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm_dir: Path
) -> None:
    mgr = manager(tmp_path, monkeypatch, hub_cache, offline=True)
    path, _ = mgr.ensure(MINI)
    out = tmp_path / "exported-hub"
    assert cli_main(["model", "export", "--model-id", MINI, "--hf-cache", str(out)]) == 0
    repo = out / REPO_DIR
    assert (repo / "refs" / "main").read_text() == MINILM_COMMIT
    got = hf.hf_hub_download(MINILM_REPO_ID, "config.json", cache_dir=out, local_files_only=True)
    assert Path(got).read_bytes() == (minilm_dir / "config.json").read_bytes()
    snap = Path(hf.snapshot_download(MINILM_REPO_ID, cache_dir=out, local_files_only=True))
    assert snap == repo / "snapshots" / MINILM_COMMIT
    onnx = snap / "onnx" / "model.onnx"
    assert (
        onnx.is_symlink() and os.stat(onnx).st_ino == os.stat(path / "onnx" / "model.onnx").st_ino
    )
    assert onnx.resolve().parent == repo / "blobs"
    # Exporting again is idempotent and leaves good blobs alone.
    assert cli_main(["model", "export", "--model-id", MINI, "--hf-cache", str(out)]) == 0
