"""Decoder graphs (Qwen2, Qwen3, Gemma3 text) built from config.json +
model.safetensors reproduce transformers' ``last_hidden_state``.

The graphs are built the way ``load()`` builds them: ``build_from_safetensors``
into a graph cache folder (BF16 weights widened per tensor into a mapped side
file); ``load()`` runs that graph (ORT optimises it in memory), and the graph
saved by ONNX Runtime's optimiser (``ort_optimize``, the int8 path's last
step) is checked too. ``qwen3/`` is
left-padded, ``gemma3/`` right-padded and bidirectional with a sliding window
shorter than its longest row.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime._optimize import build_from_safetensors, ort_optimize
from caxton_models.runtime.graph import build_encoder, create_session
from caxton_models.runtime.graph._widen import MappedTensors
from tests.support.tensors import read_safetensors

FAMILIES = ("qwen3", "gemma3")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def arch_dir(shared_dir: Path) -> Path:
    root = shared_dir / "fixtures" / "architectures"
    if not (root / "qwen3").is_dir():
        pytest.skip(f"decoder fixtures not found at {root}")
    return root


@pytest.fixture(scope="module")
def graphs(arch_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> plain graph, family + "-ort" -> ORT-optimised graph."""
    out: dict[str, Path] = {}
    for family in FAMILIES:
        model = tmp_path_factory.mktemp(family)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(arch_dir / family / name, model / name)
        plain = model / "graphs" / "model.plain.onnx"
        build_from_safetensors(model / "model.safetensors", plain)
        optimised = model / "graphs" / "model.ort.onnx"
        ort_optimize(plain, optimised)
        out[family], out[f"{family}-ort"] = plain, optimised
    return out


def _run(graph: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["last_hidden_state"], inputs)[0])


