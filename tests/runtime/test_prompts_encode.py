"""Prompts (the model's own, the registry's prefixes, the caller's),
Matryoshka dimensions, and sentence-transformers' encode() checked against
what sentence-transformers computed on the shared fixtures and the real MiniLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import InvalidArgument, InvalidModelFormat
from caxton_models.registry import Registry
from caxton_models.resolve import spec_options
from caxton_models.runtime._encode import quantize_embeddings
from caxton_models.runtime.embedder import Embedder
from caxton_models.runtime.graph.spec import SUPPORTED

TEXTS = ["What is the capital of France?", "Paris is the capital of France.", "x"]
PROMPTS = {"query": "query: ", "document": "passage: "}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((_unit(a) * _unit(b)).sum(axis=-1))


def _minilm_copy(
    src: Path, dest: Path, st_config: dict | None, pooling: dict | None = None
) -> Path:
    """MiniLM's files (the graph linked, not copied) with other prompts or pooling."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("onnx", "model.safetensors"))
    (dest / "onnx").mkdir()
    (dest / "onnx" / "model.onnx").symlink_to(src / "onnx" / "model.onnx")
    if st_config is not None:
        (dest / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    if pooling is not None:
        cfg = json.loads((src / "1_Pooling" / "config.json").read_text())
        (dest / "1_Pooling" / "config.json").write_text(json.dumps({**cfg, **pooling}))
    return dest


@pytest.fixture(scope="module")
def loaded() -> dict[Path, Embedder]:
    """Fixture folders loaded once for the module (graphs built once)."""
    return {}


def _load(loaded: dict[Path, Embedder], folder: Path, graph_cache_dir: Path) -> Embedder:
    if folder not in loaded:
        loaded[folder] = Embedder.from_dir(folder, graph_cache_dir=graph_cache_dir)
    return loaded[folder]


@pytest.fixture
def prompted(minilm_dir: Path, graph_cache_dir: Path, tmp_path: Path) -> Embedder:
    cfg = {"prompts": PROMPTS, "default_prompt_name": "document"}
    return Embedder.from_dir(_minilm_copy(minilm_dir, tmp_path / "m", cfg),
                             graph_cache_dir=graph_cache_dir)  # fmt: skip


def _with(prefix: str) -> list[str]:
    return [prefix + t for t in TEXTS]


def test_model_prompts_default_names_and_kinds(prompted: Embedder, minilm: Embedder) -> None:
    doc, query = minilm.embed(_with("passage: ")), minilm.embed(_with("query: "))
    # Nothing named: the default prompt (sentence-transformers' encode) ...
    np.testing.assert_allclose(prompted.encode(TEXTS), doc, atol=1e-6)
    np.testing.assert_allclose(prompted.embed(TEXTS), doc, atol=1e-6)
    # ... kind maps onto the model's names as encode_query/encode_document do.
    np.testing.assert_allclose(prompted.embed(TEXTS, kind="query"), query, atol=1e-6)
    np.testing.assert_allclose(prompted.encode_query(TEXTS), query, atol=1e-6)
    np.testing.assert_allclose(prompted.encode_document(TEXTS), doc, atol=1e-6)
    np.testing.assert_allclose(prompted.encode(TEXTS, prompt_name="query"), query, atol=1e-6)
    np.testing.assert_allclose(prompted.embed(TEXTS, prompt_name="query"), query, atol=1e-6)
    # prompt wins over prompt_name; an explicit empty prompt turns the default off.
    np.testing.assert_allclose(prompted.encode(TEXTS, prompt="query: ", prompt_name="document"),
                               query, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(prompted.embed(TEXTS, prompt=""), minilm.embed(TEXTS), atol=1e-6)
    with pytest.raises(InvalidArgument, match=r"'search'.*\['document', 'query'\]"):
        prompted.embed(TEXTS, prompt_name="search")
    with pytest.raises(InvalidArgument, match="kind must be"):
        prompted.embed(TEXTS, kind="question")  # type: ignore[arg-type]


def test_registry_prefixes_are_prompts(minilm_dir: Path, minilm: Embedder, graph_cache_dir: Path):
    e5 = Registry().get("multilingual-e5-small")
    assert e5.all_prompts == {"query": "query: ", "passage": "passage: "}
    emb = Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir, **spec_options(e5))
    np.testing.assert_allclose(emb.embed(TEXTS, kind="query"), minilm.embed(_with("query: ")),
                               atol=1e-6)  # fmt: skip
    passage = minilm.embed(_with("passage: "))
    np.testing.assert_allclose(emb.embed(TEXTS), passage, atol=1e-6)
    np.testing.assert_allclose(emb.encode(TEXTS, prompt_name="passage"), passage, atol=1e-6)
    assert emb.prefixes == {"query": "query: ", "passage": "passage: "}


def test_broken_prompt_config_is_refused(minilm_dir: Path, tmp_path: Path) -> None:
    cfg = {"prompts": PROMPTS, "default_prompt_name": "search"}
    folder = _minilm_copy(minilm_dir, tmp_path / "m", cfg)
    with pytest.raises(InvalidModelFormat, match="default_prompt_name 'search'"):
        Embedder.from_dir(folder)


def test_include_prompt_false_leaves_prompt_tokens_out_of_the_pooling(
    minilm_dir: Path, tmp_path: Path, graph_cache_dir: Path
) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    folder = _minilm_copy(minilm_dir, tmp_path / "m", {"prompts": PROMPTS},
                          pooling={"include_prompt": False})  # fmt: skip
    emb = Embedder.from_dir(folder, graph_cache_dir=graph_cache_dir)
    got = emb.encode(TEXTS, prompt_name="query")
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()
    skip = len(tok.encode("query: ").ids) - 1  # [CLS] query : ([SEP] is not counted)
    sess = ort.InferenceSession(str(minilm_dir / "onnx" / "model.onnx"))
    for text, vec in zip(TEXTS, got, strict=True):
        ids = np.array([tok.encode("query: " + text).ids], np.int64)
        h = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                            "token_type_ids": np.zeros_like(ids)})[0][0]  # fmt: skip
        assert _cos(vec, h[skip:].mean(axis=0)) > 0.99999
        assert _cos(vec, h.mean(axis=0)) < 0.9999  # the prompt did count before
    # Without a prompt nothing is left out (embed's kind="passage" would add "passage: ").
    np.testing.assert_allclose(emb.encode(TEXTS), emb.embed(TEXTS, prompt=""), atol=1e-6)


