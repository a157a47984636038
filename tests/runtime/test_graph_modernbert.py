"""ModernBERT (gte-modernbert, modernbert-embed, granite-embedding r2) built
from config.json + model.safetensors reproduces transformers' ModernBertModel.

The fixture's weights are BF16; transformers computed ``expected.npz`` in
float32 from those rounded weights, which the builder gets widened to
float32, so the only differences left are float32 accumulation order.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import caxton_models
from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime._modelconfig import read_tensors
from caxton_models.runtime._optimize import build_from_safetensors, ort_optimize
from caxton_models.runtime.graph import (
    SUPPORTED,
    Normalize,
    SentencePipeline,
    build_encoder,
    build_sentence_encoder,
    create_session,
)
from caxton_models.runtime.graph.weights import LazyTensors

TOLERANCE = 1e-5
_ST_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "1_Pooling",
    "2_Normalize",
)


@pytest.fixture(scope="module")
def fixture_dir(architectures_dir: Path) -> Path:
    return architectures_dir / "modernbert"


def _config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return config


def _run_graph(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out: np.ndarray = session.run(None, {n: inputs[n] for n in names})[0]
    return out


def _diff(out: np.ndarray, folder: Path) -> float:
    """Max abs difference to transformers where attention_mask is 1 (the
    values at padding are arbitrary)."""
    mask = np.load(folder / "inputs.npz")["attention_mask"].astype(bool)
    expected = np.load(folder / "expected.npz")["last_hidden_state"]
    assert out.shape == expected.shape
    return float(np.abs(out - expected)[mask].max())


def _hidden(config: dict[str, Any], weights: Any, folder: Path) -> np.ndarray:
    graph = build_encoder(config, weights)
    inputs = dict(np.load(folder / "inputs.npz"))
    out: np.ndarray = create_session(graph).run(None, inputs)[0]
    return out


@pytest.fixture(scope="module")
def built(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The graph as load() builds it (build_from_safetensors), beside a copy
    of the checkpoint, as in the graph cache."""
    root = tmp_path_factory.mktemp("modernbert")
    model = root / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(fixture_dir / name, model / name)
    dest = root / "graphs" / "model.plain.onnx"
    build_from_safetensors(model / "model.safetensors", dest)
    yield dest


def test_load_path_graph_matches_transformers(built: Path, fixture_dir: Path) -> None:
    inputs = dict(np.load(fixture_dir / "inputs.npz"))
    diff = _diff(_run_graph(built, inputs), fixture_dir)
    assert diff <= TOLERANCE, f"max abs diff {diff:.2e}"


def test_widened_weights_go_to_a_file_beside_the_graph(built: Path, fixture_dir: Path) -> None:
    """The BF16 weights, widened one at a time, sit in ``<graph>.data`` (which
    ONNX Runtime maps), not in the protobuf: no step of the build holds all
    of them in memory."""
    data = built.with_name(built.name + ".data")
    model = onnx.load(str(built), load_external_data=False)
    weights = [
        t
        for t in model.graph.initializer
        if t.name in read_tensors(fixture_dir / "model.safetensors")
    ]
    assert len(weights) == len(read_tensors(fixture_dir / "model.safetensors"))
    for tensor in weights:
        location = {e.key: e.value for e in tensor.external_data}.get("location")
        assert tensor.data_location == onnx.TensorProto.EXTERNAL and location == data.name
    widened = sum(4 * int(np.prod(t.dims)) for t in weights)
    assert widened <= data.stat().st_size < widened + 4096 * len(weights)
    assert built.stat().st_size < 100_000


