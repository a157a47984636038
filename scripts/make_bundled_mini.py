#!/usr/bin/env python3
"""Builds ``bundled-mini``: all-MiniLM-L6-v2 made small enough to ship in the wheel.

The bundled model must live in the default model's embedding space, so it is
the same network, compressed:

* the transformer fusions of onnxruntime.transformers (Attention,
  SkipLayerNorm, BiasGelu, EmbedLayerNorm) are applied first, so the runtime
  does not need the optimiser's dependencies;
* every MatMul and Attention weight becomes int8 with one scale per output
  channel (dynamic quantization: activations are quantized per batch), except
  the nodes given with ``--keep`` (the most sensitive ones, measured with
  ``--sensitivity``), which stay float32;
* the word-embedding table (30522 x 384, 47 MB in float32) becomes int8 with
  one scale per row behind a DequantizeLinear node. ONNX Runtime folds that
  node into a float32 table when the session loads (with
  ``session.disable_quant_qdq=1``, recorded in caxton.json), so the file is
  small and the runtime cost is nil;
* position embeddings are cut to max_seq_length rows (the tokenizer never
  makes longer inputs).

Parity is measured against the fp32 reference embeddings of both corpora
(sentence-transformers, see ../shared/models/README.md) and written to
caxton.json. Usage (the
fusions need ``pip install sympy`` too, a dev-only dependency):

    python scripts/make_bundled_mini.py --src ../shared/models/all-MiniLM-L6-v2 \
        --reference ../shared/models/reference --corpora ../shared/corpora
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
DEST = REPO / "python" / "caxton_models" / "bundled" / "bundled-mini"
SESSION_CONFIG = {"session.disable_quant_qdq": "1"}
CORPORA = ("pypi-summaries-10k", "python-docs-passages")
COPY = (
    "tokenizer.json",
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)


def fuse(src: Path, dest: Path, num_heads: int, hidden: int) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    m = optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden,
        opt_level=0,
        use_gpu=False,
    )
    print("fused:", {k: v for k, v in m.get_fused_operator_statistics().items() if v})
    m.save_model_to_file(str(dest))  # also declares the com.microsoft opset


def quantize(fused: Path, dest: Path, keep: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fused,
        dest,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=keep,
        op_types_to_quantize=["MatMul", "Attention"],
        extra_options={
            "MatMulConstBOnly": True,
            # fused com.microsoft ops defeat ONNX shape inference
            "DefaultTensorType": 1,  # TensorProto.FLOAT
        },
    )


def shrink_embeddings(model: onnx.ModelProto, max_positions: int) -> None:
    """int8 word embeddings with per-row scales; position table cut to max_positions."""
    g = model.graph
    eln = next(n for n in g.node if n.op_type == "EmbedLayerNormalization")
    word, pos = eln.input[2], eln.input[3]
    inits = {i.name: i for i in g.initializer}
    w = numpy_helper.to_array(inits[word]).astype(np.float32)
    scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    g.initializer.remove(inits[word])
    g.initializer.extend(
        [
            numpy_helper.from_array(q, word + "_int8"),
            numpy_helper.from_array(scale.astype(np.float32), word + "_scale"),
            numpy_helper.from_array(np.zeros(len(scale), np.int8), word + "_zero"),
        ]
    )
    g.node.insert(
        0,
        helper.make_node(
            "DequantizeLinear",
            [word + "_int8", word + "_scale", word + "_zero"],
            [word],
            name="word_embeddings_dequantize",
            axis=0,
        ),
    )
    p = numpy_helper.to_array(inits[pos])[:max_positions]
    g.initializer.remove(inits[pos])
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(p), pos))
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in model.opset_import):
        raise SystemExit("DequantizeLinear with axis needs opset >= 13")


def embed(
    model_path: Path,
    tokenizer_path: Path,
    texts: list[str],
    max_len: int,
    session_config: dict[str, str],
) -> np.ndarray:
    """A plain reference pipeline (not caxton's): length-sorted batches, mean pooling."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    so = ort.SessionOptions()
    for k, v in session_config.items():
        so.add_session_config_entry(k, v)
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_len)
    ids = [e.ids for e in tok.encode_batch(texts)]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    out = np.zeros((len(texts), 384), np.float32)
    for s in range(0, len(order), 64):
        rows = order[s : s + 64]
        width = max(len(ids[i]) for i in rows)
        a = np.zeros((len(rows), width), np.int64)
        m = np.zeros_like(a)
        for r, i in enumerate(rows):
            a[r, : len(ids[i])] = ids[i]
            m[r, : len(ids[i])] = 1
        h = sess.run(
            None, {"input_ids": a, "attention_mask": m, "token_type_ids": np.zeros_like(a)}
        )[0]
        v = (h * m[:, :, None]).sum(1) / m.sum(1, keepdims=True)
        out[rows] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def parity(
    model_path: Path,
    tokenizer: Path,
    corpora: Path,
    reference: Path,
    limit: int | None,
    session_config: dict[str, str],
) -> dict[str, dict[str, float]]:
    res = {}
    for c in CORPORA:
        texts = (corpora / f"{c}.txt").read_text(encoding="utf-8").splitlines()[:limit]
        ref = np.load(reference / f"all-MiniLM-L6-v2.{c}.npy")[: len(texts)]
        cos = (embed(model_path, tokenizer, texts, 256, session_config) * ref).sum(1)
        res[c] = {
            "texts": len(texts),
            "mean_cosine": round(float(cos.mean()), 5),
            "min_cosine": round(float(cos.min()), 5),
        }
    return res


