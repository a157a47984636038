"""Graphs built from config.json + model.safetensors reproduce transformers.

The fixtures store weights in F32, F16 or BF16, but transformers computed
``expected.npz`` in float32 from the saved (rounded) weights; the builder
gets the same rounded weights widened to float32, so one tolerance (1e-4,
float32 accumulation order only) holds for every dtype.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime.graph import (
    SUPPORTED,
    build_encoder,
    create_session,
    external_initializers,
    reference_file,
)
from tests.support.tensors import f32_offsets, read_safetensors

ARCHS = ("bert", "distilbert", "roberta", "xlm-roberta", "mpnet")
TOLERANCE = 1e-4


def load(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    config = json.loads((folder / "config.json").read_text())
    return config, read_safetensors(folder / "model.safetensors")


def run(folder: Path, *, external: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    config, weights = load(folder)
    graph = build_encoder(config, weights, external=external)
    inputs = dict(np.load(folder / "inputs.npz"))
    session = create_session(graph)
    (out,) = session.run([graph.output_name], {n: inputs[n] for n in graph.input_names})
    expected = np.load(folder / "expected.npz")["last_hidden_state"]
    return out, expected, inputs["attention_mask"].astype(bool)


@pytest.mark.parametrize("external", [True, False], ids=["external", "embedded"])
@pytest.mark.parametrize("arch", ARCHS)
def test_matches_transformers(architectures_dir: Path, arch: str, external: bool) -> None:
    out, expected, mask = run(architectures_dir / arch, external=external)
    assert out.shape == expected.shape
    # Rows past each length are padding: transformers' values there are arbitrary.
    diff = float(np.abs(out - expected)[mask].max())
    assert diff <= TOLERANCE, f"{arch}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("arch", ARCHS)
def test_inputs_follow_the_architecture(architectures_dir: Path, arch: str) -> None:
    config, weights = load(architectures_dir / arch)
    graph = build_encoder(config, weights)
    names = tuple(i.name for i in graph.model.graph.input)
    wanted = ("input_ids", "attention_mask")
    assert names == ((*wanted, "token_type_ids") if arch == "bert" else wanted)
    assert graph.dimensions == 32
    # Every weight tensor is referenced, none copied into the protobuf.
    assert len(graph.external) == len(weights) - sum("pooler" in k for k in weights)
    assert graph.model.ByteSize() < 100_000


def test_prefixed_checkpoint(architectures_dir: Path) -> None:
    """Checkpoints saved from BertForMaskedLM etc. carry ``bert.``."""
    config, weights = load(architectures_dir / "bert")
    prefixed = {f"bert.{k}": v for k, v in weights.items()}
    prefixed["cls.predictions.bias"] = np.zeros(3, np.float32)
    a = build_encoder(config, weights, external=False)
    b = build_encoder(config, prefixed, external=False)
    inputs = dict(np.load(architectures_dir / "bert" / "inputs.npz"))
    outs = [create_session(g).run(None, inputs)[0] for g in (a, b)]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_architectures_fallback_without_model_type(architectures_dir: Path) -> None:
    config, weights = load(architectures_dir / "xlm-roberta")
    del config["model_type"]
    assert build_encoder(config, weights).spec.model_type == "xlm-roberta"


def test_unknown_architecture_is_typed(architectures_dir: Path) -> None:
    config, weights = load(architectures_dir / "bert")
    config.update(model_type="gpt2", architectures=["GPT2Model"])
    with pytest.raises(InvalidModelFormat) as err:
        build_encoder(config, weights)
    message = str(err.value)
    assert "gpt2" in message
    assert all(kind in message for kind in SUPPORTED)


def test_missing_tensor_is_typed(architectures_dir: Path) -> None:
    config, weights = load(architectures_dir / "mpnet")
    name = "encoder.layer.1.attention.attn.k.weight"
    del weights[name]
    with pytest.raises(InvalidModelFormat, match=name.replace(".", r"\.")):
        build_encoder(config, weights)


def test_missing_embeddings_say_what_was_expected(architectures_dir: Path) -> None:
    config, weights = load(architectures_dir / "distilbert")
    weights = {k: v for k, v in weights.items() if "word_embeddings" not in k}
    with pytest.raises(InvalidModelFormat, match="word_embeddings"):
        build_encoder(config, weights)


def test_non_float32_weights_are_refused(architectures_dir: Path) -> None:
    config, weights = load(architectures_dir / "bert")
    name = "encoder.layer.0.output.dense.weight"
    weights[name] = weights[name].astype(np.float16)
    with pytest.raises(InvalidModelFormat, match=r"float16.*F32"):
        build_encoder(config, weights)


def test_wrong_shape_is_refused(architectures_dir: Path) -> None:
    config, weights = load(architectures_dir / "roberta")
    config["intermediate_size"] = 48
    with pytest.raises(InvalidModelFormat, match=r"intermediate\.dense\.weight"):
        build_encoder(config, weights)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("position_embedding_type", "relative_key", "relative_key"),
        ("hidden_act", "mish", "mish"),
        ("num_attention_heads", 5, "multiple"),
    ],
)
def test_unsupported_config_is_typed(
    architectures_dir: Path, key: str, value: Any, needle: str
) -> None:
    config, weights = load(architectures_dir / "bert")
    config[key] = value
    with pytest.raises(InvalidModelFormat, match=needle):
        build_encoder(config, weights)


def test_gelu_tanh_variant(architectures_dir: Path) -> None:
    """gelu_new is the tanh approximation: close to erf GELU, not equal."""
    config, weights = load(architectures_dir / "bert")
    inputs = dict(np.load(architectures_dir / "bert" / "inputs.npz"))
    exact = create_session(build_encoder(config, weights)).run(None, inputs)[0]
    config["hidden_act"] = "gelu_new"
    approx = create_session(build_encoder(config, weights)).run(None, inputs)[0]
    diff = float(np.abs(exact - approx).max())
    assert 0 < diff < 1e-2


@pytest.mark.parametrize("all_in_file", [True, False], ids=["all-mapped", "one-supplied"])
def test_weights_mapped_from_the_safetensors_file(
    architectures_dir: Path, tmp_path: Path, all_in_file: bool
) -> None:
    """A saved graph whose initializers point into model.safetensors, which
    ORT maps instead of copying; tensors left out are supplied in memory."""
    import onnx
    import onnxruntime as ort

    folder = architectures_dir / "roberta"
    shutil.copy(folder / "model.safetensors", tmp_path / "model.safetensors")
    config, weights = load(folder)
    offsets = f32_offsets(tmp_path / "model.safetensors")
    if not all_in_file:
        del offsets["encoder.layer.1.output.LayerNorm.weight"]
    graph = reference_file(build_encoder(config, weights), "model.safetensors", offsets)
    assert len(graph.external) == (0 if all_in_file else 1)
    onnx.save(graph.model, str(tmp_path / "graph.onnx"))
    options = ort.SessionOptions()
    keep = external_initializers(options, graph.external)
    session = ort.InferenceSession(str(tmp_path / "graph.onnx"), options)
    inputs = dict(np.load(folder / "inputs.npz"))
    (out,) = session.run(None, {n: inputs[n] for n in graph.input_names})
    expected = np.load(folder / "expected.npz")["last_hidden_state"]
    mask = inputs["attention_mask"].astype(bool)
    assert float(np.abs(out - expected)[mask].max()) <= TOLERANCE
    del keep
