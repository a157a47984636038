"""int8 graphs (``quantize=True``) keep the float32 model's embedding space:
the real MiniLM (BERT) and all-mpnet-base-v2 (MPNet, built from its safetensors)
on both shared corpora, the decoder fixtures built from
safetensors, and the recipe recorded with the cached graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from caxton_models.runtime import _graphchoice as graphchoice_module
from caxton_models.runtime._optimize import INT8_RECIPE, graph_notes
from caxton_models.runtime._quant import Int8Recipe, quantize, value_projections
from caxton_models.runtime.embedder import Embedder

#: Lines of each corpus compared (the recipe's figures in runtime/_quant.py come
#: from all 10,000 / 1,404, and tests/runtime/test_parity.py holds the whole
#: corpora to the same bar): enough for a min that the short texts drive.
PYPI_TEXTS, DOCS_PASSAGES = 300, 30


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.fixture(scope="module")
def minilm_pair(minilm_dir: Path, graph_cache_dir: Path) -> tuple[Embedder, Embedder]:
    fp32 = Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir)
    int8 = Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir, quantize=True)
    return fp32, int8


@pytest.fixture(scope="module")
def mpnet_pair(mpnet_dir: Path, graph_cache_dir: Path) -> tuple[Embedder, Embedder]:
    fp32 = Embedder.from_dir(mpnet_dir, graph_cache_dir=graph_cache_dir)
    int8 = Embedder.from_dir(mpnet_dir, graph_cache_dir=graph_cache_dir, quantize=True)
    return fp32, int8


@pytest.mark.parametrize("model", ["minilm", "mpnet"])
@pytest.mark.parametrize(
    ("corpus", "lines"),
    [("pypi-summaries-10k", PYPI_TEXTS), ("python-docs-passages", DOCS_PASSAGES)],
)
def test_int8_keeps_the_space(
    request: pytest.FixtureRequest, corpora_dir: Path, model: str, corpus: str, lines: int
) -> None:
    fp32, int8 = request.getfixturevalue(f"{model}_pair")
    assert INT8_RECIPE.key in int8.graph_path.name, "the int8 graph was not used"
    texts = (corpora_dir / f"{corpus}.txt").read_text(encoding="utf-8").splitlines()[:lines]
    cos = _cosines(fp32.embed(texts), int8.embed(texts))
    # MiniLM: one activation scale per tensor gave mean 0.994; symmetric rows 0.9989.
    assert cos.mean() >= 0.998, f"{model} {corpus}: mean cosine {cos.mean():.5f}"
    assert cos.min() >= 0.99, f"{model} {corpus}: min cosine {cos.min():.4f}"


def test_int8_recipe_is_recorded_with_the_graph(minilm_pair: tuple[Embedder, Embedder]) -> None:
    graph = minilm_pair[1].graph_path
    note = graph_notes(graph.parent)[graph.name]
    assert note["int8_recipe"] == INT8_RECIPE.key
    assert "per row" in note["description"] and "GELU" in note["description"]


def test_minilm_keeps_its_value_projections_float32(minilm_dir: Path) -> None:
    model = onnx.load(str(minilm_dir / "onnx" / "model.onnx"), load_external_data=False)
    found = value_projections(model)
    assert sorted(found) == sorted(
        f"/m/encoder/layer.{i}/attention/self/value/MatMul" for i in range(6)
    )


def _one_matmul(path: Path, weight: np.ndarray, opset: int = 17) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", weight.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "one_matmul",
        [x],
        [y],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))


@pytest.mark.parametrize("opset", [12, 17])
def test_each_row_gets_its_own_activation_scale(tmp_path: Path, opset: int) -> None:
    """A row of small values beside a row with an outlier keeps its
    precision: with one scale for the tensor (step 50/255) it rounded to 0.
    Before opset 13 (no per-axis QuantizeLinear) the rows are quantised in
    floats, to the same result."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32)).astype(np.float32)
    _one_matmul(tmp_path / "plain.onnx", weight, opset)
    quantize(tmp_path / "plain.onnx", tmp_path / "int8.onnx", exclude=[])
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" not in kinds
    assert ("Reshape" in kinds) == (opset >= 13), "per-axis QuantizeLinear on the rows' view"
    x = rng.standard_normal((1, 2, 64)).astype(np.float32) * 0.01
    x[0, 1, 0] = 50.0  # an outlier in the other row
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0][0, 0]
    want = x[0, 0] @ weight
    # 0.008 measured (int8 weights included), the same at both opsets
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


