"""Any Hub repository, not only the registry's: ``org/name`` is resolved,
described from its own modules.json and config.json, downloaded verified and
loaded, from a Hub-protocol server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import InvalidModelFormat, UnsafeModel
from caxton_models.ops.server import Catalog, ServerThread

COMMIT = "c0ffee" + "0" * 34
REPO = "acme/tiny-bert"
ST_FIXTURE = "st-bert-mean-normalize"  # what REPO serves


@pytest.fixture
def any_repo_server(tmp_path: Path, architectures_dir: Path) -> Iterator[ServerThread]:
    """Three repos: a safetensors-only sentence-transformers model, one of an
    architecture that has no graph builder, and one with pickle weights only."""
    st = architectures_dir / ST_FIXTURE
    gpt = tmp_path / "gpt"
    shutil.copytree(st, gpt)
    (gpt / "config.json").write_text((gpt / "config.json").read_text().replace('"bert"', '"gpt2"'))
    pickled = tmp_path / "pickled"
    shutil.copytree(st, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    catalog = Catalog.from_folder(st, REPO, commit=COMMIT)
    catalog.merge(Catalog.from_folder(gpt, "acme/gpt", commit=COMMIT))
    catalog.merge(Catalog.from_folder(pickled, "acme/pickled", commit=COMMIT))
    with ServerThread(catalog) as srv:
        yield srv


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))


def test_load_any_repo_from_its_safetensors(
    any_repo_server: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    architectures_dir: Path,
) -> None:
    srv, folder = any_repo_server, architectures_dir / ST_FIXTURE
    _env(monkeypatch, tmp_path, srv.url)
    emb = caxton_models.load(REPO)
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    np.testing.assert_allclose(emb.embed(texts), np.load(folder / "embeddings.npy"), atol=2e-5)
    assert emb.model_id == REPO and emb.revision == COMMIT
    installed = tmp_path / "cache" / "acme--tiny-bert"
    assert (installed / "model.safetensors").is_file()
    assert not (installed / "texts.txt").exists()  # only what the model needs
    # Recorded on first use: the next process verifies against these hashes.
    assert (installed / ".caxton_checksum").is_file()


def test_cli_downloads_any_repo_then_loads_it_offline(
    any_repo_server: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    architectures_dir: Path,
) -> None:
    srv, folder = any_repo_server, architectures_dir / ST_FIXTURE
    env = {**os.environ, "HF_ENDPOINT": srv.url, "CAXTON_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "caxton_models", "model", "download", REPO],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    _env(monkeypatch, tmp_path, "http://127.0.0.1:9")
    monkeypatch.setenv("CAXTON_OFFLINE", "1")
    emb = caxton_models.load(REPO)
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    np.testing.assert_allclose(emb.embed(texts), np.load(folder / "embeddings.npy"), atol=2e-5)


def test_unsupported_architecture_and_pickle_only_say_what_is_missing(
    any_repo_server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = any_repo_server
    _env(monkeypatch, tmp_path, srv.url)
    with pytest.raises(InvalidModelFormat, match=r"model_type 'gpt2'.*supported families: bert"):
        caxton_models.load("acme/gpt")
    with pytest.raises(UnsafeModel, match=r"pytorch_model\.bin"):
        caxton_models.load("acme/pickled")
    assert not (tmp_path / "cache" / "acme--gpt").exists()