def test_ort_optimized_graph_still_matches(built: Path, fixture_dir: Path, tmp_path: Path) -> None:
    """ORT's level-EXTENDED rewrites (LayerNorm, Gelu fusions, ...) keep the
    numbers: the graph load() caches and runs is this one."""
    dest = tmp_path / "model.ort.onnx"
    ort_optimize(built, dest)
    ops = {n.op_type for n in onnx.load(str(dest), load_external_data=False).graph.node}
    assert "Gelu" in ops  # the erf GELU pattern was recognised and fused
    diff = _diff(_run_graph(dest, dict(np.load(fixture_dir / "inputs.npz"))), fixture_dir)
    assert diff <= TOLERANCE, f"max abs diff {diff:.2e} after optimisation"


@pytest.mark.parametrize("external", [True, False], ids=["external", "embedded"])
def test_in_memory_graph_matches_transformers(fixture_dir: Path, external: bool) -> None:
    config = _config(fixture_dir)
    graph = build_encoder(
        config, read_tensors(fixture_dir / "model.safetensors"), external=external
    )
    inputs = dict(np.load(fixture_dir / "inputs.npz"))
    out = create_session(graph).run(None, inputs)[0]
    assert _diff(out, fixture_dir) <= TOLERANCE
    assert graph.input_names == ("input_ids", "attention_mask")


def test_sentence_graph_pools_modernbert(fixture_dir: Path) -> None:
    """Pooling and Normalize appended to the ModernBERT graph (one session
    from ids to vectors) agree with pooling transformers' hidden states."""
    pipeline = SentencePipeline(pooling="mean", steps=(Normalize(),))
    tensors = read_tensors(fixture_dir / "model.safetensors")
    graph = build_sentence_encoder(_config(fixture_dir), tensors, pipeline)
    inputs = dict(np.load(fixture_dir / "inputs.npz"))
    (out,) = create_session(graph).run(None, inputs)
    mask = inputs["attention_mask"][..., None].astype(np.float32)
    hidden = np.load(fixture_dir / "expected.npz")["last_hidden_state"]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    want = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(out, want, atol=TOLERANCE)


def test_batch_and_sequence_axes_are_dynamic(built: Path, fixture_dir: Path) -> None:
    """Each row run alone, unpadded (other batch size, other sequence
    length), gives what it gave in the padded batch."""
    model = onnx.load(str(built), load_external_data=False)
    for value in (*model.graph.input, *model.graph.output):
        dims = [d.dim_param for d in value.type.tensor_type.shape.dim][:2]
        assert dims == ["batch", "sequence"], value.name
    inputs = dict(np.load(fixture_dir / "inputs.npz"))
    expected = np.load(fixture_dir / "expected.npz")["last_hidden_state"]
    for row, length in enumerate(inputs["attention_mask"].sum(axis=1)):
        alone = {k: v[row : row + 1, :length] for k, v in inputs.items()}
        out = _run_graph(built, alone)
        assert out.shape == (1, length, 32)
        assert float(np.abs(out[0] - expected[row, :length]).max()) <= TOLERANCE


def test_bf16_is_widened_per_tensor_when_the_graph_takes_it(fixture_dir: Path) -> None:
    """read_tensors widens nothing up front; each tensor is widened once,
    when the builder looks it up."""
    tensors = read_tensors(fixture_dir / "model.safetensors")
    assert isinstance(tensors, LazyTensors)
    loads: list[str] = []

    def load(name: str) -> np.ndarray:
        loads.append(name)
        return tensors[name]

    counted = LazyTensors(list(tensors), load)
    assert loads == []
    build_encoder(_config(fixture_dir), counted)
    assert sorted(loads) == sorted(set(loads)) == sorted(tensors)
    assert all(
        tensors[n].dtype == np.float32 for n in ("final_norm.weight", "layers.1.attn.Wqkv.weight")
    )


