"""sentence-transformers folders: modules read, text in, the vectors
``SentenceTransformer.encode`` gave out, with pooling and Dense/Normalize
either in numpy after the encoder or appended to its graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from caxton_models.errors import InvalidModelFormat, UnsafeModel
from caxton_models.runtime.graph import (
    DenseLayer,
    PoolingMode,
    SentencePipeline,
    apply_pipeline,
    build_encoder,
    build_sentence_encoder,
    create_session,
    pool,
    read_sentence_transformers,
)
from tests.support.tensors import read_safetensors

ST_FOLDERS = ("st-bert-mean-normalize", "st-distilbert-mean-dense-tanh")


def tokenize(folder: Path, texts: list[str], max_len: int | None) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if max_len:
        tok.enable_truncation(max_len)
    pad = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in enc], np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], np.int64),
    }


def encoder_inputs(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    config = json.loads((folder / "config.json").read_text())
    return config, read_safetensors(folder / "model.safetensors")


def test_classic_module_files(architectures_dir: Path) -> None:
    p = read_sentence_transformers(architectures_dir / ST_FOLDERS[1], read_safetensors)
    assert p.modules == ("Transformer", "Pooling", "Dense")
    assert (p.pooling, p.max_seq_length, p.do_lower_case, p.normalize) == ("mean", 24, False, False)
    (dense,) = p.dense
    assert (dense.weight.shape, dense.activation, dense.out_features) == ((16, 32), "tanh", 16)
    assert dense.bias is not None and dense.weight.dtype == np.float32
    assert p.dimensions == 16


def test_sentence_transformers_6_module_files(architectures_dir: Path) -> None:
    """Module paths such as sentence_transformers.base.modules.normalize.Normalize,
    pooling_mode as one string, max_seq_length only in tokenizer_config.json."""
    p = read_sentence_transformers(architectures_dir / ST_FOLDERS[0])
    assert p.modules == ("Transformer", "Pooling", "Normalize")
    assert (p.pooling, p.max_seq_length, p.normalize, p.dimensions) == ("mean", 24, True, 32)


@pytest.mark.parametrize("in_graph", [False, True], ids=["numpy-head", "graph-head"])
@pytest.mark.parametrize("name", ST_FOLDERS)
def test_texts_give_sentence_transformers_embeddings(
    architectures_dir: Path, name: str, in_graph: bool
) -> None:
    folder = architectures_dir / name
    pipeline = read_sentence_transformers(folder, read_safetensors)
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    expected = np.load(folder / "embeddings.npy")
    feeds = tokenize(folder, texts, pipeline.max_seq_length)
    assert feeds["input_ids"].shape[1] == pipeline.max_seq_length  # one text is truncated
    config, weights = encoder_inputs(folder / pipeline.transformer_path)
    if in_graph:
        graph = build_sentence_encoder(config, weights, pipeline)
        got = create_session(graph).run(None, {n: feeds[n] for n in graph.input_names})[0]
    else:
        graph = build_encoder(config, weights)
        hidden = create_session(graph).run(None, {n: feeds[n] for n in graph.input_names})[0]
        got = apply_pipeline(pipeline, hidden, feeds["attention_mask"])
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= 1e-5


@pytest.mark.parametrize("mode", get_args(PoolingMode))
def test_graph_pooling_matches_numpy(architectures_dir: Path, mode: PoolingMode) -> None:
    folder = architectures_dir / "bert"
    config, weights = encoder_inputs(folder)
    inputs = dict(np.load(folder / "inputs.npz"))
    hidden = create_session(build_encoder(config, weights)).run(None, inputs)[0]
    dense = DenseLayer("2_Dense", np.eye(8, 32, dtype=np.float32), None, "relu")
    pipeline = SentencePipeline(pooling=mode, steps=(dense,))
    graph = build_sentence_encoder(config, weights, pipeline, external=False)
    got = create_session(graph).run(None, inputs)[0]
    np.testing.assert_allclose(
        got, apply_pipeline(pipeline, hidden, inputs["attention_mask"]), atol=1e-5
    )


def test_numpy_pooling_semantics() -> None:
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) - 4
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(pool(hidden, mask, "cls"), hidden[:, 0])
    np.testing.assert_array_equal(pool(hidden, mask, "lasttoken"), [hidden[0, 1], hidden[1, 0]])
    np.testing.assert_array_equal(pool(hidden, mask, "max"), [hidden[0, 1], hidden[1, 0]])
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [hidden[0, :2].mean(0), hidden[1, 0]])
    root2 = np.sqrt(np.float32(2))
    np.testing.assert_allclose(
        pool(hidden, mask, "mean_sqrt_len_tokens"), [hidden[0, :2].sum(0) / root2, hidden[1, 0]]
    )
    weighted = (hidden[0, 0] + 2 * hidden[0, 1]) / 3
    np.testing.assert_allclose(pool(hidden, mask, "weightedmean"), [weighted, hidden[1, 0]])


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def test_pickled_dense_weights_are_refused(architectures_dir: Path, tmp_path: Path) -> None:
    folder = copy_folder(architectures_dir / ST_FOLDERS[1], tmp_path / "m")
    (folder / "2_Dense" / "model.safetensors").unlink()
    (folder / "2_Dense" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(UnsafeModel, match=r"pytorch_model\.bin"):
        read_sentence_transformers(folder, read_safetensors)


def test_unknown_module_is_typed(architectures_dir: Path, tmp_path: Path) -> None:
    folder = copy_folder(architectures_dir / ST_FOLDERS[0], tmp_path / "m")
    modules = json.loads((folder / "modules.json").read_text())
    modules[2]["type"] = "sentence_transformers.models.LayerNorm"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InvalidModelFormat, match=r"LayerNorm.*Dense"):
        read_sentence_transformers(folder)


def test_concatenated_pooling_is_typed(architectures_dir: Path, tmp_path: Path) -> None:
    folder = copy_folder(architectures_dir / ST_FOLDERS[1], tmp_path / "m")
    cfg = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True}
    cfg["pooling_mode_mean_tokens"] = True
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidModelFormat, match="cls"):
        read_sentence_transformers(folder, read_safetensors)


def test_plain_transformers_folder_mean_pools(architectures_dir: Path) -> None:
    p = read_sentence_transformers(architectures_dir / "roberta")
    assert (p.pooling, p.steps, p.hidden_size) == ("mean", (), 32)
    assert p.max_seq_length == 64  # 66 positions, the first two before any token


# --------------------------------------------------------------------------- real MiniLM

#: Lines per corpus: enough for every length bucket, quick on two cores.
MINILM_LINES = {"pypi-summaries-10k": 300, "python-docs-passages": 150}


def embed_in_batches(
    session: Any, folder: Path, texts: list[str], max_len: int | None, names: tuple[str, ...]
) -> np.ndarray:
    """Runs ``session`` over ``texts`` in batches of similar length; rows in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[np.ndarray] = [np.empty(0)] * len(texts)
    for start in range(0, len(order), 32):
        rows = order[start : start + 32]
        feeds = tokenize(folder, [texts[i] for i in rows], max_len)
        result = session.run(None, {n: feeds[n] for n in names})[0]
        for i, row in zip(rows, result, strict=True):
            out[i] = row
    return np.stack(out)


