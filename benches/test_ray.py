"""Ray Data on this machine against single-process ``embed``: what Ray costs.

One Ray job embeds the PyPI summaries with ``map_batches(Embed,
concurrency=N, num_cpus=2/N, batch_size=B)``; the baseline is
``caxton_models.load(folder, threads=2).embed(texts)`` in this process, loaded
once. Both use the real MiniLM (fp32) and the same graph cache. Contenders:
the baseline and Ray with concurrency 1 (one actor, 2 threads) and 2 (two
actors, 1 thread each), each with batches of 256 and 2,048 texts, measured in
interleaved rounds (the order reversed every other round).

A Ray round is a whole job: the texts put into the object store as blocks,
a fresh actor pool (worker processes, imports, the model loaded per actor),
the batches through the actors and every vector back in this process. It is
split in two: time to the first batch back (the per-job startup) and the
texts/s after it (steady state). Starting Ray itself (``ray.init``: GCS,
raylet, worker pool) is paid once per session and printed on its own.

Ray runs in-process (``ray.init(num_cpus=2)``: the driver starts and ends
its own GCS and raylet) rather than ``ray start --head``: the same processes
and scheduling on one machine, with nothing to connect and nothing left
behind on a failure; ``tests/test_ray.py`` covers the ``ray start`` cluster.
Like that test, no token is written (``RAY_AUTH_MODE=disabled``), usage
stats are off, the session folder is a fresh one under /tmp, and any process
of ours still alive after ``ray.shutdown()`` is ended by pid (never ``ray
stop --force``, which would end other people's clusters).

Gated (``ray_data_vs_single_process`` in gates.toml): the whole-job ratio of
the recommended configuration (``GATED``) must stay >= 0.5x single process.

Real run (all 10,000 texts, 5 rounds; 20 minutes on 2 shared cores at load 6-14):
    pytest benches/test_ray.py --benchmark-enable -s -p no:cacheprovider
The smoke run (benchmarks disabled) embeds 64 texts once with the baseline,
the gated configuration and concurrency 2 (about 35 s, most of it Ray's startup).
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benches import gating

ray = pytest.importorskip("ray", reason="ray[data] comes with the test extra")
pa = pytest.importorskip("pyarrow", reason="pyarrow comes with the test extra (ray[data])")

from tests.support.ray_local import assert_loopback_only, end_leftovers  # noqa: E402

from caxton_models.ray import Embed  # noqa: E402

CPUS = 2
SMOKE_TEXTS = 64
BLOCK_ROWS = 256  # rows per input block, as a reader of many small files would make
# (concurrency, batch_size); GATED is the best of them on 2 cores (README, "Ray").
CONFIGS = [(1, 256), (1, 2048), (2, 256), (2, 2048)]
GATED = (1, 2048)
BASELINE = "single process"


def _name(concurrency: int, batch_size: int) -> str:
    return f"ray c={concurrency} b={batch_size}"


@contextlib.contextmanager
def _ray_session() -> Iterator[float]:
    """``ray.init`` on this machine, isolated as the test fixtures isolate us;
    yields the seconds ``ray.init`` took."""
    root = Path(tempfile.mkdtemp(prefix="cxb-", dir="/tmp"))  # short: Ray's socket paths
    with pytest.MonkeyPatch.context() as mp:
        # Ray's processes inherit this environment: no real cache, config or Hub,
        # no token, no usage stats; CAXTON_RAY_BENCH marks them as ours.
        for var, value in {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "XDG_CACHE_HOME": str(root / "cache"),
            "XDG_CONFIG_HOME": str(root / "config"),
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "CAXTON_RAY_BENCH": str(root),
        }.items():
            mp.setenv(var, value)
        for var in ("CAXTON_CONFIG", "CAXTON_CACHE_DIR", "HF_TOKEN", "RAY_ADDRESS"):
            mp.delenv(var, raising=False)
        t0 = time.perf_counter()
        try:
            ray.init(
                num_cpus=CPUS,
                _node_ip_address="127.0.0.1",  # loopback only: never the machine's address
                object_store_memory=200_000_000,
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=str(root / "ray"),
            )
            elapsed = time.perf_counter() - t0
            assert_loopback_only(ray, str(root))
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            yield elapsed
        finally:
            ray.shutdown()
            end_leftovers(str(root))
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class _RayRun:
    """One Ray contender; each call is one whole job over ``texts``."""

    concurrency: int
    batch_size: int
    texts: list[str]
    graphs: Path
    model: str
    first_s: list[float] = field(default_factory=list)
    steady_rate: list[float] = field(default_factory=list)
    out: np.ndarray | None = None

    def __call__(self) -> None:
        n = len(self.texts)
        rows = min(BLOCK_ROWS, max(1, n // 8))
        table = pa.table({"id": np.arange(n), "text": self.texts})
        t0 = time.perf_counter()
        ds = ray.data.from_arrow([table.slice(s, rows) for s in range(0, n, rows)])
        ds = ds.map_batches(
            Embed,
            fn_constructor_kwargs={
                "model": self.model,
                "graph_cache_dir": str(self.graphs),
            },
            concurrency=self.concurrency,
            num_cpus=CPUS / self.concurrency,
            batch_size=self.batch_size,
            batch_format="pyarrow",
        )
        parts: list[Any] = []
        first = 0.0
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if not parts:
                first = time.perf_counter()
            parts.append(batch)
        end = time.perf_counter()
        got = pa.concat_tables(parts).combine_chunks()
        first_rows = parts[0].num_rows
        self.first_s.append(first - t0)
        if n > first_rows and end > first:
            self.steady_rate.append((n - first_rows) / (end - first))
        ids = np.asarray(got.column("id"))
        vecs = np.asarray(got.column("embedding").combine_chunks().flatten()).reshape(n, -1)
        out = np.empty_like(vecs)
        out[ids] = vecs  # Ray Data may hand blocks back out of order
        self.out = out


@pytest.fixture(scope="module")
def texts(corpora_dir: Path, bench_enabled: bool) -> list[str]:
    lines = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    return lines if bench_enabled else lines[:SMOKE_TEXTS]


def _table(
    times: dict[str, list[float]], runs: dict[str, _RayRun], n: int, init_s: float
) -> list[str]:
    base = statistics.median(times[BASELINE])
    lines = [
        f"Ray Data vs single-process embed, {n} PyPI summaries, {CPUS} CPUs, "
        f"{len(times[BASELINE])} interleaved rounds (medians); ray.init {init_s:.2f} s",
        f"  {'contender':<22} {'texts/s':>9} {'ratio':>7} {'first batch s':>14} "
        f"{'steady texts/s':>15} {'steady ratio':>13}",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        row = f"  {name:<22} {n / med:9.1f} {base / med:6.3f}x"
        run = runs.get(name)
        if run is not None:
            row += f" {statistics.median(run.first_s):14.2f}"
            if run.steady_rate:  # none when the first batch held every text
                steady = statistics.median(run.steady_rate)
                row += f" {steady:15.1f} {steady / (n / base):12.3f}x"
        lines.append(row)
    return lines


@pytest.mark.gate
@pytest.mark.timeout(1800)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_data_vs_single_process(
    texts: list[str], minilm_dir: Path, graph_cache_dir: Path, bench_enabled: bool
) -> None:
    import caxton_models

    model = caxton_models.load(str(minilm_dir), threads=CPUS, graph_cache_dir=graph_cache_dir)
    model.embed(texts[:8])  # warm-up; also builds the optimised graph the actors will reuse
    rounds = gating.rounds_for("ray_data_vs_single_process", bench_enabled)
    with _ray_session() as init_s:
        # The smoke run only proves both actor layouts work: each job costs seconds.
        configs = CONFIGS if bench_enabled else [GATED, (2, 256)]
        runs = {
            _name(c, b): _RayRun(c, b, texts, graph_cache_dir, str(minilm_dir)) for c, b in configs
        }
        contenders: dict[str, Callable[[], object]] = {BASELINE: lambda: model.embed(texts)}
        contenders.update(runs)
        times = gating.interleaved(contenders, rounds)
    expected = model.embed(texts)
    for name, run in runs.items():
        assert run.out is not None and run.out.shape == expected.shape, name
        cos = (run.out * expected).sum(axis=1)
        assert cos.min() >= 0.9999, f"{name}: min cosine {cos.min()}"
    lines = _table(times, runs, len(texts), init_s)
    print("\n" + "\n".join(lines))
    gated = _name(*GATED)
    ratios = gating.round_ratios(times[BASELINE], times[gated])
    best = max(runs, key=lambda k: statistics.median(times[BASELINE]) / statistics.median(times[k]))
    gating.check(
        "ray_data_vs_single_process",
        statistics.median(ratios),
        enabled=bench_enabled,
        rounds=rounds,
        detail=f"{gated}, {len(texts)} texts, whole job; best {best}; {gating.spread(ratios)}",
    )
