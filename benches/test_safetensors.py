"""all-MiniLM-L6-v2 from ``model.safetensors`` alone (graph built by
caxton_models.runtime.graph) against the same model from its shipped
``onnx/model.onnx``, in the same run, each in fresh processes:

* time from a fresh process to its first vector (graphs already cached);
* throughput embedding the first 2,000 PyPI summaries (64 in the smoke run);
* peak RSS of that process (VmHWM);
* the memory two processes use together with the same model loaded (the
  sum of their PSS: shared file pages count half each);
* the one-off cost of the first load (building and optimising the graph).

Rounds alternate the two sources (ONNX, safetensors, ONNX, ...) so that a
noisy neighbour hits both alike; medians and the ratio safetensors/ONNX are
printed at the end.

Real run:
    pytest benches/test_safetensors.py --benchmark-enable -s -p no:cacheprovider
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

import pytest

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 7
TEXTS = 2000
SMOKE_TEXTS = 64

_PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    t0 = time.perf_counter()
    model_dir, corpus, hold = sys.argv[1:4]
    import caxton_models
    emb = caxton_models.load(model_dir, threads=2)
    emb.embed(["Hello world"])
    first = time.perf_counter() - t0
    texts = open(corpus, encoding="utf-8").read().splitlines()
    t1 = time.perf_counter()
    emb.embed(texts)
    rate = len(texts) / (time.perf_counter() - t1)
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"first_vector_s": first, "texts_per_s": rate, "peak_rss_mb": rss / 1024,
                      "graph": str(emb.graph_path)}), flush=True)
    if hold == "hold":
        sys.stdin.read()  # stay alive, model loaded, until the parent closes stdin
    """
)


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "CAXTON_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}


def _probe(model: Path, corpus: Path, cache: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model), str(corpus), "-"],
        capture_output=True, text=True, env=_env(cache), check=True, timeout=900,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Pss:")) / 1024


def _two_processes_pss(model: Path, corpus: Path, cache: Path) -> float:
    """Two processes with the model loaded at once: the sum of their PSS."""
    argv = [sys.executable, "-c", _PROBE, str(model), str(corpus), "hold"]
    procs = [
        subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(cache)
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()  # loaded and embedded
        return sum(_pss_mb(p.pid) for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.communicate()  # reaps it and closes its pipes


@pytest.fixture(scope="module")
def sources(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    st = root / "safetensors"
    shutil.copytree(minilm_dir, st, ignore=shutil.ignore_patterns("onnx", "SHA256SUMS"))
    return {"onnx": minilm_dir, "safetensors": st}


@pytest.mark.timeout(3600)  # 2 x 7 fresh processes embedding 2,000 texts each
def test_safetensors_against_onnx(
    bench_enabled: bool,
    sources: dict[str, Path],
    corpora_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("st-bench")
    n = TEXTS if bench_enabled else SMOKE_TEXTS
    rounds = ROUNDS if bench_enabled else 1
    corpus = root / "corpus.txt"
    lines = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:n]), encoding="utf-8")
    cache = root / "cache"
    first_load = {}
    for name, model in sources.items():  # builds and caches each graph once
        t0 = time.perf_counter()
        _probe(model, corpus, cache)
        first_load[name] = time.perf_counter() - t0
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    for _ in range(rounds):
        for name, model in sources.items():
            runs[name].append(_probe(model, corpus, cache))
    pss = {name: _two_processes_pss(model, corpus, cache) for name, model in sources.items()}
    report: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        report[name] = {
            key: statistics.median(r[key] for r in results)
            for key in ("first_vector_s", "texts_per_s", "peak_rss_mb")
        }
        report[name]["two_processes_pss_mb"] = pss[name]
        report[name]["first_load_s"] = first_load[name]
    ratios = {k: report["safetensors"][k] / report["onnx"][k] for k in report["onnx"]}
    print(f"\nsafetensors vs onnx, {rounds} interleaved rounds, {n} texts:")
    for key in report["onnx"]:
        print(f"  {key:<22} onnx {report['onnx'][key]:9.3f}  safetensors "
              f"{report['safetensors'][key]:9.3f}  ratio {ratios[key]:.3f}")  # fmt: skip
    assert all(r["texts_per_s"] > 0 for rs in runs.values() for r in rs)
