"""Today's encoder families run from ``model.safetensors`` alone: ModernBERT.

The real ModernBERT-base shape (hidden 768, 22 layers, intermediate 1152, 12
heads, local window 128, global attention every 3rd layer, vocabulary 50368)
with random BF16 weights, saved as a sentence-transformers repository (mean
pooling, Normalize) with the all-MiniLM-L6-v2 tokenizer, so texts get real
lengths (the first 256 PyPI summaries; median ~16 tokens). Each figure comes
from a fresh process, so its peak RSS (VmHWM) is its own:

* graph build: ``build_from_safetensors`` alone (config.json + BF16
  safetensors -> the plain ONNX graph, F16/BF16 widened per tensor), time
  and peak RSS;
* first load: ``caxton_models.load`` with nothing cached (build, ORT
  optimisation, parity check of the optimised graph);
* warm runs: load (graphs cached) and embed 256 texts; texts/s, texts per
  CPU second (steadier than wall time on a shared machine), peak RSS.

With the torch environment ``benches/make_torch_env.sh`` makes (or the
python ``CAXTON_TORCH_PYTHON`` names), sentence-transformers on torch
(float32, 2 threads) embeds the same texts from the same folder in
interleaved rounds and the ratio ours/torch is printed; without one, only
our figures are printed (torch is never needed by the test command).

Real run:
    pytest benches/test_modern_archs.py --benchmark-enable -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 5
TEXTS = 256
SMOKE_TEXTS = 16

#: ModernBERT-base's config.json as published (answerdotai/ModernBERT-base,
#: the base of gte-modernbert-base and modernbert-embed-base).
MODERNBERT_BASE: dict[str, Any] = {
    "architectures": ["ModernBertModel"],
    "model_type": "modernbert",
    "hidden_size": 768,
    "intermediate_size": 1152,
    "num_hidden_layers": 22,
    "num_attention_heads": 12,
    "hidden_activation": "gelu",
    "max_position_embeddings": 8192,
    "norm_eps": 1e-5,
    "norm_bias": False,
    "attention_bias": False,
    "mlp_bias": False,
    "global_attn_every_n_layers": 3,
    "local_attention": 128,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 10000.0,
    "vocab_size": 50368,
    "pad_token_id": 0,
}
#: A small one of the same shape rules for the smoke run.
SMOKE = {**MODERNBERT_BASE, "hidden_size": 64, "intermediate_size": 96,
         "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 30522}  # fmt: skip

_BUILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from caxton_models.runtime._optimize import build_from_safetensors
    weights, dest = Path(sys.argv[1]), Path(sys.argv[2])
    t0 = time.perf_counter()
    build_from_safetensors(weights, dest)
    took = time.perf_counter() - t0
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"build_s": took, "build_peak_rss_mb": rss / 1024}), flush=True)
    """
)
_OURS = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    model_dir, corpus = sys.argv[1:3]
    import caxton_models
    emb = caxton_models.load(model_dir, threads=2)
    emb.embed(["Hello world"])
    first = time.perf_counter() - t0
    texts = open(corpus, encoding="utf-8").read().splitlines()
    t1, c1 = time.perf_counter(), time.process_time()
    vecs = emb.embed(texts)
    rate = len(texts) / (time.perf_counter() - t1)
    cpu_rate = len(texts) / (time.process_time() - c1)
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"first_vector_s": first, "texts_per_s": rate, "texts_per_cpu_s": cpu_rate,
                      "peak_rss_mb": rss / 1024,
                      "dims": int(vecs.shape[1]), "graph": str(emb.graph_path)}), flush=True)
    """
)
_TORCH = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    model_dir, corpus = sys.argv[1:3]
    import torch
    torch.set_num_threads(2)
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(model_dir, device="cpu", model_kwargs={"dtype": torch.float32})
    st.encode(["Hello world"])
    first = time.perf_counter() - t0
    texts = open(corpus, encoding="utf-8").read().splitlines()
    t1, c1 = time.perf_counter(), time.process_time()
    vecs = st.encode(texts, batch_size=32)
    rate = len(texts) / (time.perf_counter() - t1)
    cpu_rate = len(texts) / (time.process_time() - c1)
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"first_vector_s": first, "texts_per_s": rate, "texts_per_cpu_s": cpu_rate,
                      "peak_rss_mb": rss / 1024,
                      "dims": int(vecs.shape[1])}), flush=True)
    """
)