def test_legacy_config_keys_give_the_same_model(fixture_dir: Path) -> None:
    """Hub configs written before transformers 5 (gte-modernbert-base,
    modernbert-embed-base, granite r2) carry global_rope_theta,
    local_rope_theta and global_attn_every_n_layers instead of
    rope_parameters and layer_types."""
    config = _config(fixture_dir)
    theta = {k: v["rope_theta"] for k, v in config.pop("rope_parameters").items()}
    del config["layer_types"]
    config.update(global_rope_theta=theta["full_attention"],
                  local_rope_theta=theta["sliding_attention"])  # fmt: skip
    out = _hidden(config, read_tensors(fixture_dir / "model.safetensors"), fixture_dir)
    assert _diff(out, fixture_dir) <= TOLERANCE


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"local_attention": 1024}, "the sliding window"),
        ({"global_attn_every_n_layers": 1, "layer_types": None}, "which layers are local"),
        (
            {
                "rope_parameters": {
                    "full_attention": {"rope_theta": 10000.0},
                    "sliding_attention": {"rope_theta": 10000.0},
                }
            },
            "the global theta",
        ),
        (
            {
                "rope_parameters": {
                    "full_attention": {"rope_theta": 160000.0},
                    "sliding_attention": {"rope_theta": 160000.0},
                }
            },
            "the local theta",
        ),
        ({"hidden_activation": "gelu_pytorch_tanh"}, "the activation"),
        ({"norm_eps": 1e-2}, "norm_eps"),
    ],
)
def test_each_config_key_is_used(fixture_dir: Path, change: dict[str, Any], what: str) -> None:
    """Changing any of these changes the output: each is read, not assumed
    (the 40-token row spans several windows). The random weights attend
    almost uniformly and keep GELU's inputs near 0, so Wqkv and Wi are
    scaled up to make positions and the activation's shape matter."""
    tensors = read_tensors(fixture_dir / "model.safetensors")
    sharp = {k: tensors[k] * (30 if "Wqkv" in k or "Wi" in k else 1) for k in tensors}
    config = {**_config(fixture_dir), **change}
    if config.get("layer_types") is None:
        config.pop("layer_types", None)
    base, changed = (_hidden(c, sharp, fixture_dir) for c in (_config(fixture_dir), config))
    mask = np.load(fixture_dir / "inputs.npz")["attention_mask"].astype(bool)
    assert float(np.abs(base - changed)[mask].max()) > 10 * TOLERANCE, what


def test_masked_lm_checkpoint_prefix(fixture_dir: Path) -> None:
    """ModernBERT-base ships ModernBertForMaskedLM: tensors under ``model.``
    plus a head the encoder ignores."""
    tensors = read_tensors(fixture_dir / "model.safetensors")
    prefixed = {f"model.{k}": tensors[k] for k in tensors}
    prefixed["head.dense.weight"] = np.zeros((32, 32), np.float32)
    out = _hidden(_config(fixture_dir), prefixed, fixture_dir)
    assert _diff(out, fixture_dir) <= TOLERANCE


def test_biases_follow_the_config(fixture_dir: Path) -> None:
    """norm_bias/attention_bias/mlp_bias true need the bias tensors (zero
    biases change nothing); missing ones are named."""
    tensors = dict(read_tensors(fixture_dir / "model.safetensors"))
    config = {**_config(fixture_dir), "norm_bias": True, "attention_bias": True, "mlp_bias": True}
    with pytest.raises(InvalidModelFormat, match=r"embeddings\.norm\.bias"):
        build_encoder(config, tensors)
    for name in list(tensors):
        if name.endswith(".weight") and ("norm" in name or ".W" in name):
            rows = tensors[name].shape[0]
            tensors[name[: -len("weight")] + "bias"] = np.zeros(rows, np.float32)
    graph = build_encoder(config, tensors)
    assert len(graph.external) == len(tensors)
    out = create_session(graph).run(None, dict(np.load(fixture_dir / "inputs.npz")))[0]
    assert _diff(out, fixture_dir) <= TOLERANCE


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}}, "yarn"),
        ({"layer_types": ["full_attention"]}, "layer_types"),
        ({"layer_types": "full_attention"}, "layer_types"),
        (
            {"layer_types": ["full_attention", "chunked", "full_attention", "full_attention"]},
            "chunked",
        ),
        ({"hidden_activation": "mish"}, "mish"),
        ({"num_attention_heads": 5}, "multiple"),
        ({"attention_bias": "yes"}, "attention_bias"),
        ({"local_attention": 0}, "local_attention"),
    ],
)
def test_unsupported_config_is_typed(
    fixture_dir: Path, change: dict[str, Any], needle: str
) -> None:
    config = {**_config(fixture_dir), **change}
    with pytest.raises(InvalidModelFormat, match=needle):
        build_encoder(config, read_tensors(fixture_dir / "model.safetensors"))