@pytest.mark.needs_data
@pytest.mark.parametrize("corpus", MINILM_LINES)
def test_minilm_from_safetensors_matches_reference(
    minilm_dir: Path, reference_dir: Path, corpora_dir: Path, corpus: str
) -> None:
    pipeline = read_sentence_transformers(minilm_dir)
    assert (pipeline.pooling, pipeline.normalize, pipeline.max_seq_length) == ("mean", True, 256)
    config, weights = encoder_inputs(minilm_dir)
    graph = build_sentence_encoder(config, weights, pipeline)
    n = MINILM_LINES[corpus]
    texts = (corpora_dir / f"{corpus}.txt").read_text(encoding="utf-8").splitlines()[:n]
    reference = np.load(reference_dir / f"all-MiniLM-L6-v2.{corpus}.npy")[:n]
    got = embed_in_batches(
        create_session(graph), minilm_dir, texts, pipeline.max_seq_length, graph.input_names
    )
    cosine = (got * reference).sum(axis=1)
    assert float(cosine.min()) >= 0.9999, f"{corpus}: min cosine {cosine.min():.6f}"


@pytest.mark.needs_data
def test_minilm_encoder_matches_the_exported_onnx(minilm_dir: Path, corpora_dir: Path) -> None:
    """Same last_hidden_state as the torch.onnx.export of the same weights."""
    import onnxruntime as ort

    config, weights = encoder_inputs(minilm_dir)
    graph = build_encoder(config, weights)
    texts = (corpora_dir / "python-docs-passages.txt").read_text(encoding="utf-8").splitlines()
    feeds = tokenize(minilm_dir, texts[:16], 256)
    ours = create_session(graph).run(None, feeds)[0]
    exported = ort.InferenceSession(
        str(minilm_dir / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"]
    ).run(None, feeds)[0]
    mask = feeds["attention_mask"].astype(bool)
    assert float(np.abs(ours - exported)[mask].max()) <= 1e-4