def _tensors(config: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """ModernBertModel's tensors (no biases: ModernBERT-base has none)."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    out: list[tuple[str, tuple[int, ...]]] = [
        ("embeddings.tok_embeddings.weight", (v, h)),
        ("embeddings.norm.weight", (h,)),
    ]
    for n in range(config["num_hidden_layers"]):
        if n:
            out.append((f"layers.{n}.attn_norm.weight", (h,)))
        out += [
            (f"layers.{n}.attn.Wqkv.weight", (3 * h, h)),
            (f"layers.{n}.attn.Wo.weight", (h, h)),
            (f"layers.{n}.mlp_norm.weight", (h,)),
            (f"layers.{n}.mlp.Wi.weight", (2 * i, h)),
            (f"layers.{n}.mlp.Wo.weight", (h, i)),
        ]
    return [*out, ("final_norm.weight", (h,))]


def write_bf16_safetensors(path: Path, config: dict[str, Any], seed: int = 0) -> None:
    """Random BF16 weights (N(0, 0.02); norms 1), written one tensor at a time."""
    rng = np.random.default_rng(seed)
    tensors = _tensors(config)
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors:
        size = 2 * int(np.prod(shape))
        header[name] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for _, shape in tensors:
            if len(shape) == 1:
                values = np.ones(shape, np.float32)
            else:
                values = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            f.write((values.view(np.uint32) >> 16).astype("<u2").tobytes())


def make_modernbert_repo(dest: Path, config: dict[str, Any], tokenizer_dir: Path) -> Path:
    """A sentence-transformers repository: config.json, BF16
    model.safetensors, the tokenizer of ``tokenizer_dir``, mean pooling,
    Normalize; max_seq_length 512 so texts keep their own lengths."""
    dest.mkdir(parents=True)
    (dest / "config.json").write_text(json.dumps(config, indent=1))
    write_bf16_safetensors(dest / "model.safetensors", config)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(tokenizer_dir / name, dest / name)
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    kinds = ("Transformer", "Pooling", "Normalize")
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(zip(("", "1_Pooling", "2_Normalize"), kinds, strict=True))
    ]
    (dest / "modules.json").write_text(json.dumps(modules, indent=1))
    (dest / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": config["hidden_size"], "pooling_mode_mean_tokens": True}
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (dest / "2_Normalize").mkdir()
    return dest


#: Where benches/make_torch_env.sh puts its environment (read at import,
#: before the test fixtures point XDG_CACHE_HOME at a temporary folder).
TORCH_VENV = Path(
    os.environ.get("CAXTON_TORCH_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "caxton-bench-torch"
)


def torch_python() -> Path | None:
    """The torch environment's python once make_torch_env.sh finished it
    (``CAXTON_TORCH_PYTHON`` names another); never installed from here."""
    explicit = os.environ.get("CAXTON_TORCH_PYTHON")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    ready = (TORCH_VENV / ".caxton-ready").is_file()
    return TORCH_VENV / "bin" / "python" if ready else None


def _run(argv: list[str], cache: Path, timeout: float = 1800) -> dict[str, Any]:
    env = {**os.environ, "CAXTON_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO / "python")}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _cpu() -> str:
    info = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), "unknown")  # fmt: skip
    flags = set(next((ln for ln in info.splitlines() if ln.startswith("flags")), "").split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return f"{name} ({os.cpu_count()} cores; {', '.join(isa) or 'no avx2'})"


@pytest.mark.timeout(7200)
def test_modernbert_base_from_safetensors(
    bench_enabled: bool,
    minilm_dir: Path,
    corpora_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("modernbert-bench")
    config = MODERNBERT_BASE if bench_enabled else SMOKE
    n = TEXTS if bench_enabled else SMOKE_TEXTS
    rounds = ROUNDS if bench_enabled else 1
    model = make_modernbert_repo(root / "modernbert-base-random", config, minilm_dir)
    corpus = root / "corpus.txt"
    lines = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:n]), encoding="utf-8")

    weights = model / "model.safetensors"
    build = _run([sys.executable, "-c", _BUILD, str(weights), str(root / "b" / "g.onnx")],
                 root / "build-cache")  # fmt: skip
    cache = root / "cache"
    t0 = time.perf_counter()
    first = _run([sys.executable, "-c", _OURS, str(model), str(corpus)], cache)
    first_load_s = time.perf_counter() - t0
    # A graph built from safetensors runs as built (ORT optimises it in memory).
    assert ".plain." in Path(first["graph"]).name, first["graph"]

    torch_py = torch_python()
    runners: dict[str, list[str]] = {
        "caxton": [sys.executable, "-c", _OURS, str(model), str(corpus)]
    }
    if torch_py is not None:
        runners["torch"] = [str(torch_py), "-c", _TORCH, str(model), str(corpus)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, argv in runners.items():
            runs[name].append(_run(argv, cache))
    keys = ("first_vector_s", "texts_per_s", "texts_per_cpu_s", "peak_rss_mb")
    report = {
        name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()
    }

    shape = (f"hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
             f"vocab {config['vocab_size']}")  # fmt: skip
    print(f"\nModernBERT ({shape}, random BF16, {weights.stat().st_size / 2**20:.0f} MiB) "
          f"on {_cpu()}, threads 2, {n} PyPI summaries, {rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.1f}:")  # fmt: skip
    print(f"  graph build (build_from_safetensors) {build['build_s']:8.2f} s, "
          f"peak RSS {build['build_peak_rss_mb']:8.0f} MB")  # fmt: skip
    print(f"  first load (build + ORT optimise + parity check + embed) {first_load_s:8.2f} s, "
          f"peak RSS {first['peak_rss_mb']:8.0f} MB")  # fmt: skip
    for name, figures in report.items():
        print(f"  {name:<7} " + "  ".join(f"{k} {v:9.2f}" for k, v in figures.items()))
    if "torch" in report:
        ratios = {k: report["caxton"][k] / report["torch"][k] for k in keys}
        print("  ratio caxton/torch " + "  ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    else:
        print("  (no torch environment: benches/make_torch_env.sh makes one; ours only)")
    assert all(r["texts_per_s"] > 0 and r["dims"] == config["hidden_size"]
               for rs in runs.values() for r in rs)  # fmt: skip
