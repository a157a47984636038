"""When ONNX Runtime refuses a model, with real refusals (a garbled protobuf,
a graph with an invalid node) and a MemoryError at session creation: a typed
ModelLoadError, then repair, the model's other weights format, and the
fallback chain, in that order."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caxton_models
from caxton_models.acquire.manager import ModelManager
from caxton_models.config import Config, load_config
from caxton_models.errors import ModelLoadError
from caxton_models.ops.server import ServerThread
from tests.support.hubfaults import folder_catalog, minilm_catalog
from tests.support.protobuf import onnx_with_node

MINI = "all-MiniLM-L6-v2"
TINY = "st-bert-mean-normalize"
# A user model over the tiny fixture; ``size_mb`` orders the chain by size.
MODEL = "{model_id: org/%s, dimensions: 32, model_type: %s, size_mb: %d}"


def _config(tmp_path: Path, models: str = "", memory: str = "") -> Config:
    """``models`` at the top level, ``memory`` keys beside the cache's."""
    path = tmp_path / "caxton.yaml"
    path.write_text(
        f"memory:\n  model_cache: {{directory: {tmp_path / 'cache'}, update_strategy: manual}}\n"
        + "".join(f"  {line}\n" for line in memory.splitlines())
        + models
    )
    return load_config(path)


def _tiny(architectures_dir: Path, dest: Path, onnx: bytes | None, safetensors: bool) -> Path:
    """The tiny sentence-transformers fixture, with ``onnx`` as its
    onnx/model.onnx and with or without its model.safetensors."""
    shutil.copytree(architectures_dir / TINY, dest)
    if onnx is not None:
        (dest / "onnx").mkdir()
        (dest / "onnx" / "model.onnx").write_bytes(onnx)
    if not safetensors:
        (dest / "model.safetensors").unlink()
    return dest


def _expected(architectures_dir: Path) -> tuple[list[str], np.ndarray]:
    folder = architectures_dir / TINY
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    return texts, np.load(folder / "embeddings.npy")


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every graph ONNX Runtime is asked to load, in order."""
    import onnxruntime

    real = onnxruntime.InferenceSession
    seen: list[str] = []

    def recording(path: Any, *a: Any, **k: Any) -> Any:
        seen.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    yield seen


def test_an_invalid_graph_is_a_typed_error_that_names_file_and_cause(
    tmp_path: Path, architectures_dir: Path
) -> None:
    folder = _tiny(architectures_dir, tmp_path / "m", onnx_with_node("NotAnOp"), safetensors=False)
    with pytest.raises(ModelLoadError) as info:
        caxton_models.load(folder)
    err = info.value
    assert err.ort_error == "InvalidGraph" and not err.out_of_memory and not err.retryable
    assert err.path == str(folder / "onnx" / "model.onnx")
    assert "NotAnOp" in str(err) and "INVALID_GRAPH" in str(err)  # what ORT said
    assert "caxton model verify" in str(err) and "model.safetensors" in str(err)  # what to do


def test_a_garbled_onnx_runs_from_the_folders_safetensors(
    tmp_path: Path, architectures_dir: Path, sessions: list[str]
) -> None:
    # ir_version 8, then a graph field that claims more bytes than the file has.
    garbled = b"\x08\x08\x3a\xff\xff\xff\xff\x0f" + b"\xa5" * 64
    folder = _tiny(architectures_dir, tmp_path / "m", garbled, safetensors=True)
    emb = caxton_models.load(folder)
    texts, want = _expected(architectures_dir)
    assert emb.graph_path != folder / "onnx" / "model.onnx"
    np.testing.assert_allclose(emb.embed(texts), want, atol=1e-4)
    assert sessions[0] == str(folder / "onnx" / "model.onnx")  # refused first
    assert caxton_models.load(folder) is emb  # and kept loaded as such


def test_a_registry_model_whose_graph_ort_refuses_repairs_then_runs_from_safetensors(
    tmp_path: Path, architectures_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(
        tmp_path,
        f"models: {{tiny: {MODEL % ('tiny', 'onnx', 1)}}}\n",
        "download: {retry_attempts: 0}",  # the repair's hub is not there: fail at once
    )
    src = _tiny(architectures_dir, tmp_path / "src", onnx_with_node("Add"), safetensors=True)
    ModelManager(cfg).install_from_dir("tiny", src)
    with caplog.at_level(logging.INFO):
        emb = caxton_models.load("tiny", config=cfg, fallback=False)
    texts, want = _expected(architectures_dir)
    np.testing.assert_allclose(emb.embed(texts), want, atol=1e-4)
    assert emb.model_id == "org/tiny"
    # Repair came first (its functional test fails, so the files are fetched
    # again, from a hub that is not there), then the other format.
    log = caplog.text
    assert log.index("re-downloading all of tiny") < log.index("trying its model.safetensors")


def test_a_downloaded_model_whose_onnx_ort_refuses_fetches_its_safetensors(
    tmp_path: Path, architectures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository ships a graph ORT refuses and model.safetensors; the
    download took only the ONNX export (the preferred weights)."""
    repo = _tiny(architectures_dir, tmp_path / "repo", onnx_with_node("NotAnOp"), safetensors=True)
    commit = "3" * 40
    with ServerThread(folder_catalog(repo, "org/tiny", commit)) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        cfg = _config(tmp_path, f"models: {{tiny: {MODEL % ('tiny', 'onnx', 1)}}}\n")
        path = ModelManager(cfg, functional=False).download("tiny")
        assert not (path / "model.safetensors").exists()
        emb = caxton_models.load("tiny", config=cfg, fallback=False)
    texts, want = _expected(architectures_dir)
    np.testing.assert_allclose(emb.embed(texts), want, atol=1e-4)
    assert emb.revision == commit
    assert (path / "model.safetensors").is_file() and not (path / "onnx" / "model.onnx").exists()


