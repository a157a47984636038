"""Where the first load of a decoder embedder goes: times of the load's
stages (widening F16/BF16 weights, building the graph, ORT optimisation and
its parity check when they run, session creation, first vector), the peak
RSS and what the graph cache holds on disk afterwards. One fresh process, one
model folder, e.g. one written by ``benches/_decoder_checkpoints.py``:

    python -m benches.profile_decoder_load <model folder> <empty graph dir>

Run it twice on the same graph dir for the cached (second) load. Prints one
JSON line; seconds, MB.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = time.perf_counter()

import caxton_models.runtime.embedder as embedder  # noqa: E402
from caxton_models.runtime.graph import _widen  # noqa: E402

STAGES: dict[str, float] = {}


def _timed(owner: Any, name: str, label: str) -> None:
    """Replaces ``owner.name`` by a wrapper adding its time to STAGES[label]."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            STAGES[label] = STAGES.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def main(model_dir: str, graph_dir: str) -> None:
    _timed(_widen.MappedTensors, "_widen", "widen_s")
    _timed(embedder, "build_from_safetensors", "build_s (incl. widen)")
    _timed(embedder, "ort_optimize", "ort_optimize_s")
    _timed(embedder.Embedder, "_graphs_agree", "parity_check_s")
    _timed(embedder, "open_session", "session_s")
    model = embedder.Embedder.from_dir(model_dir, threads=2, graph_cache_dir=graph_dir)
    t = time.perf_counter()
    model.embed(["Hello world"])
    STAGES["first_embed_s"] = time.perf_counter() - t
    STAGES["first_vector_s"] = time.perf_counter() - T0
    with open("/proc/self/status", encoding="ascii") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    STAGES["peak_rss_mb"] = hwm / 1024
    files = [p for p in Path(graph_dir).rglob("*") if p.is_file()]
    # Hard links to model.safetensors are the model's bytes, not a copy.
    own = sum(p.stat().st_size for p in files if p.stat().st_nlink == 1)
    STAGES["graph_cache_mb"] = own / 2**20
    print(json.dumps({k: round(v, 2) for k, v in STAGES.items()}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
