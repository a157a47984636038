"""The spec's runtime check of a model folder: it loads, embeds "Hello
world", has the dimensions the registry says, and what that cost."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ModelValidation", "check_runtime", "rss_bytes"]


def rss_bytes() -> int:
    """Resident memory of this process (Linux: /proc; elsewhere peak RSS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class ModelValidation:
    """The spec's runtime ModelValidation."""

    can_load: bool
    embedding_dimensions: int | None = None
    test_embedding: list[float] | None = None
    load_time_ms: float = 0.0
    memory_usage_mb: float = 0.0
    error_message: str | None = None


def check_runtime(
    load: Callable[[], Any], expected_dimensions: int | None = None
) -> ModelValidation:
    """Calls ``load`` (a model with ``embed``), embeds "Hello world", checks the
    dimensions, and measures load time and the resident memory the load added.
    Never raises for a broken model: the failure is in ``error_message``. The
    loader is passed in, so this module imports no embedder."""
    before = rss_bytes()
    t0 = time.perf_counter()
    try:
        emb = load()
        load_ms = (time.perf_counter() - t0) * 1000.0
        vec = emb.embed(["Hello world"])[0]
    except Exception as e:
        return ModelValidation(
            can_load=False,
            load_time_ms=(time.perf_counter() - t0) * 1000.0,
            error_message=f"{type(e).__name__}: {e}",
        )
    mem_mb = max(0, rss_bytes() - before) / 2**20
    error = None
    if expected_dimensions is not None and vec.shape[0] != expected_dimensions:
        error = f"embedding has {vec.shape[0]} dimensions, the registry says {expected_dimensions}"
    elif not np.all(np.isfinite(vec)):
        error = "the test embedding contains NaN or infinity"
    return ModelValidation(
        can_load=error is None,
        embedding_dimensions=int(vec.shape[0]),
        test_embedding=[float(x) for x in vec],
        load_time_ms=load_ms,
        memory_usage_mb=mem_mb,
        error_message=error,
    )
