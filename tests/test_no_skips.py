"""Under CAXTON_NO_SKIPS=1 (CI) no skip passes for a run: not a test's, and
not a whole module's skipped while it is collected (a module-level
``pytest.importorskip``), which never reaches a test's report."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, body: str, no_skips: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_mod.py").write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k != "CAXTON_NO_SKIPS"}
    if no_skips:
        env["CAXTON_NO_SKIPS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "python")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "test_mod.py", "-q",
         "-p", "no:cacheprovider", f"--rootdir={tmp_path}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip


MODULE_SKIP = """
import pytest
pytest.importorskip("no_such_package_caxton")

def test_never_runs():
    pass
"""
TEST_SKIP = """
import pytest

def test_skips():
    pytest.skip("data not here")
"""


@pytest.mark.parametrize("body", [MODULE_SKIP, TEST_SKIP], ids=["module", "test"])
def test_a_skip_fails_under_no_skips(tmp_path: Path, body: str) -> None:
    out = run(tmp_path, body, no_skips=True)
    assert out.returncode != 0, out.stdout[-2000:]
    assert "under CAXTON_NO_SKIPS=1" in out.stdout


@pytest.mark.parametrize("body", [MODULE_SKIP, TEST_SKIP], ids=["module", "test"])
def test_a_skip_is_a_skip_elsewhere(tmp_path: Path, body: str) -> None:
    out = run(tmp_path, body, no_skips=False)
    # 5: pytest ran no test, which is what a skipped module leaves.
    assert out.returncode in (0, 5) and "skipped" in out.stdout, out.stdout[-2000:]
