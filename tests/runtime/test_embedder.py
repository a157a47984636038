"""The Embedder: config from the model's files, order, prefixes, streaming,
async, the bundled model, runtime validation."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import InvalidModelFormat, ModelNotFound
from caxton_models.runtime.embedder import Embedder, ModelConfig, validate_runtime

TEXTS = [
    "Hello world",
    "A library that downloads, verifies and runs sentence-embedding models.",
    "x",
    "The quick brown fox jumps over the lazy dog. " * 40,  # beyond 256 tokens
    "",
    "Ünïcödé — text with accents and symbols ✓",
]


def _write_model_dir(root: Path, minilm_dir: Path, files: dict[str, object] | None = None) -> Path:
    (root / "onnx").mkdir(parents=True)
    (root / "onnx" / "model.onnx").symlink_to(minilm_dir / "onnx" / "model.onnx")
    shutil.copy(minilm_dir / "tokenizer.json", root / "tokenizer.json")
    for name, content in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
    return root


def test_config_is_read_from_the_model_files(minilm_dir: Path):
    cfg = ModelConfig.read(minilm_dir)
    assert cfg.pooling == "mean"
    assert cfg.normalize is True  # modules.json has a Normalize module
    assert cfg.max_sequence_length == 256  # sentence_bert_config.json, not tokenizer's 512
    assert cfg.dimensions == 384
    assert cfg.onnx_path == minilm_dir / "onnx" / "model.onnx"


def test_config_pooling_and_normalize_follow_modules(tmp_path: Path, minilm_dir: Path):
    root = _write_model_dir(
        tmp_path / "m",
        minilm_dir,
        {
            "modules.json": [
                {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "path": "pool", "type": "sentence_transformers.models.Pooling"},
            ],
            "pool/config.json": {"word_embedding_dimension": 384, "pooling_mode_cls_token": True},
            "tokenizer_config.json": {"model_max_length": 128},
        },
    )
    cfg = ModelConfig.read(root)
    assert (cfg.pooling, cfg.normalize, cfg.max_sequence_length) == ("cls", False, 128)


def test_config_errors_say_what_is_missing(tmp_path: Path, minilm_dir: Path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        ModelConfig.read(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModelFormat, match="no weights to run"):
        ModelConfig.read(tmp_path / "empty")
    root = _write_model_dir(
        tmp_path / "two",
        minilm_dir,
        {
            "1_Pooling/config.json": {
                "pooling_mode_cls_token": True,
                "pooling_mode_max_tokens": True,
            }
        },
    )
    with pytest.raises(InvalidModelFormat, match="asks for pooling"):
        ModelConfig.read(root)


def test_embed_shape_dtype_and_unit_norm(minilm: Embedder):
    v = minilm.embed(TEXTS)
    assert v.dtype == np.float32 and v.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert minilm.dimensions == 384 and minilm.max_sequence_length == 256
    assert minilm.model_id == "all-MiniLM-L6-v2" and minilm.space == "all-MiniLM-L6-v2"


def test_rows_follow_the_callers_order(minilm: Embedder):
    together = minilm.embed(TEXTS)
    alone = np.stack([minilm.embed([t])[0] for t in TEXTS])
    reversed_ = minilm.embed(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(together, alone, atol=2e-5)
    np.testing.assert_allclose(together, reversed_, atol=2e-5)
    # Batching knobs change the batches, never the answer.
    small = minilm.embed(TEXTS, batch_size=1)
    np.testing.assert_allclose(together, small, atol=2e-5)


def test_repeated_texts_are_embedded_once_and_returned_everywhere(minilm: Embedder):
    texts = [TEXTS[1], TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[0], TEXTS[1]]
    before = dict(minilm.stats)
    vecs = minilm.embed(texts)
    assert minilm.stats["texts"] - before["texts"] == len(texts)
    unique_tokens = sum(len(minilm._tokenizer.encode(t).ids) for t in TEXTS[:3])
    assert minilm.stats["tokens"] - before["tokens"] == unique_tokens
    expected = minilm.embed(TEXTS[:3])
    np.testing.assert_allclose(vecs, expected[[1, 0, 1, 2, 0, 1]], atol=2e-5)


def test_truncation_at_max_sequence_length(minilm: Embedder):
    long = "word " * 1000
    assert np.allclose(minilm.embed([long]), minilm.embed([long + " more words"]), atol=1e-6)
    assert minilm.stats["tokens"] > 0


def test_normalize_off_and_empty_and_single_string(minilm: Embedder):
    raw = minilm.embed(["Hello world"], normalize=False)
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3
    assert minilm.embed([]).shape == (0, 384)
    np.testing.assert_array_equal(minilm.embed("Hello world"), minilm.embed(["Hello world"]))
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        minilm.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="kind"):
        minilm.embed(["ok"], kind="document")  # type: ignore[arg-type]


def test_prefixes_for_query_and_passage(minilm_dir: Path, graph_cache_dir: Path, minilm: Embedder):
    e5 = Embedder.from_dir(
        minilm_dir,
        prefixes={"query": "query: ", "passage": "passage: "},
        graph_cache_dir=graph_cache_dir,
        model_id="test/e5-style",
        space="test-space",
    )
    q = e5.embed(["how to hash a file"], kind="query")
    p = e5.embed(["how to hash a file"], kind="passage")
    np.testing.assert_allclose(q, minilm.embed(["query: how to hash a file"]), atol=2e-5)
    np.testing.assert_allclose(p, minilm.embed(["passage: how to hash a file"]), atol=2e-5)
    assert (e5.model_id, e5.space) == ("test/e5-style", "test-space")


def test_embed_iter_streams_in_chunks(minilm: Embedder):
    def gen():
        yield from TEXTS * 3

    chunks = list(minilm.embed_iter(gen(), chunk_size=4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 2]
    np.testing.assert_allclose(np.concatenate(chunks), minilm.embed(TEXTS * 3), atol=2e-5)


def test_aembed_does_not_block_the_event_loop(minilm: Embedder):
    async def main() -> tuple[np.ndarray, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        vecs = await minilm.aembed(TEXTS * 20)
        done = True
        await t
        return vecs, ticks

    vecs, ticks = asyncio.run(main())
    assert vecs.shape == (len(TEXTS) * 20, 384)
    assert ticks > 1  # the loop kept running while the model worked


def test_embed_is_thread_safe(minilm: Embedder):
    from concurrent.futures import ThreadPoolExecutor

    expected = minilm.embed(TEXTS)
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda i: minilm.embed(TEXTS[i % 3 :]), range(16)))
    for i, r in enumerate(results):
        np.testing.assert_allclose(r, expected[i % 3 :], atol=2e-5)


def test_optimized_graph_is_cached_and_matches(minilm: Embedder, minilm_dir: Path):
    assert minilm.graph_path.name.startswith("model.ort.")
    assert minilm_dir not in minilm.graph_path.parents  # never in the model folder
    assert minilm.graph_path.is_file()
    plain = Embedder.from_dir(minilm_dir, optimize=False)
    assert plain.graph_path == minilm_dir / "onnx" / "model.onnx"
    cos = (plain.embed(TEXTS) * minilm.embed(TEXTS)).sum(1)
    assert cos[np.linalg.norm(plain.embed(TEXTS), axis=1) > 0].min() >= 0.9999


def test_user_model_folders_are_never_written(minilm_dir: Path, tmp_path: Path):
    root = _write_model_dir(tmp_path / "m", minilm_dir)
    for f in ("modules.json", "sentence_bert_config.json", "config.json"):
        shutil.copy(minilm_dir / f, root / f)
    before = sorted(p.name for p in root.rglob("*"))
    e = caxton_models.load(root)
    assert sorted(p.name for p in root.rglob("*")) == before
    assert root not in e.graph_path.parents


def test_bundled_mini_loads_offline_in_the_default_space():
    e = caxton_models.load("bundled-mini")
    assert e.space == "sentence-transformers/all-MiniLM-L6-v2"
    assert e.dimensions == 384 and e.max_sequence_length == 256
    v = e.embed(["Hello world", "Bonjour le monde"])
    assert v.shape == (2, 384) and np.isfinite(v).all()
    # It ships pre-optimised: loading writes no graph cache.
    assert e.graph_path == e.config.onnx_path


def test_bundled_mini_agrees_with_minilm(minilm: Embedder):
    mini = caxton_models.load("bundled-mini")
    cos = (mini.embed(TEXTS[:4]) * minilm.embed(TEXTS[:4])).sum(1)
    assert cos.min() >= 0.95


def test_load_unknown_name_raises_model_not_found():
    with pytest.raises(ModelNotFound, match=r"unknown model 'no-such-model-xyz'\. Known models: "):
        caxton_models.load("no-such-model-xyz")


def test_validate_runtime_reports_the_spec_fields(minilm_dir: Path, graph_cache_dir: Path):
    t0 = time.perf_counter()
    v = validate_runtime(minilm_dir, expected_dimensions=384, graph_cache_dir=graph_cache_dir)
    assert v.can_load and v.error_message is None
    assert v.embedding_dimensions == 384 and len(v.test_embedding or []) == 384
    assert 0 < v.load_time_ms <= (time.perf_counter() - t0) * 1000
    assert v.memory_usage_mb >= 0
    bad = validate_runtime(minilm_dir, expected_dimensions=768, graph_cache_dir=graph_cache_dir)
    assert not bad.can_load and "768" in (bad.error_message or "")


def test_validate_runtime_never_raises_for_a_broken_model(tmp_path: Path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"not a protobuf")
    (tmp_path / "tokenizer.json").write_text("{}")
    v = validate_runtime(tmp_path)
    assert not v.can_load and v.error_message


def test_cli_embed_works_offline_with_the_bundled_model(capsys: pytest.CaptureFixture[str]):
    from caxton_models.ops.cli import main

    assert main(["embed", "Hello world"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["model"] == "caxton/bundled-mini" and len(row["embedding"]) == 384