def _fixture(arch_dir: Path, family: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    inputs = dict(np.load(arch_dir / family / "inputs.npz"))
    return inputs, np.load(arch_dir / family / "expected.npz")["last_hidden_state"]


@pytest.mark.parametrize("optimised", [False, True], ids=["plain", "ort-optimised"])
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_transformers(
    arch_dir: Path, graphs: dict[str, Path], family: str, optimised: bool
) -> None:
    inputs, expected = _fixture(arch_dir, family)
    out = _run(graphs[f"{family}-ort" if optimised else family], inputs)
    assert out.shape == expected.shape
    mask = inputs["attention_mask"].astype(bool)
    # Padding rows are arbitrary in transformers: compare real tokens only.
    diff = float(np.abs(out - expected)[mask].max())
    assert diff <= TOLERANCE, f"{family}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("family", FAMILIES)
def test_each_row_alone_matches_the_padded_batch(
    arch_dir: Path, graphs: dict[str, Path], family: str
) -> None:
    """Batch and sequence axes are dynamic, and padding (left for qwen3)
    changes nothing: every row run alone, unpadded, gives its batch values."""
    import onnx

    model = onnx.load(str(graphs[family]), load_external_data=False)
    for value in (*model.graph.input, *model.graph.output):
        dims = [d.dim_param for d in value.type.tensor_type.shape.dim[:2]]
        assert dims == ["batch", "sequence"], value.name
    inputs, expected = _fixture(arch_dir, family)
    for row in range(len(inputs["input_ids"])):
        real = inputs["attention_mask"][row].astype(bool)
        alone = {k: v[row : row + 1, real] for k, v in inputs.items()}
        out = _run(graphs[family], alone)[0]
        diff = float(np.abs(out - expected[row, real]).max())
        assert diff <= TOLERANCE, f"{family} row {row}: {diff:.2e}"


def test_bf16_weights_are_widened_into_a_mapped_side_file(
    arch_dir: Path, graphs: dict[str, Path]
) -> None:
    """qwen3's BF16 weights end up as float32 in ``<graph>.data`` (page
    aligned), referenced by the graph; nothing is copied into the protobuf."""
    import onnx

    plain = graphs["qwen3"]
    side = plain.with_name(plain.name + ".data")
    model = onnx.load(str(plain), load_external_data=False)
    weights = read_safetensors(arch_dir / "qwen3" / "model.safetensors")
    locations = {
        t.name: {e.key: e.value for e in t.external_data}
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
    }
    assert set(weights) <= set(locations)
    assert {locations[n]["location"] for n in weights} == {side.name}
    data = np.memmap(side, dtype=np.uint8, mode="r")
    for name, array in weights.items():
        offset = int(locations[name]["offset"])
        assert offset % 4096 == 0
        stored = data[offset : offset + array.nbytes].view(np.float32).reshape(array.shape)
        np.testing.assert_array_equal(stored, array)
    assert model.ByteSize() < 100_000


def test_only_the_tensors_the_graph_uses_are_widened(arch_dir: Path, tmp_path: Path) -> None:
    """Widening happens per tensor when the builder asks: tensors the graph
    does not use (here layer 1's, for a config of one layer) are never
    written, and every tensor handed out is file-backed."""
    source = arch_dir / "qwen3" / "model.safetensors"
    tensors = MappedTensors(source, tmp_path / "side.data", in_place=False)
    config = json.loads((arch_dir / "qwen3" / "config.json").read_text())
    config["num_hidden_layers"] = 1
    config.pop("layer_types")
    build_encoder(config, tensors)
    tensors.close()
    widened = tensors.offsets()["side.data"]
    assert widened and not any(name.startswith("layers.1.") for name in widened)
    assert all(isinstance(tensors[name], np.memmap) for name in widened)


def _reference(
    config: dict[str, Any],
    w: dict[str, np.ndarray],
    ids: np.ndarray,
    mask: np.ndarray,
    causal: bool = True,
) -> np.ndarray:
    """Qwen2/Qwen3Model in numpy, float64, written from the transformers
    sources independently of the graph builder (rope over arange)."""
    heads, kv, d = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    eps, theta = config["rms_norm_eps"], config["rope_parameters"]["rope_theta"]

    def norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    def rope(x: np.ndarray) -> np.ndarray:  # x [B, h, S, D]
        inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
        ang = np.arange(x.shape[2])[:, None] * inv[None, :]
        cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
        rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
        return x * cos + rot * sin

    def lin(x: np.ndarray, name: str) -> np.ndarray:
        y = x @ w[f"{name}.weight"].astype(np.float64).T
        return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

    b, s = ids.shape
    rule = np.tril(np.ones((s, s), bool)) if causal else np.ones((s, s), bool)
    allowed = rule[None, None] & mask.astype(bool)[:, None, None, :]
    x = w["embed_tokens.weight"].astype(np.float64)[ids]
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}."
        h = norm(x, w[p + "input_layernorm.weight"])
        qkv = []
        for part, n in (("q", heads), ("k", kv), ("v", kv)):
            y = lin(h, f"{p}self_attn.{part}_proj").reshape(b, s, n, d)
            if f"{p}self_attn.{part}_norm.weight" in w:
                y = norm(y, w[f"{p}self_attn.{part}_norm.weight"])
            qkv.append(np.repeat(y.transpose(0, 2, 1, 3), heads // n, axis=1))
        q, k, v = rope(qkv[0]), rope(qkv[1]), qkv[2]
        scores = np.where(allowed, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d), -1e30)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = (probs / probs.sum(-1, keepdims=True)) @ v
        x = x + lin(ctx.transpose(0, 2, 1, 3).reshape(b, s, heads * d), p + "self_attn.o_proj")
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        gate, up = lin(h, p + "mlp.gate_proj"), lin(h, p + "mlp.up_proj")
        x = x + lin(gate / (1 + np.exp(-gate)) * up, p + "mlp.down_proj")
    return np.asarray(norm(x, w["norm.weight"]))


def test_qwen2_biases_and_no_qk_norm(arch_dir: Path) -> None:
    """Qwen2 = Qwen3 without q/k norms, with q/k/v biases. Checked against a
    numpy reference that itself reproduces the qwen3 fixture."""
    config = json.loads((arch_dir / "qwen3" / "config.json").read_text())
    weights = read_safetensors(arch_dir / "qwen3" / "model.safetensors")
    inputs, expected = _fixture(arch_dir, "qwen3")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    real = mask.astype(bool)
    assert np.abs(_reference(config, weights, ids, mask) - expected)[real].max() <= TOLERANCE

    rng = np.random.default_rng(0)
    # q_norm / k_norm go; input_layernorm, post_attention_layernorm, norm stay.
    qwen2 = {k: v for k, v in weights.items() if not k.endswith(("q_norm.weight", "k_norm.weight"))}
    for i in range(config["num_hidden_layers"]):
        for part in "qkv":
            name = f"layers.{i}.self_attn.{part}_proj"
            rows = int(qwen2[f"{name}.weight"].shape[0])
            qwen2[f"{name}.bias"] = rng.normal(0, 0.5, size=(rows,)).astype(np.float32)
    config2 = {**config, "model_type": "qwen2", "architectures": ["Qwen2Model"]}
    graph = build_encoder(config2, qwen2)
    out = create_session(graph).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    want = _reference(config2, qwen2, ids, mask)
    assert np.abs(out - want)[real].max() <= TOLERANCE
    assert np.abs(out - expected)[real].max() > 1e-2  # the biases did something


def test_older_gemma3_config_layout_builds_the_same_graph(arch_dir: Path) -> None:
    """rope_theta / rope_local_base_freq / sliding_window_pattern (configs
    saved before transformers 5) mean what rope_parameters / layer_types say."""
    config = json.loads((arch_dir / "gemma3" / "config.json").read_text())
    weights = read_safetensors(arch_dir / "gemma3" / "model.safetensors")
    old = copy.deepcopy(config)
    del old["rope_parameters"], old["layer_types"], old["_sliding_window_pattern"]
    old.update(rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window_pattern=3)
    inputs, _ = _fixture(arch_dir, "gemma3")
    a, b = (create_session(build_encoder(c, weights)).run(None, inputs)[0] for c in (config, old))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("family", "change", "needle"),
    [
        ("qwen3", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}, "yarn"),
        ("qwen3", {"num_key_value_heads": 3}, "multiple"),
        ("qwen3", {"layer_types": ["full_attention"]}, "layer_types"),
        ("gemma3", {"sliding_window": None}, "sliding_window"),
        ("gemma3", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
        ("gemma3", {"hidden_activation": "mish"}, "mish"),
    ],
)
def test_unsupported_config_is_typed(
    arch_dir: Path, family: str, change: dict[str, Any], needle: str
) -> None:
    config = {**json.loads((arch_dir / family / "config.json").read_text()), **change}
    weights = read_safetensors(arch_dir / family / "model.safetensors")
    with pytest.raises(InvalidModelFormat, match=needle):
        build_encoder(config, weights)


