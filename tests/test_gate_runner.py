"""The gated run (``python -m benches.gate``) fails when a gate measured
nothing: a skipped baseline or an early return must not pass as a green gate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_gated(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_gated.py"
    test.write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k != "CAXTON_NO_SKIPS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "python")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "benches.conftest", str(test), "-m", "gate",
         "--benchmark-enable", "-p", "no:cacheprovider", "-q", f"--rootdir={tmp_path}", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip


def test_a_gate_that_skips_fails_the_gated_run(tmp_path: Path) -> None:
    out = run_gated(
        tmp_path,
        """
        import pytest

        @pytest.mark.gate
        def test_skips():
            pytest.skip("the baseline package is missing")
        """,
    )
    assert out.returncode == 1, out.stdout[-2000:]
    assert "test_skips: recorded no gate ratio" in out.stdout


GATED_PAIR = """
import pytest
from benches import gating

@pytest.mark.gate
def test_measures():
    gating.check("sha256_vs_hashlib", 1.0, enabled=True, rounds=1)

@pytest.mark.gate
def test_other():
    gating.check("blake3_vs_package", 1.0, enabled=True, rounds=1)
"""


def test_a_full_run_must_measure_every_gate_of_gates_toml(tmp_path: Path) -> None:
    out = run_gated(tmp_path, GATED_PAIR)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "[first_vector_vs_fastembed] in gates.toml: no bench measured it" in out.stdout
    assert "[sha256_vs_hashlib]" not in out.stdout.split("no result")[-1]


def test_a_selected_gate_that_measures_passes(tmp_path: Path) -> None:
    out = run_gated(tmp_path, GATED_PAIR, "-k", "measures")
    assert out.returncode == 0, out.stdout[-2000:]
    assert "no result" not in out.stdout


def test_a_failed_gate_does_not_stop_the_gates_after_it(tmp_path: Path) -> None:
    """A test that measures two gates records both, then fails: the cold
    pull-through bench used to stop at its first gate, and its second one showed
    up only as "no bench measured it"."""
    out = run_gated(
        tmp_path,
        """
        import pytest
        from benches import gating

        @pytest.mark.gate
        def test_two():
            gating.check("sha256_vs_hashlib", 0.5, enabled=True, rounds=1, detail="slow")
            gating.check("blake3_vs_package", 1.0, enabled=True, rounds=1)
        """,
        "-k",
        "two",
    )
    assert out.returncode == 1, out.stdout[-2000:]
    assert "FAIL  sha256_vs_hashlib" in out.stdout
    assert "PASS  blake3_vs_package" in out.stdout
    assert "regression gate 'sha256_vs_hashlib' failed: 0.500x is below the floor" in out.stdout
    assert "1 failed" in out.stdout
