"""ONNX exports of any shape, from Hub-shaped repositories served as
``caxton model serve --repos`` serves them (on 127.0.0.1): tensors in
external data files (the exporters' name, or any name the graph gives), a
root ``model.onnx``, a decoder export that takes ``position_ids``, a variant
picked with ``onnx_file=``, and a family caxton knows but cannot build."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import InvalidArgument, InvalidModelFormat
from caxton_models.ops.cli._main import main as cli
from caxton_models.ops.server import Catalog, ServerThread
from caxton_models.runtime.embedder import Embedder
from tests.support.onnx_exports import (
    copy_st_files,
    decoder_export,
    lasttoken_folder,
    save_external,
)

TEXTS = ["Hello world", "an ONNX export with its tensors elsewhere", "x"]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    from caxton_models._bundled import bundled_dir

    root = tmp_path_factory.mktemp("repos")
    bundled = bundled_dir("bundled-mini")
    # The reference: the same graph inline, in a folder of its own (no caxton.json).
    copy_st_files(bundled, root.parent / "inline")
    shutil.copy2(bundled / "model.onnx", root.parent / "inline" / "model.onnx")
    ext = copy_st_files(bundled, root / "acme" / "external-root")
    save_external(bundled / "model.onnx", ext / "model.onnx", "model.onnx_data")
    custom = copy_st_files(bundled, root / "acme" / "external-named")
    save_external(bundled / "model.onnx", custom / "onnx" / "model.onnx", "weights-f32.dat")
    dec = root / "acme" / "decoder"
    lasttoken_folder(dec, minilm_dir / "tokenizer.json", "left")
    decoder_export(dec / "onnx" / "model.onnx", vocab=30522, seed=0)
    decoder_export(dec / "onnx" / "model_quantized.onnx", vocab=30522, seed=1)
    nomic = root / "acme" / "nomic"
    copy_st_files(bundled, nomic)
    (nomic / "config.json").write_text(json.dumps({"model_type": "nomic_bert", "n_embd": 8}))
    (nomic / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return root


@pytest.fixture
def served(repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with ServerThread(Catalog.from_repos(repos)) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
        yield tmp_path / "cache"


@pytest.mark.parametrize(
    ("repo", "data"),
    [
        ("acme/external-root", "model.onnx_data"),
        ("acme/external-named", "onnx/weights-f32.dat"),
    ],
)
def test_external_data_exports_download_and_embed(
    served: Path, repos: Path, repo: str, data: str
) -> None:
    emb = caxton_models.load(repo, optimize=False)
    want = Embedder.from_dir(repos.parent / "inline", optimize=False).embed(TEXTS)
    np.testing.assert_allclose(emb.embed(TEXTS), want, atol=1e-5)
    installed = served / repo.replace("/", "--")
    assert (installed / data).stat().st_size > 1_000_000  # the tensors, downloaded whole
    manifest = json.loads((installed / ".caxton_checksum").read_text())
    assert data in json.dumps(manifest)  # and verified like every other file


def test_decoder_export_and_its_variants(served: Path, minilm_dir: Path, repos: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()

    def solo(tables: dict[str, np.ndarray]) -> np.ndarray:
        rows = []
        for text in TEXTS:
            ids = tok.encode(text).ids
            v = tables["tok"][ids[-1]] + tables["pos"][len(ids) - 1]
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)

    scratch = repos.parent / "scratch"
    plain, variant = (decoder_export(scratch / f"{k}.onnx", vocab=30522, seed=k) for k in (0, 1))
    emb = caxton_models.load("acme/decoder", optimize=False)
    np.testing.assert_allclose(emb.embed(TEXTS), solo(plain), atol=1e-6)
    var = caxton_models.load("acme/decoder", onnx_file="onnx/model_quantized.onnx", optimize=False)
    np.testing.assert_allclose(var.embed(TEXTS), solo(variant), atol=1e-6)
    entry = served / "acme--decoder--onnx_model_quantized"
    assert (entry / "onnx" / "model_quantized.onnx").is_file()
    assert not (entry / "onnx" / "model.onnx").exists()  # only the graph asked for
    with pytest.raises(InvalidModelFormat, match=r"model_O4\.onnx.*model_quantized\.onnx"):
        caxton_models.load("acme/decoder", onnx_file="onnx/model_O4.onnx")
    # A folder takes onnx_file as it is, with or without a config.
    from caxton_models.config import load_config

    local = caxton_models.load(str(repos / "acme" / "decoder"), config=load_config(),
                               onnx_file="onnx/model_quantized.onnx", optimize=False)  # fmt: skip
    np.testing.assert_allclose(local.embed(TEXTS), solo(variant), atol=1e-6)
    with pytest.raises(InvalidArgument, match=r"model_O4\.onnx"):  # a folder says the same
        Embedder.from_dir(served / "acme--decoder", onnx_file="onnx/model_O4.onnx")


def test_model_info_lists_the_onnx_variants(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["model", "info", "acme/decoder"]) == 0
    out = capsys.readouterr().out
    assert "onnx/model.onnx, onnx/model_quantized.onnx" in out


def test_a_recognised_family_is_named_with_the_supported_ones(served: Path, repos: Path) -> None:
    with pytest.raises(InvalidModelFormat, match=r"NomicBert.*supported families: bert, "):
        caxton_models.load("acme/nomic")
    assert not (served / "acme--nomic").exists()
    with pytest.raises(InvalidModelFormat, match=r"NomicBert.*supported families: bert, "):
        Embedder.from_dir(repos / "acme" / "nomic")


def test_external_data_files_are_planned_with_their_graph() -> None:
    from types import SimpleNamespace

    from caxton_models.acquire._plan import external_data, plan_files
    from caxton_models.registry import Registry

    listing = [
        *("onnx/model.onnx", "onnx/model.onnx_data", "onnx/model.onnx.data_1"),
        *("onnx/model_quantized.onnx", "onnx/model_quantized.onnx_data", "model.onnx_data"),
    ]
    assert external_data("onnx/model.onnx", listing) == [
        "onnx/model.onnx.data_1", "onnx/model.onnx_data"]  # fmt: skip
    assert external_data("onnx/model.onnx", listing, ["../model.onnx_data"]) == [
        "model.onnx_data", "onnx/model.onnx.data_1", "onnx/model.onnx_data"]  # fmt: skip
    assert external_data("model.safetensors", listing) == []
    spec = Registry().get("all-MiniLM-L12-v2")
    files = [SimpleNamespace(path=p, size=10, sha256=None, lfs=True)
             for p in (*spec.required_files, *listing)]  # fmt: skip
    info = SimpleNamespace(files=files, commit="0" * 40)
    planned = [f.path for f in plan_files(spec, info, allow_pickle=False)]
    assert {"onnx/model.onnx", "onnx/model.onnx_data", "onnx/model.onnx.data_1"} <= set(planned)
    assert "onnx/model_quantized.onnx_data" not in planned