def test_missing_qk_norm_is_typed(arch_dir: Path) -> None:
    config = json.loads((arch_dir / "qwen3" / "config.json").read_text())
    weights = read_safetensors(arch_dir / "qwen3" / "model.safetensors")
    del weights["layers.1.self_attn.k_norm.weight"]
    with pytest.raises(InvalidModelFormat, match=r"layers\.1\.self_attn\.k_norm"):
        build_encoder(config, weights)


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_only_int8_stays_close_to_float32(arch_dir: Path, family: str) -> None:
    """Per-channel int8 projections (MatMulInteger, fused by ORT into one
    kernel): per-token cosine to the float32 graph, on tiny random models
    (hidden 32), where quantisation noise weighs most."""
    from caxton_models.runtime.graph.decoder import build_decoder_int8

    config = json.loads((arch_dir / family / "config.json").read_text())
    weights = read_safetensors(arch_dir / family / "model.safetensors")
    inputs, _ = _fixture(arch_dir, family)
    real = inputs["attention_mask"].astype(bool)
    graph = build_decoder_int8(config, weights)
    assert {n.op_type for n in graph.model.graph.node} >= {"MatMulInteger"}
    assert "Gemm" not in {n.op_type for n in graph.model.graph.node}
    fp32 = create_session(build_encoder(config, weights)).run(None, inputs)[0][real]
    int8 = create_session(graph).run(None, inputs)[0][real]
    cos = (fp32 * int8).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    print(f"{family} int8 vs fp32 per-token cosine: min {cos.min():.4f}, mean {cos.mean():.4f}")
    assert cos.min() > 0.95 and cos.mean() > 0.985


def test_int8_is_for_decoders(arch_dir: Path) -> None:
    from caxton_models.runtime.graph.decoder import build_decoder_int8

    config = json.loads((arch_dir / "bert" / "config.json").read_text())
    with pytest.raises(InvalidModelFormat, match="decoders only"):
        build_decoder_int8(config, read_safetensors(arch_dir / "bert" / "model.safetensors"))


