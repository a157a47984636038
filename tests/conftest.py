"""Shared fixtures.

Real model data (``../shared/models``, ``../shared/corpora``) is found through
``CAXTON_TEST_DATA`` (default: ``../shared`` beside the repository). Tests that
need it skip with a clear reason where it is absent, except when
``CAXTON_REQUIRE_DATA=1`` (set by ``.ci/run``), where its absence is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.data import require as _require
from tests.support.ray_local import LOOPBACK_ENV

# Fixtures shared by several test modules live in tests/support, one definition each.
pytest_plugins = ["tests.support.fixtures"]

# Before anything imports Ray, which reads it once: a local Ray cluster stays on
# 127.0.0.1 (tests/support/ray_local.py says why the address alone does not).
for _key, _value in LOOPBACK_ENV.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parent.parent


def _shared_dir() -> Path:
    env = os.environ.get("CAXTON_TEST_DATA")
    # Absolute, so symlinks made from it (benches) point somewhere from anywhere.
    return (Path(env) if env else REPO.parent / "shared").absolute()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(_shared_dir(), "shared test data")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 files at revision 1110a243..., in the Hub's layout."""
    return _require(_shared_dir() / "models" / "all-MiniLM-L6-v2", "all-MiniLM-L6-v2 files")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(_shared_dir() / "models" / "reference", "reference embeddings")


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    return _require(_shared_dir() / "corpora", "text corpora")


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test may touch the user's real cache or config, or reach the real Hub."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: never the real Hub
    for var in (
        "CAXTON_CONFIG",
        "CAXTON_CACHE_DIR",
        "CAXTON_OFFLINE",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",  # the Hugging Face cache: under XDG_CACHE_HOME, empty
        "HF_HOME",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under CAXTON_NO_SKIPS=1 (CI) a skipped test is a failed one."""
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("CAXTON_NO_SKIPS") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CAXTON_NO_SKIPS=1 (CI must run every test): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """The same for a module that skips while it is collected (a module-level
    ``pytest.importorskip``): that skip never reaches a test's report."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CAXTON_NO_SKIPS") == "1" and report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"module skipped under CAXTON_NO_SKIPS=1 (CI must run it): {reason}"


@pytest.fixture(scope="session")
def graph_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One place per test session for fused/quantized ONNX graphs, so the
    one-off graph optimisation runs once, never in the user's cache."""
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(autouse=True)
def _fresh_loaded_models() -> Iterator[None]:
    """Each test starts with no model loaded by ``caxton_models.load`` (the
    loaded-model manager is process-wide)."""
    import caxton_models._load as loading

    loading.reset()
    yield
    loading.reset()


@pytest.fixture(scope="session")
def architectures_dir() -> Path:
    """Tiny transformers models and sentence-transformers folders with the outputs
    transformers and sentence-transformers computed (fixtures/architectures)."""
    return _require(_shared_dir() / "fixtures" / "architectures", "architecture fixtures")


@pytest.fixture(scope="session")
def mpnet_dir() -> Path:
    """The real all-mpnet-base-v2 (safetensors only), fetched by
    ``../shared/scripts/fetch-all-mpnet-base-v2 DIR``; ``.ci/run`` sets
    CAXTON_MPNET_DIR to where it fetched it."""
    env = os.environ.get("CAXTON_MPNET_DIR")
    path = Path(env) if env else REPO.parent / "all-mpnet-base-v2"
    return _require(path / "model.safetensors", "all-mpnet-base-v2 (CAXTON_MPNET_DIR)").parent
