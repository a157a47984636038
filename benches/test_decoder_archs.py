"""Decoder embedders at their real sizes, random weights: ours against
sentence-transformers on torch, same texts, same threads.

For Qwen3-Embedding-0.6B (BF16 checkpoint, last-token pooling) and
EmbeddingGemma-300m (F32, mean pooling, two Dense layers), written as
sentence-transformers folders by ``benches/_decoder_checkpoints.py``:

* ``test_build_peak_rss``: peak RSS of a fresh process building the graph
  from ``model.safetensors`` (``build_from_safetensors``, what ``load()``
  does first), against the model's float32 weights: it must stay below 2x.
* ``test_against_torch``: fresh processes, each reporting the time to its
  first vector, texts/s over the corpus and peak RSS (VmHWM): ours with the
  graph still to build (cold) and already cached (warm), and
  sentence-transformers (torch, float32) when its environment exists
  (``benches/make_torch_env.sh`` creates it, ~5 GB); the ratios print.

Real run (one round each; minutes on 2 cores):
    benches/make_torch_env.sh   # once
    pytest benches/test_decoder_archs.py --benchmark-enable -s -p no:cacheprovider
The smoke run (benchmarks disabled) uses toy sizes of the same families and
never needs torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from benches._decoder_checkpoints import MODELS, write_model

THREADS = 2
TEXTS_FULL, TEXTS_SMOKE = 64, 8
REPO = Path(__file__).resolve().parent.parent
#: Resolved at import, before the test fixtures point XDG_CACHE_HOME elsewhere.
TORCH_VENV = Path(
    os.environ.get("CAXTON_TORCH_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "caxton-bench-torch"
)
TORCH_PYTHON = TORCH_VENV / "bin" / "python"

_PEAK = "next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024"

_BUILD = textwrap.dedent(
    f"""
    import json, sys, time
    from pathlib import Path
    from caxton_models.runtime._optimize import build_from_safetensors
    t0 = time.perf_counter()
    build_from_safetensors(Path(sys.argv[1]), Path(sys.argv[2]))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent.
    print(json.dumps({{"build_s": time.perf_counter() - t0, "peak_rss_mb": {_PEAK}}}))
    """
)

_EMBED = textwrap.dedent(
    f"""
    import json, sys, time
    t0 = time.perf_counter()
    impl, model_dir, cache, corpus, threads = sys.argv[1:6]
    if impl == "torch":
        import torch
        from sentence_transformers import SentenceTransformer
        torch.set_num_threads(int(threads))
        m = SentenceTransformer(model_dir, device="cpu", model_kwargs={{"dtype": torch.float32}})
        run = lambda t: m.encode(t, batch_size=32)
    else:
        from caxton_models.runtime.embedder import Embedder
        m = Embedder.from_dir(model_dir, threads=int(threads), graph_cache_dir=cache)
        run = lambda t: m.embed(t)
    first_vector = run(["Hello world"])[0]
    first = time.perf_counter() - t0
    texts = open(corpus, encoding="utf-8").read().splitlines()
    t1 = time.perf_counter()
    run(texts)
    rate = len(texts) / (time.perf_counter() - t1)
    print(json.dumps({{"first_vector_s": first, "texts_per_s": rate, "peak_rss_mb": {_PEAK},
                      "first_values": [float(v) for v in first_vector[:4]]}}))
    """
)


def _run(python: Path | str, script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "python")}
    out = subprocess.run(
        [str(python), "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if out.returncode:
        raise AssertionError(f"{python} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _torch_missing() -> str | None:
    if not (TORCH_VENV / ".caxton-ready").is_file():
        return f"no finished torch environment at {TORCH_VENV}: run benches/make_torch_env.sh"
    return None


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, bench_enabled: bool
) -> dict[str, tuple[Path, int]]:
    """name -> (sentence-transformers folder, parameter count)."""
    root = tmp_path_factory.mktemp("decoders")
    return {
        name: (root / name, write_model(root / name, name, bench_enabled, minilm_dir))
        for name in MODELS
    }


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, corpora_dir: Path, bench_enabled: bool
) -> Path:
    texts = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("corpus") / "texts.txt"
    path.write_text("\n".join(texts[: TEXTS_FULL if bench_enabled else TEXTS_SMOKE]))
    return path


@pytest.mark.timeout(1800)  # real sizes on 2 shared cores: minutes
@pytest.mark.parametrize("name", list(MODELS))
def test_build_peak_rss(
    models: dict[str, tuple[Path, int]], tmp_path: Path, bench_enabled: bool, name: str
) -> None:
    """Building the graph holds one widened tensor at a time: peak RSS stays
    below twice the float32 weights (the BF16 file is mapped, not copied)."""
    folder, params = models[name]
    result = _run(
        sys.executable, _BUILD, str(folder / "model.safetensors"), str(tmp_path / "g.onnx")
    )
    fp32_mb = params * 4 / 2**20
    print(
        f"\n{name}: build {result['build_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
        f"= {result['peak_rss_mb'] / fp32_mb:.2f}x its float32 weights ({fp32_mb:.0f} MB)"
    )
    if bench_enabled:  # toy sizes are all interpreter
        assert result["peak_rss_mb"] < 2 * fp32_mb


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", list(MODELS))
def test_against_torch(
    models: dict[str, tuple[Path, int]],
    corpus: Path,
    tmp_path: Path,
    bench_enabled: bool,
    name: str,
) -> None:
    missing = _torch_missing()
    if missing and bench_enabled:
        pytest.skip(missing)
    folder, _ = models[name]
    cache = tmp_path / "graphs"
    common = (str(folder), str(cache), str(corpus), str(THREADS))
    cold = _run(sys.executable, _EMBED, "ours", *common)
    print(f"\n{name} ours, graph built: {json.dumps(cold)}")
    assert cold["texts_per_s"] > 0
    if missing:  # the smoke run: one process of ours shows the path works
        print(f"{name}: torch side not run ({missing})")
        return
    warm = _run(sys.executable, _EMBED, "ours", *common)
    print(f"{name} ours, graph cached: {json.dumps(warm)}")
    torch = _run(TORCH_PYTHON, _EMBED, "torch", *common)
    print(f"{name} sentence-transformers (torch): {json.dumps(torch)}")
    print(
        f"{name} ours/torch: texts/s x{warm['texts_per_s'] / torch['texts_per_s']:.2f}, "
        f"first vector (cached) x{torch['first_vector_s'] / warm['first_vector_s']:.2f} "
        f"(built x{torch['first_vector_s'] / cold['first_vector_s']:.2f}) faster, "
        f"peak RSS x{warm['peak_rss_mb'] / torch['peak_rss_mb']:.2f} "
        f"(built x{cold['peak_rss_mb'] / torch['peak_rss_mb']:.2f})"
    )
