"""Benchmarks share the test fixtures, and print throughput and ratios.

A benchmark takes part in the ratio table by setting ``extra_info``:
``bytes`` (or ``items``) for throughput, and ``baseline=True`` on the one run
of its group that the others are compared with. The table is printed at the
end of a ``--benchmark-enable`` run, medians only.

Tests marked ``gate`` check a ratio against ``benches/gates.toml`` (see
``benches/gating.py``); their outcomes are printed at the end, and written as
JSON to ``--gate-report PATH`` when given. The gated run:
``python -m benches.gate`` (``pytest benches -m gate --benchmark-enable``).
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import (  # noqa: F401
    _isolated_env,
    corpora_dir,
    graph_cache_dir,
    minilm_dir,
    pytest_runtest_makereport,
    reference_dir,
    shared_dir,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gate-report", default=None, help="write the regression gates' outcomes (JSON) here"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gate: checks a ratio against its threshold in benches/gates.toml"
    )


@pytest.fixture(scope="session")
def bench_enabled(request: pytest.FixtureRequest) -> bool:
    """False in the smoke run (``--benchmark-disable``): use small inputs then."""
    cfg = request.config
    return bool(cfg.getoption("benchmark_enable") or not cfg.getoption("benchmark_disable"))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from benches import gating

    if gating.OUTCOMES:
        terminalreporter.section("caxton regression gates (ratio vs same-run baseline)")
        for line in gating.summary_lines():
            terminalreporter.write_line(line)
    if config.getoption("gate_report"):
        gating.write_report(config.getoption("gate_report"))
    session = getattr(config, "_benchmarksession", None)
    benches = list(getattr(session, "benchmarks", []) or [])
    if not benches:
        return
    groups: dict[str, list[Any]] = {}
    for b in benches:
        groups.setdefault(b.group or b.name, []).append(b)
    tr = terminalreporter
    tr.section("caxton ratios (median times, same run)")
    for group, members in groups.items():
        # A benchmark that failed before it was timed has no data: leave it out.
        members = [b for b in members if b.stats and b.stats.data]
        if not members:
            continue
        base = next((b for b in members if b.extra_info.get("baseline")), None)
        tr.write_line(f"[{group}]")
        for b in members:
            median = b.stats.median
            parts = [f"  {b.name:<60} {median * 1e3:10.2f} ms"]
            if "bytes" in b.extra_info:
                parts.append(f"{b.extra_info['bytes'] / median / 1e9:7.3f} GB/s")
            if "items" in b.extra_info:
                parts.append(f"{b.extra_info['items'] / median:9.1f} items/s")
            if base is not None and b is not base:
                parts.append(
                    f"ratio vs {base.name.split('[')[-1].rstrip(']')}: "
                    f"{base.stats.median / median:.3f}x"
                )
            tr.write_line("  ".join(parts))