# -- Matryoshka -------------------------------------------------------------------------------


def test_dimensions_truncate_and_renormalise(minilm_dir: Path, minilm: Embedder, graph_cache_dir):
    full = minilm.embed(TEXTS)
    small = Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir, dimensions=128)
    assert (small.dimensions, small.full_dimensions) == (128, 384)
    np.testing.assert_allclose(small.embed(TEXTS), _unit(full[:, :128]), atol=1e-6)
    assert Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir,
                             truncate_dim=64).dimensions == 64  # fmt: skip
    np.testing.assert_allclose(minilm.embed(TEXTS, dimensions=32), _unit(full[:, :32]), atol=1e-6)
    assert small.embed([]).shape == (0, 128)
    for bad in (385, 0, True):
        with pytest.raises(InvalidArgument, match="dimensions"):
            minilm.embed(TEXTS, dimensions=bad)
    with pytest.raises(InvalidArgument, match="384-dimensional"):
        Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir, dimensions=512)
    emb = caxton_models.load(str(minilm_dir), dimensions=100, graph_cache_dir=graph_cache_dir)
    assert emb.dimensions == 100 and emb.embed(TEXTS).shape == (3, 100)


def test_dimensions_of_a_model_that_does_not_normalise(
    architectures_dir: Path, loaded: dict[Path, Embedder], graph_cache_dir: Path
) -> None:
    folder = architectures_dir / "st-distilbert-mean-dense-tanh"
    full = _load(loaded, folder, graph_cache_dir).embed(TEXTS)
    small = Embedder.from_dir(folder, dimensions=8, graph_cache_dir=graph_cache_dir)
    np.testing.assert_allclose(small.embed(TEXTS),
                               full[:, :8], atol=1e-6)  # fmt: skip


# -- encode() against sentence-transformers ---------------------------------------------------


def _fixture(architectures_dir: Path, name: str) -> tuple[Path, list[str], np.ndarray]:
    folder = architectures_dir / name
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    return folder, texts, np.load(folder / "embeddings.npy")


@pytest.mark.parametrize("name", ["st-bert-mean-normalize", "st-distilbert-mean-dense-tanh"])
def test_encode_matches_sentence_transformers(
    architectures_dir: Path, name: str, loaded: dict[Path, Embedder], graph_cache_dir: Path
) -> None:
    folder, texts, want = _fixture(architectures_dir, name)
    emb = _load(loaded, folder, graph_cache_dir)
    got = emb.encode(texts)
    assert got.shape == want.shape and got.dtype == np.float32
    assert _cos(got, want).min() >= 0.9999
    one = emb.encode(texts[0])
    assert one.shape == want.shape[1:] and _cos(one, want[0]) >= 0.9999
    listed = emb.encode(texts, convert_to_numpy=False, batch_size=2)
    assert isinstance(listed, list) and len(listed) == len(texts) and listed[0].ndim == 1
    norm = emb.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(norm, axis=1), 1.0, atol=1e-6)
    # truncate_dim: the first N values, not re-normalised (as sentence-transformers).
    np.testing.assert_allclose(emb.encode(texts, truncate_dim=8), got[:, :8], atol=1e-6)
    assert emb.encode([]).shape == (0,)