def test_a_refused_model_without_another_format_moves_down_the_chain(
    tmp_path: Path, architectures_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(
        tmp_path,
        f"models: {{tiny: {MODEL % ('tiny', 'onnx', 1)}}}\n",
        "fallback_models: [bundled-mini]\nallow_dimension_mismatch: true\n"
        "download: {enabled: false}",
    )
    src = _tiny(architectures_dir, tmp_path / "src", onnx_with_node("NotAnOp"), safetensors=False)
    ModelManager(cfg).install_from_dir("tiny", src)
    with pytest.raises(ModelLoadError, match="InvalidGraph"):
        caxton_models.load("tiny", config=cfg, fallback=False)
    # The repair's full validation has since marked it corrupt (its functional
    # test is this same load), so now the cache check refuses it first.
    with caplog.at_level(logging.WARNING, logger="caxton_models.fallback"):
        emb = caxton_models.load("tiny", config=cfg)
    assert emb.model_id == "caxton/bundled-mini"
    assert "cannot use tiny: ValidationFailed" in caplog.text
    assert "functional: ModelLoadError: ONNX Runtime cannot load" in caplog.text


def test_a_garbled_protobuf_in_the_cache_is_repaired_and_loads(
    tmp_path: Path, minilm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ServerThread(minilm_catalog(minilm_dir)) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        cfg = _config(tmp_path, memory="fallback_models: []")
        path = ModelManager(cfg, functional=False).download(MINI)
        onnx = path / "onnx" / "model.onnx"
        data = bytearray(onnx.read_bytes())
        data[:16] = b"\xff" * 16  # the ModelProto's first fields: not protobuf any more
        onnx.chmod(0o644)
        onnx.write_bytes(bytes(data))
        emb = caxton_models.load(MINI, config=cfg, optimize=False, threads=1)
    assert emb.model_id == f"sentence-transformers/{MINI}" and emb.graph_path == onnx
    assert onnx.read_bytes()[:16] != b"\xff" * 16  # the repair fetched the file again
    assert emb.embed(["Hello world"]).shape == (1, 384)


def test_a_memory_error_skips_repair_and_bigger_models(
    tmp_path: Path,
    architectures_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = _config(
        tmp_path,
        "models:\n"
        f"  big: {MODEL % ('big', 'safetensors', 200)}\n"
        f"  bigger: {MODEL % ('bigger', 'safetensors', 300)}\n"
        f"  small: {MODEL % ('small', 'safetensors', 100)}\n"
        "  unsized: {model_id: org/unsized, dimensions: 32, model_type: safetensors}\n",
        "fallback_models: [bigger, unsized, small]",
    )
    mgr = ModelManager(cfg)
    for name in ("big", "bigger", "unsized", "small"):
        mgr.install_from_dir(name, architectures_dir / TINY)
    import onnxruntime

    real = onnxruntime.InferenceSession
    sessions: list[str] = []

    def short_of_memory(path: Any, *a: Any, **k: Any) -> Any:
        model = Path(path).parent.name  # the graph is built beside each model
        sessions.append(model)
        if model != "small":
            raise MemoryError
        return real(path, *a, **k)

    monkeypatch.setattr(onnxruntime, "InferenceSession", short_of_memory)
    repairs: list[str] = []
    real_repair = ModelManager.on_load_failure

    def repair(self: ModelManager, name: str, error: BaseException | None = None) -> Any:
        repairs.append(name)
        return real_repair(self, name, error)

    monkeypatch.setattr(ModelManager, "on_load_failure", repair)
    with caplog.at_level(logging.WARNING, logger="caxton_models.fallback"):
        emb = caxton_models.load("big", config=cfg, optimize=False)
    assert emb.model_id == "org/small"
    assert repairs == []  # memory, not the files: no repair
    # "bigger" never tried; "unsized" (size unknown) tried, and out of memory too.
    assert sessions == ["big", "unsized", "small"]
    assert "bigger: 300 MB, not smaller than a model that ran out of memory" in caplog.text
    with pytest.raises(ModelLoadError) as info:
        caxton_models.load("big", config=cfg, fallback=False, optimize=False)
    assert info.value.out_of_memory and info.value.retryable
    assert "out of memory" in str(info.value) and "smaller model" in str(info.value)
