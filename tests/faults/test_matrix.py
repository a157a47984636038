"""One cheap repetition of every fault-matrix scenario (the reps command,
``python -m tests.faults --reps N``, runs the full variants), and a check
that MATRIX.md accounts for every RELIABILITY row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.faults import load_scenarios
from tests.faults.harness import run_one

SCENARIOS = load_scenarios()
MATRIX = Path(__file__).with_name("MATRIX.md")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_keeps_every_invariant(name: str, tmp_path: Path) -> None:
    fig = run_one(SCENARIOS[name], tmp_path, cheap=True)
    assert fig.clean, "\n".join(fig.notes)


def test_matrix_lists_every_row_once_and_real_scenarios() -> None:
    text = MATRIX.read_text()
    rows = [int(m) for m in re.findall(r"^\| (\d+) \|", text, re.M)]
    assert sorted(rows) == list(range(1, 53))
    named = set(re.findall(r"`scenario:([a-z0-9-]+)`", text))
    assert named <= set(SCENARIOS), named - set(SCENARIOS)
    assert set(SCENARIOS) <= named, set(SCENARIOS) - named
    for test in re.findall(r"`(tests/[\w/]+\.py)::(\w+)", text):
        path = Path(__file__).resolve().parents[2] / test[0]
        assert f"def {test[1]}(" in path.read_text(), test