def _st_quantized(want: np.ndarray, precision: str) -> np.ndarray:
    """quantize_embeddings' definition (sentence_transformers/quantization.py)."""
    if precision in ("int8", "uint8"):
        start, step = want.min(axis=0), (want.max(axis=0) - want.min(axis=0)) / 255
        scaled = (want - start) / step
        return (scaled - 128).astype(np.int8) if precision == "int8" else scaled.astype(np.uint8)
    packed = np.packbits(want > 0).reshape(want.shape[0], -1)
    return (packed - 128).astype(np.int8) if precision == "binary" else packed


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("name", ["st-bert-mean-normalize", "st-distilbert-mean-dense-tanh"])
def test_encode_precisions_match_sentence_transformers(
    architectures_dir: Path,
    name: str,
    precision: str,
    loaded: dict[Path, Embedder],
    graph_cache_dir: Path,
) -> None:
    folder, texts, want = _fixture(architectures_dir, name)
    emb = _load(loaded, folder, graph_cache_dir)
    got = emb.encode(texts, precision=precision)
    expected = _st_quantized(want, precision)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    # The same procedure exactly: on sentence-transformers' own floats, and on ours.
    np.testing.assert_array_equal(quantize_embeddings(want, precision), expected)
    np.testing.assert_array_equal(got, quantize_embeddings(emb.encode(texts), precision))
    # Our floats differ from torch's by ~1e-7, which can move a value that sits
    # on a bucket edge (the maximum lands on 254.99...) by one step, never more.
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= (1 if precision.endswith("int8") else 0) and diff.mean() < 0.05


def test_quantize_embeddings_values() -> None:
    x = np.array([[-1.0, 0.5, 0.0, 2.0, 1.0, -0.1, 0.2, 0.3, 0.9]], np.float32)
    assert quantize_embeddings(x, "ubinary").tolist() == [[0b01011011, 0b10000000]]
    assert quantize_embeddings(x, "binary").tolist() == [[0b01011011 - 128, 0]]
    two = np.array([[0.0, 1.0], [1.0, -1.0], [0.5, 0.0]], np.float32)
    # float32 (1 - 0) / (1 / 255) is 254.99998: the maximum truncates to 254, as there.
    assert quantize_embeddings(two, "uint8").tolist() == [[0, 254], [254, 0], [127, 127]]
    assert quantize_embeddings(two, "int8").tolist() == [[-128, 126], [126, -128], [0, 0]]
    ranges = np.array([[0.0, 0.0], [4.0, 4.0]], np.float32)
    assert quantize_embeddings(two[:1], "uint8", ranges=ranges).tolist() == [[0, 63]]
    calib = np.array([[0.0, 0.0], [2.0, 2.0]], np.float32)
    assert quantize_embeddings(two[:1], "uint8", calibration_embeddings=calib).tolist() == [
        [0, 127]
    ]
    with pytest.raises(InvalidArgument, match="must be float"):
        quantize_embeddings(np.zeros((1, 2), np.int8), "int8")


def test_encode_refuses_what_needs_torch(minilm: Embedder) -> None:
    with pytest.raises(InvalidArgument, match="torch"):
        minilm.encode(TEXTS, convert_to_tensor=True)
    with pytest.raises(InvalidArgument, match="token_embeddings"):
        minilm.encode(TEXTS, output_value="token_embeddings")
    with pytest.raises(InvalidArgument, match="float16"):
        minilm.encode(TEXTS, precision="float16")
    with pytest.raises(InvalidArgument, match="CPU"):
        minilm.encode(TEXTS, device="cuda")


def test_encode_real_minilm_matches_sentence_transformers(
    minilm: Embedder, corpora_dir: Path, reference_dir: Path
) -> None:
    texts = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    want = np.load(reference_dir / "all-MiniLM-L6-v2.pypi-summaries-10k.npy")[:300]
    got = minilm.encode(texts[:300], normalize_embeddings=True, show_progress_bar=False)
    assert got.shape == want.shape and _cos(got, want).min() >= 0.9999
    np.testing.assert_array_equal(minilm.encode(texts[:100], precision="ubinary"),
                                  _st_quantized(want[:100], "ubinary"))  # fmt: skip


# -- the decoder and Gemma3 fixtures (graphs from the architecture helpers) -------------------


@pytest.mark.parametrize("name", ["st-qwen3-lasttoken-prompts", "st-gemma3-mean-dense-prompts"])
def test_prompted_fixtures_match_sentence_transformers(
    architectures_dir: Path, name: str, graph_cache_dir: Path
) -> None:
    folder, texts, want = _fixture(architectures_dir, name)
    model_type = json.loads((folder / "config.json").read_text())["model_type"]
    if model_type not in SUPPORTED:
        pytest.skip(f"no graph builder for {model_type!r} in this tree (the architecture "
                    "helpers' graphs add it)")  # fmt: skip
    emb = Embedder.from_dir(folder, graph_cache_dir=graph_cache_dir)
    queries = np.load(folder / "queries.npy")
    assert emb._left_padding is ("qwen3" in name)
    assert _cos(emb.encode(texts), want).min() >= 0.9999
    assert _cos(emb.embed(texts), want).min() >= 0.9999
    assert _cos(emb.encode(texts, prompt_name="query"), queries).min() >= 0.9999
    assert _cos(emb.embed(texts, kind="query"), queries).min() >= 0.9999
    assert _cos(emb.encode_query(texts), queries).min() >= 0.9999