def test_architectures_fallback_and_unsupported_message(fixture_dir: Path) -> None:
    config = _config(fixture_dir)
    del config["model_type"]
    assert (
        build_encoder(config, read_tensors(fixture_dir / "model.safetensors")).spec.model_type
        == "modernbert"
    )
    assert "modernbert" in SUPPORTED
    config.update(model_type="gpt2", architectures=["GPT2Model"])
    with pytest.raises(InvalidModelFormat, match=r"modernbert \(ModernBertModel\)"):
        build_encoder(config, {})


def _st_folder(architectures_dir: Path, dest: Path) -> Path:
    """The modernbert fixture as a sentence-transformers repository: the
    MiniLM tokenizer (max_seq_length 24), mean pooling, Normalize."""
    st = architectures_dir / "st-bert-mean-normalize"
    dest.mkdir(parents=True)
    for name in _ST_FILES:
        src = st / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(architectures_dir / "modernbert" / name, dest / name)
    (dest / "texts.txt").write_text((st / "texts.txt").read_text(encoding="utf-8"))
    return dest


def _reference_embeddings(folder: Path, texts: list[str]) -> np.ndarray:
    """Token ids from the same tokenizer, the encoder graph (checked against
    transformers above), then mean pooling and L2 normalisation in numpy."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(24)
    tok.no_padding()  # MiniLM's tokenizer.json pads to 128; padding is done here
    enc = [tok.encode(t) for t in texts]
    width = max(len(e.ids) for e in enc)
    ids = np.zeros((len(texts), width), np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1
    graph = build_encoder(_config(folder), read_tensors(folder / "model.safetensors"))
    hidden = create_session(graph).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    normed: np.ndarray = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return normed


def test_sentence_transformers_folder_loads_and_embeds(
    architectures_dir: Path, tmp_path: Path
) -> None:
    folder = _st_folder(architectures_dir, tmp_path / "tiny-modernbert")
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    emb = caxton_models.load(folder)
    got = emb.embed(texts)
    assert got.shape == (len(texts), 32) and emb.config.model_type == "modernbert"
    # A graph built from safetensors runs as built: ORT optimises it in
    # memory, and no optimised copy of its weights is written beside it.
    assert ".plain." in emb.graph_path.name
    assert not list(emb.graph_path.parent.glob("*.ort.*"))
    np.testing.assert_allclose(got, _reference_embeddings(folder, texts), atol=TOLERANCE)


def test_any_repo_of_modernbert_loads_from_a_hub(
    architectures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load("org/name")`` of a ModernBERT repository with safetensors only,
    from a Hub-protocol server on 127.0.0.1 (it was refused before)."""
    from caxton_models.ops.server import Catalog, ServerThread

    folder = _st_folder(architectures_dir, tmp_path / "repo")
    (folder / "texts.txt").unlink()
    texts = (architectures_dir / "st-bert-mean-normalize" / "texts.txt").read_text().splitlines()
    catalog = Catalog.from_folder(folder, "acme/tiny-modernbert", commit="c0ffee" + "0" * 34)
    with ServerThread(catalog) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
        emb = caxton_models.load("acme/tiny-modernbert")
        got = emb.embed(texts)
    assert emb.model_id == "acme/tiny-modernbert"
    np.testing.assert_allclose(got, _reference_embeddings(folder, texts), atol=TOLERANCE)
