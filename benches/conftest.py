"""Benchmarks share the test fixtures, and print throughput and ratios.

A benchmark takes part in the ratio table by setting ``extra_info``:
``bytes`` (or ``items``) for throughput, and ``baseline=True`` on the one run
of its group that the others are compared with. The table is printed at the
end of a ``--benchmark-enable`` run, medians only.

Tests marked ``gate`` check a ratio against ``benches/gates.toml`` (see
``benches/gating.py``); their outcomes are printed at the end, and written as
JSON to ``--gate-report PATH`` when given. The gated run:
``python -m benches.gate`` (``pytest benches -m gate --benchmark-enable``).

A gated run with benchmarks enabled fails when a selected gate test recorded
no ratio (skipped, or returned early), and, when no gate test was deselected,
when a gate of ``gates.toml`` got no ratio at all: a gate that silently
measures nothing is how a regression lands.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import (  # noqa: F401
    _isolated_env,
    corpora_dir,
    graph_cache_dir,
    minilm_dir,
    pytest_make_collect_report,
    pytest_runtest_makereport,
    reference_dir,
    shared_dir,
)
from tests.support.hubfaults import MINILM_COMMIT, MINILM_REPO_ID

from benches._servers import caxton_serve


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gate-report", default=None, help="write the regression gates' outcomes (JSON) here"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gate: checks a ratio against its threshold in benches/gates.toml"
    )


_GATE_ITEMS: list[str] = []  # node ids of the selected gate tests
_GATE_DESELECTED: list[str] = []
_GATE_RESULTS: dict[str, int] = {}  # node id -> ratios it recorded


def _is_gate(item: Any) -> bool:
    return item.get_closest_marker("gate") is not None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _GATE_ITEMS[:] = [i.nodeid for i in items if _is_gate(i)]


def pytest_deselected(items: list[pytest.Item]) -> None:
    _GATE_DESELECTED.extend(i.nodeid for i in items if _is_gate(i))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    """A gate under its floor fails its test once the test has run to the end,
    so that a test measuring several gates records every one of them (the
    first failure used to leave the others unmeasured)."""
    from benches import gating

    before = len(gating.OUTCOMES)
    outcome = yield
    failed = gating.failures(gating.OUTCOMES[before:])
    if failed and outcome.excinfo is None:
        outcome.force_exception(pytest.fail.Exception("\n".join(failed), pytrace=False))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    from benches import gating

    before = len(gating.OUTCOMES)
    yield
    if _is_gate(item):
        _GATE_RESULTS[item.nodeid] = len(gating.OUTCOMES) - before


def _missing_gates() -> list[str]:
    """What a gated run should have measured and did not."""
    from benches import gating

    missing = [f"{n}: recorded no gate ratio" for n in _GATE_ITEMS if not _GATE_RESULTS.get(n)]
    if _GATE_ITEMS and not _GATE_DESELECTED:
        measured = {o.gate for o in gating.OUTCOMES}
        missing += [
            f"[{name}] in gates.toml: no bench measured it"
            for name in gating.GATES
            if name not in measured
        ]
    return missing


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cfg = session.config
    enabled = bool(cfg.getoption("benchmark_enable") or not cfg.getoption("benchmark_disable"))
    missing = _missing_gates() if enabled else []
    if missing:
        print("\ncaxton regression gates with no result (a gate must measure something):")
        for line in missing:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


@pytest.fixture(scope="module")
def repos(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The model in the Hub's layout under <repos>/<owner>/<name>/ (hard links, else copies)."""
    root = tmp_path_factory.mktemp("repos")
    dest = root / MINILM_REPO_ID
    for src in minilm_dir.rglob("*"):
        if src.is_file() and src.name != "SHA256SUMS":
            out = dest / src.relative_to(minilm_dir)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, out)
            except OSError:
                shutil.copyfile(src, out)
    (dest / ".caxton_metadata").write_text(f'{{"commit": "{MINILM_COMMIT}"}}')
    return root


@pytest.fixture(scope="module")
def hub_url(repos: Path) -> Iterator[str]:
    """``caxton model serve --repos``: a Hub on 127.0.0.1 holding the real MiniLM (its
    base URL). B of ``test_serve.py``, the Hub of ``test_acquire.py``."""
    with caxton_serve(["--repos", str(repos)]) as url:
        yield url