def _gelu_matmul(path: Path, weight: np.ndarray, *, gated: bool = False, bias: bool = True) -> None:
    """``gelu(x) @ w + b`` with GELU written out as torch exports it
    (``x * (1 + erf(x / sqrt 2)) * 0.5``); ``gated`` multiplies by a second
    input first (``gelu(x) * u``, Gemma's and GeGLU's two-sided product)."""
    k = weight.shape[0]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "rows", k])
              for n in (["x", "u"] if gated else ["x"])]  # fmt: skip
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["xs"]),
        helper.make_node("Erf", ["xs"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["x", "e1"], ["xe"]),
        helper.make_node("Mul", ["xe", "half"], ["gelu"]),
    ]
    act = "gelu"
    if gated:
        nodes.append(helper.make_node("Mul", ["gelu", "u"], ["gated"]))
        act = "gated"
    nodes.append(helper.make_node("MatMul", [act, "w"], ["mm" if bias else "y"], name="mm"))
    if bias:
        nodes.append(helper.make_node("Add", ["mm", "b"], ["y"]))
    consts = {
        "sqrt2": np.array(np.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
        "w": weight,
        "b": np.linspace(-1, 1, weight.shape[1]).astype(np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "gelu_matmul",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in consts.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import erf

    return x * (1 + np.vectorize(erf)(x / np.sqrt(2))) / 2


def _int8_weight(path: Path, name: str) -> np.ndarray:
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    w = inits[f"{name}_quantized"].astype(np.float32) - inits[f"{name}_zero_point"]
    return np.asarray(w * inits[f"{name}_scale"])


@pytest.mark.parametrize("bias", [True, False])
def test_a_gelu_output_gets_every_level(tmp_path: Path, bias: bool) -> None:
    """A GELU output (the FFN down projection's input, never under -0.17) is
    quantised from 0 up once shifted, the shift folded into the bias: about
    half the error a symmetric scale (max|x| / 127 around 128) gives the same
    row. Without a bias to fold into, its rows are quantised from their own
    min to max, as good."""
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((256, 64)).astype(np.float32)
    _gelu_matmul(tmp_path / "plain.onnx", weight, bias=bias)
    quantize(tmp_path / "plain.onnx", tmp_path / "int8.onnx", exclude=[])
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "MatMulIntegerToFloat" in kinds and "DynamicQuantizeLinear" not in kinds
    assert ("ReduceMin" in kinds) != bias, "one-sided rows need no min"
    x = rng.uniform(-3.0, 4.0, (1, 8, 256)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    # The graph's own int8 weights, so that only the activations' error is compared.
    w_int8 = _int8_weight(tmp_path / "int8.onnx", "w")
    b = np.linspace(-1, 1, 64).astype(np.float32) if bias else 0
    act = _gelu(x).astype(np.float32)
    want = act @ w_int8 + b
    a_step = np.abs(act).max(axis=-1, keepdims=True) / 127
    symmetric = (np.round(act / a_step) * a_step) @ w_int8 + b
    err, err_sym = np.linalg.norm(got - want), np.linalg.norm(symmetric - want)
    assert err < 0.75 * err_sym, (err, err_sym)


def test_a_gated_gelu_is_quantised_from_its_rows_min(tmp_path: Path) -> None:
    """``gelu(gate) * up`` goes negative without bound: no GELU shift (its
    rows are quantised from their own min), and the result stays close."""
    import onnxruntime as ort

    rng = np.random.default_rng(2)
    weight = rng.standard_normal((128, 32)).astype(np.float32)
    _gelu_matmul(tmp_path / "plain.onnx", weight, gated=True)
    quantize(tmp_path / "plain.onnx", tmp_path / "int8.onnx", exclude=[])
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    assert "ReduceMin" in {n.op_type for n in graph.node}
    assert not any(i.name.endswith("_rowq_gelu") for i in graph.initializer)
    x, u = rng.uniform(-3.0, 4.0, (2, 1, 5, 128)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x, "u": u})[0]
    want = (_gelu(x) * u) @ _int8_weight(tmp_path / "int8.onnx", "w") + np.linspace(-1, 1, 32)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.01


#: Each family's graph from safetensors: how many of its FFN inputs are a plain
#: GELU (one-sided rows); GeGLU, SwiGLU and Gemma's gated GELU are products of two.
FAMILY_GELU_ROWS = {
    "bert": 2, "distilbert": 2, "roberta": 2, "xlm-roberta": 2, "mpnet": 2,
    "modernbert": 0, "qwen3": 0, "gemma3": 0,
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(FAMILY_GELU_ROWS))
def test_every_family_quantises_close_to_float32(
    architectures_dir: Path, tmp_path: Path, family: str
) -> None:
    """Every MatMul but the attention value projections becomes one fused
    MatMulIntegerToFloat, a GELU output is shifted exactly where the FFN input
    is a plain GELU, and every real token's hidden state stays close."""
    import shutil

    import onnxruntime as ort

    from caxton_models.runtime._optimize import build_from_safetensors

    folder = tmp_path / family
    shutil.copytree(architectures_dir / family, folder)
    build_from_safetensors(folder / "model.safetensors", tmp_path / "plain.onnx")
    quantize(tmp_path / "plain.onnx", tmp_path / "int8.onnx")
    graph = onnx.load(str(tmp_path / "int8.onnx"), load_external_data=False).graph
    kinds = [n.op_type for n in graph.node]
    assert "MatMulIntegerToFloat" in kinds
    assert not {"DynamicQuantizeLinear", "MatMulInteger"} & set(kinds)
    shifted = sum(i.name.endswith("_rowq_gelu") for i in graph.initializer)
    assert shifted == FAMILY_GELU_ROWS[family]
    feeds = dict(np.load(folder / "inputs.npz"))
    outs = []
    for name in ("plain.onnx", "int8.onnx"):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        outs.append(session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0])
    real = feeds["attention_mask"].astype(bool)
    cos = _cosines(outs[0][real], outs[1][real])
    assert cos.min() >= 0.995, f"{family}: min token cosine {cos.min():.4f}"


@pytest.mark.parametrize("family", ["st-qwen3-lasttoken-prompts", "st-gemma3-mean-dense-prompts"])
def test_decoder_int8_from_safetensors(
    architectures_dir: Path, tmp_path: Path, family: str
) -> None:
    """Qwen3 / Gemma3 graphs built from safetensors load int8 (Gemma3's
    float32 weights, hard-linked into the graph cache, made onnx refuse the
    file: it fell back to float32) and stay close to their float32 graph."""
    folder = architectures_dir / family
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    fp32 = Embedder.from_dir(folder, graph_cache_dir=tmp_path)
    int8 = Embedder.from_dir(folder, graph_cache_dir=tmp_path, quantize=True)
    assert INT8_RECIPE.key in int8.graph_path.name, "the int8 graph was not used"
    cos = _cosines(fp32.embed(texts), int8.embed(texts))
    assert cos.min() >= 0.98, f"{family}: min cosine {cos.min():.4f}"


def test_a_new_recipe_does_not_reuse_old_int8_graphs(
    architectures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = architectures_dir / "st-qwen3-lasttoken-prompts"
    first = Embedder.from_dir(folder, graph_cache_dir=tmp_path, quantize=True).graph_path
    monkeypatch.setattr(graphchoice_module, "INT8_RECIPE", Int8Recipe(key="another-recipe"))
    second = Embedder.from_dir(folder, graph_cache_dir=tmp_path, quantize=True).graph_path
    assert first.is_file() and second.is_file() and first != second
    assert graph_notes(tmp_path)[second.name]["int8_recipe"] == "another-recipe"


def test_model_info_reports_the_recipe_and_cached_int8_graphs(tmp_path: Path) -> None:
    import json

    from caxton_models.ops.cli._models import _int8_info, _int8_lines
    from caxton_models.store import GraphCache
    from caxton_models.store._records import METADATA_FILE

    model = tmp_path / "some-model"
    model.mkdir()
    (model / METADATA_FILE).write_text("{}")  # a cache entry: its graphs live in .graphs/
    graphs = GraphCache(tmp_path).dir_for(model.name)
    graphs.mkdir(parents=True)
    (graphs / "model.ort-int8-x.onnx").write_bytes(b"graph")
    (graphs / "model.ort-int8-x.onnx.json").write_text(json.dumps(INT8_RECIPE.note()))
    (graphs / "model.gone.onnx.json").write_text(json.dumps(INT8_RECIPE.note()))  # no graph
    info = _int8_info(model, tmp_path)
    assert list(info["graphs"]) == ["model.ort-int8-x.onnx"]
    lines = list(_int8_lines(info))
    assert INT8_RECIPE.describe() in lines[0] and "per row" in lines[0]
    assert lines[1].endswith(f"recipe {INT8_RECIPE.key}")