def build(src: Path, work: Path, keep: list[str], max_len: int) -> Path:
    cfg = json.loads((src / "config.json").read_text())
    fused = work / "fused.onnx"
    if not fused.exists():
        fuse(src / "onnx" / "model.onnx", fused, cfg["num_attention_heads"], cfg["hidden_size"])
    q = work / "q.onnx"
    quantize(fused, q, keep)
    model = onnx.load(q)
    shrink_embeddings(model, max_len)
    out = work / "model.onnx"
    onnx.save_model(model, out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shared = Path(os.environ.get("CAXTON_TEST_DATA") or REPO.parent / "shared")
    ap.add_argument("--src", type=Path, default=shared / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--reference", type=Path, default=shared / "models" / "reference")
    ap.add_argument("--corpora", type=Path, default=shared / "corpora")
    ap.add_argument("--dest", type=Path, default=DEST)
    ap.add_argument(
        "--keep",
        nargs="*",
        default=None,
        help="node names left in float32 (default: the measured most sensitive)",
    )
    ap.add_argument("--limit", type=int, default=None, help="texts per corpus for parity")
    ap.add_argument(
        "--sensitivity",
        action="store_true",
        help="measure min cosine with each quantizable node kept in float32, then stop",
    )
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    keep = DEFAULT_KEEP if args.keep is None else args.keep
    max_len = json.loads((args.src / "sentence_bert_config.json").read_text())["max_seq_length"]
    work = args.work or Path(tempfile.mkdtemp(prefix="bundled-mini-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.sensitivity:
        base = build(args.src, work, [], max_len)
        nodes = [
            n.name
            for n in onnx.load(work / "fused.onnx").graph.node
            if n.op_type in ("MatMul", "Attention")
        ]
        print(
            "all int8:",
            parity(
                base,
                args.src / "tokenizer.json",
                args.corpora,
                args.reference,
                args.limit,
                SESSION_CONFIG,
            ),
            flush=True,
        )
        for n in nodes:
            m = build(args.src, work, [n], max_len)
            print(
                n,
                parity(
                    m,
                    args.src / "tokenizer.json",
                    args.corpora,
                    args.reference,
                    args.limit,
                    SESSION_CONFIG,
                ),
                flush=True,
            )
        return 0
    model = build(args.src, work, keep, max_len)
    res = parity(
        model, args.src / "tokenizer.json", args.corpora, args.reference, args.limit, SESSION_CONFIG
    )
    print(json.dumps(res, indent=1))
    dest = args.dest
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "1_Pooling").mkdir(parents=True)
    shutil.copy(model, dest / "model.onnx")
    for f in COPY:
        shutil.copyfile(args.src / f, dest / f)
    (dest / "caxton.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "name": "bundled-mini",
                "model_id": "caxton/bundled-mini",
                "space": "sentence-transformers/all-MiniLM-L6-v2",
                "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                "base_revision": "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
                "licence": "Apache-2.0 (the base model's)",
                "onnx": "model.onnx",
                "pre_optimized": True,
                "quantized": True,
                "quantization": "int8 per-channel dynamic (MatMul, Attention); int8 per-row word "
                f"embeddings; float32 kept: {keep}",
                "session_config": SESSION_CONFIG,
                "parity": res,
                "built_with": {
                    "onnxruntime": __import__("onnxruntime").__version__,
                    "onnx": onnx.__version__,
                },
            },
            indent=1,
        )
        + "\n"
    )
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"wrote {dest} ({size / 2**20:.1f} MiB) in {time.time() - t0:.0f} s")
    return 0


#: Measured with --sensitivity (see the report in caxton.json).
DEFAULT_KEEP: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
