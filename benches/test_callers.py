"""Many concurrent callers against one big call, and the latency of a lone call.

A web service calls ``aembed([text])`` once per request. Gated:

* ``callers_vs_one_call``: 2,000 concurrent single-text ``aembed`` calls
  (first 2,000 PyPI summaries, fp32, 2 threads) against one ``embed`` of the
  same texts, interleaved rounds; texts/s ratio >= 0.9.
* ``lone_latency_p50`` / ``lone_latency_p99``: single-text ``aembed`` calls
  one at a time, against the plain path (``embed`` on the event loop's
  executor, what ``aembed`` did before it merged callers), interleaved call
  by call; ratio of the baseline's percentile to ours >= 1.0 (no worse).

Gated run: ``python -m benches.gate -k callers``. The smoke run uses 64 texts.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from benches import gating
from caxton_models.runtime.embedder import Embedder

N_TEXTS = 2000
LONE_CALLS = 300


@pytest.fixture(scope="module")
def model(minilm_dir: Path, graph_cache_dir: Path) -> Embedder:
    m = Embedder.from_dir(minilm_dir, threads=2, graph_cache_dir=graph_cache_dir)
    m.embed(["warm-up"] * 8)
    return m


@pytest.fixture(scope="module")
def texts(corpora_dir: Path, bench_enabled: bool) -> list[str]:
    lines = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    return lines[: N_TEXTS if bench_enabled else 64]


async def _many(model: Embedder, texts: list[str]) -> np.ndarray:
    rows = await asyncio.gather(*(model.aembed([t]) for t in texts))
    return np.concatenate(rows)


@pytest.mark.gate
def test_many_callers_vs_one_call(model: Embedder, texts: list[str], bench_enabled: bool) -> None:
    rounds = gating.rounds_for("callers_vs_one_call", bench_enabled)
    one = model.embed(texts)
    many = asyncio.run(_many(model, texts))
    assert many.shape == one.shape
    assert float((many * one).sum(axis=1).min()) >= 0.9999  # each caller got its own row
    times = gating.interleaved(
        {
            "one call": lambda: model.embed(texts),
            "many callers": lambda: asyncio.run(_many(model, texts)),
        },
        rounds,
    )
    ratios = gating.round_ratios(times["one call"], times["many callers"])
    rate = {k: len(texts) / statistics.median(v) for k, v in times.items()}
    gating.check(
        "callers_vs_one_call",
        statistics.median(ratios),
        enabled=bench_enabled,
        rounds=rounds,
        detail=f"{len(texts)} texts: one call {rate['one call']:.0f}/s, "
        f"{len(texts)} callers {rate['many callers']:.0f}/s; {gating.spread(ratios)}",
    )


async def _lone_latencies(model: Embedder, texts: list[str]) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()

    async def plain(t: str) -> np.ndarray:
        return await loop.run_in_executor(None, functools.partial(model.embed, [t]))

    paths = {"plain executor": plain, "aembed": lambda t: model.aembed([t])}
    lat: dict[str, list[float]] = {k: [] for k in paths}
    for i, t in enumerate(texts):
        order = list(paths.items()) if i % 2 == 0 else list(reversed(paths.items()))
        for name, fn in order:
            t0 = time.perf_counter()
            await fn(t)
            lat[name].append(time.perf_counter() - t0)
    return lat


@pytest.mark.gate
def test_lone_request_latency(model: Embedder, texts: list[str], bench_enabled: bool) -> None:
    n = LONE_CALLS if bench_enabled else 16
    sample = (texts * (n // max(len(texts), 1) + 1))[:n]
    lat = asyncio.run(_lone_latencies(model, sample))

    def pct(xs: list[float], q: int) -> float:
        return float(np.percentile(np.array(xs), q))

    detail = ", ".join(
        f"{k} p50 {pct(v, 50) * 1e3:.2f} ms p99 {pct(v, 99) * 1e3:.2f} ms" for k, v in lat.items()
    )
    for q in (50, 99):
        gating.check(
            f"lone_latency_p{q}",
            pct(lat["plain executor"], q) / pct(lat["aembed"], q),
            enabled=bench_enabled,
            rounds=n,
            detail=f"{n} calls, interleaved: {detail}",
        )
