"""Rerank throughput: pairs per second, ours against sentence-transformers'
``CrossEncoder`` on torch, in the same run, as a ratio.

The model is a BERT cross-encoder of ms-marco-MiniLM-L6 size (6 layers,
hidden 384, 12 heads, intermediate 1536) with seeded random weights written
as ``model.safetensors`` beside MiniLM's tokenizer: the work per pair is the
real model's, and no download is needed. Pairs are a PyPI summary (query)
against a Python docs passage, MS MARCO-like lengths.

Torch never enters the test command: the CrossEncoder side runs as a
subprocess in the virtualenv ``benches/make_torch_env.sh`` creates
(``CAXTON_TORCH_VENV``, default ``~/.cache/caxton-bench-torch``), which loads
the model once and times ``predict`` whenever asked, so the rounds interleave
(ours, theirs, theirs, ours, ...). Both sides use 2 threads. The smoke run
(benchmarks disabled) scores a few pairs with ours only, on a one-layer
model of the same vocabulary.

Real run:
    pytest benches/test_rerank.py --benchmark-enable -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models.runtime.reranker import Reranker

THREADS = 2
PAIRS = 512
SMOKE_PAIRS = 8
ROUNDS = 7
#: ms-marco-MiniLM-L6-v2's shape.
CONFIG = {
    "architectures": ["BertForSequenceClassification"],
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
}
# Read before the tests' isolated environment replaces XDG_CACHE_HOME.
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
TORCH_VENV = Path(os.environ.get("CAXTON_TORCH_VENV") or _CACHE / "caxton-bench-torch")
TORCH_PYTHON = TORCH_VENV / "bin" / "python"

_WORKER = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from sentence_transformers import CrossEncoder
    import sentence_transformers, transformers

    folder, pairs_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    pairs = json.load(open(pairs_file, encoding="utf-8"))
    model = CrossEncoder(folder, device="cpu")
    scores = model.predict(pairs, batch_size=32, show_progress_bar=False)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "sentence-transformers": sentence_transformers.__version__}
    print(json.dumps({"scores": [float(s) for s in scores], "versions": versions}), flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        model.predict(pairs, batch_size=32, show_progress_bar=False)
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    """
)


#: The smoke run's model: the same code path, a fraction of the work.
SMOKE_CONFIG = {
    **CONFIG,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}


def _write_model(minilm_dir: Path, folder: Path, config: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    h, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    tensors: dict[str, np.ndarray] = {}

    def add(name: str, *shape: int, ones: bool = False) -> None:
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        tensors[name] = noise + np.float32(1.0) if ones else noise

    def dense(name: str, n_out: int, n_in: int) -> None:
        add(f"{name}.weight", n_out, n_in)
        add(f"{name}.bias", n_out)

    def norm(name: str) -> None:
        add(f"{name}.weight", h, ones=True)
        add(f"{name}.bias", h)

    add("bert.embeddings.word_embeddings.weight", vocab, h)
    add("bert.embeddings.position_embeddings.weight", config["max_position_embeddings"], h)
    add("bert.embeddings.token_type_embeddings.weight", 2, h)
    norm("bert.embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        layer = f"bert.encoder.layer.{i}"
        for part in ("query", "key", "value"):
            dense(f"{layer}.attention.self.{part}", h, h)
        dense(f"{layer}.attention.output.dense", h, h)
        norm(f"{layer}.attention.output.LayerNorm")
        dense(f"{layer}.intermediate.dense", inner, h)
        dense(f"{layer}.output.dense", h, inner)
        norm(f"{layer}.output.LayerNorm")
    dense("bert.pooler.dense", h, h)
    dense("classifier", 1, h)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, folder / name)


def _pairs(corpora_dir: Path, n: int) -> list[tuple[str, str]]:
    queries = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    docs = (corpora_dir / "python-docs-passages.txt").read_text(encoding="utf-8").splitlines()
    return [(queries[i % len(queries)], docs[(7 * i) % len(docs)]) for i in range(n)]


class TorchSide:
    """CrossEncoder in the torch virtualenv: loads once, times on request."""

    def __init__(self, folder: Path, pairs_file: Path) -> None:
        self.proc = subprocess.Popen(
            [str(TORCH_PYTHON), "-c", _WORKER, str(folder), str(pairs_file), str(THREADS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"},
        )
        try:
            first = self._read()
        except (RuntimeError, ValueError):
            self.close()
            raise
        self.scores = np.asarray(first["scores"], dtype=np.float32)
        self.versions: dict[str, str] = first["versions"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the torch worker ended (exit {self.proc.wait()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def time_once(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the worker's loop ends at end of input
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.mark.timeout(3600)
def test_rerank_pairs_per_second_vs_cross_encoder(
    bench_enabled: bool,
    minilm_dir: Path,
    corpora_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("rerank-bench")
    folder = root / "ce-minilm-l6-random"
    _write_model(minilm_dir, folder, CONFIG if bench_enabled else SMOKE_CONFIG)
    pairs = _pairs(corpora_dir, PAIRS if bench_enabled else SMOKE_PAIRS)
    ours = Reranker.from_dir(folder, threads=THREADS, graph_cache_dir=root / "graphs")
    scores = ours.predict(pairs)
    assert scores.shape == (len(pairs),) and np.isfinite(scores).all()
    if not bench_enabled:
        return  # the smoke run: ours runs; torch is never needed here
    if not TORCH_PYTHON.is_file():
        pytest.skip(
            f"no torch virtualenv at {TORCH_VENV}: run benches/make_torch_env.sh "
            "(or set CAXTON_TORCH_VENV) for the CrossEncoder side"
        )
    pairs_file = root / "pairs.json"
    pairs_file.write_text(json.dumps(pairs), encoding="utf-8")
    try:
        theirs = TorchSide(folder, pairs_file)
    except (RuntimeError, ValueError) as e:
        pytest.skip(f"the torch virtualenv at {TORCH_VENV} cannot run CrossEncoder: {e}")
    try:
        np.testing.assert_allclose(scores, theirs.scores, atol=1e-4)
        ratios, our_s, their_s = [], [], []
        for r in range(ROUNDS):
            pair_times = {}
            for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
                if side == "ours":
                    t0 = time.perf_counter()
                    ours.predict(pairs)
                    pair_times[side] = time.perf_counter() - t0
                else:
                    pair_times[side] = theirs.time_once()
            our_s.append(pair_times["ours"])
            their_s.append(pair_times["theirs"])
            ratios.append(pair_times["theirs"] / pair_times["ours"])
    finally:
        theirs.close()
    n = len(pairs)
    print(
        f"\nrerank {n} pairs, {ROUNDS} interleaved rounds, {THREADS} threads, "
        f"CrossEncoder on {theirs.versions}:\n"
        f"  ours          {n / statistics.median(our_s):9.1f} pairs/s\n"
        f"  CrossEncoder  {n / statistics.median(their_s):9.1f} pairs/s\n"
        f"  ratio (median of per-round ratios) {statistics.median(ratios):.2f}x"
    )