def test_load_a_decoder_repo_from_a_hub(
    arch_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load("org/name")`` of a safetensors-only Gemma3 sentence-transformers
    repo (mean pooling, two Dense layers) served on 127.0.0.1: accepted,
    downloaded, built and matching sentence-transformers."""
    import caxton_models
    from caxton_models.ops.server import Catalog, ServerThread

    folder = arch_dir / "st-gemma3-mean-dense-prompts"
    catalog = Catalog.from_folder(folder, "acme/tiny-gemma", commit="c0ffee" + "0" * 34)
    with ServerThread(catalog) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
        emb = caxton_models.load("acme/tiny-gemma")
        texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
        vecs = emb.embed(texts)
    want = np.load(folder / "embeddings.npy")
    cos = (vecs * want).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999, cos


def test_is_causal_false_makes_qwen_bidirectional(arch_dir: Path) -> None:
    """config.json ``is_causal: false`` (bidirectional Qwen embedders): every
    token sees every real token, as transformers' mask then allows."""
    config = json.loads((arch_dir / "qwen3" / "config.json").read_text())
    weights = read_safetensors(arch_dir / "qwen3" / "model.safetensors")
    inputs, expected = _fixture(arch_dir, "qwen3")
    real = inputs["attention_mask"].astype(bool)
    out = create_session(build_encoder({**config, "is_causal": False}, weights)).run(None, inputs)
    want = _reference(config, weights, inputs["input_ids"], inputs["attention_mask"], causal=False)
    assert np.abs(out[0] - want)[real].max() <= TOLERANCE
    assert np.abs(out[0] - expected)[real].max() > 1e-2


def test_float32_weights_are_copied_beside_the_graph_when_they_cannot_be_linked(
    arch_dir: Path, tmp_path: Path
) -> None:
    """Without a hard link to model.safetensors (another file system), its
    float32 tensors go to the side file too, one at a time, and the graph
    still matches transformers."""
    import onnx
    import onnxruntime as ort

    from caxton_models.runtime.graph import reference_file

    config = json.loads((arch_dir / "gemma3" / "config.json").read_text())
    tensors = MappedTensors(
        arch_dir / "gemma3" / "model.safetensors", tmp_path / "g.onnx.data", in_place=False
    )
    graph = build_encoder(config, tensors)
    tensors.close()
    assert list(tensors.offsets()) == ["g.onnx.data"]
    for file_name, offsets in tensors.offsets().items():
        graph = reference_file(graph, file_name, offsets)
    assert not graph.external
    onnx.save(graph.model, str(tmp_path / "g.onnx"))
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    inputs, expected = _fixture(arch_dir, "gemma3")
    out = session.run(None, inputs)[0]
    real = inputs["attention_mask"].astype(bool)
    assert np.abs(out - expected)[real].max() <= TOLERANCE


def test_bf16_model_keeps_one_float32_copy_on_disk(arch_dir: Path, tmp_path: Path) -> None:
    """A BF16 model, loaded with the default optimisation: its graph cache
    holds one float32 copy of the weights (the widened side file), not a
    second one in an ORT-optimised graph's data file (it used to hold both),
    and the vectors still match sentence-transformers."""
    from caxton_models import _core
    from caxton_models.runtime.embedder import Embedder
    from caxton_models.store import GraphCache

    folder = tmp_path / "model"
    shutil.copytree(arch_dir / "st-qwen3-lasttoken-prompts", folder)
    raw = _core.safetensors_header(folder / "model.safetensors")
    header = {k: v for k, v in raw.items() if k != "__metadata__"}
    assert {v["dtype"] for v in header.values()} == {"BF16"}  # the case under test
    fp32 = sum(4 * int(np.prod(v["shape"], dtype=np.int64)) for v in header.values())
    emb = Embedder.from_dir(folder, graph_cache_dir=GraphCache(tmp_path).dir_for("qwen3"))
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    got = emb.embed(texts)
    # Hard links (the graph's link to model.safetensors) are the model's bytes.
    held = GraphCache(tmp_path).bytes_for("qwen3")
    # One copy: page alignment per tensor and the graph protobuf on top, no more.
    assert fp32 <= held <= fp32 + 4096 * len(header) + 1_000_000, (held, fp32)
    want = np.load(folder / "embeddings.npy")
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999, cos
