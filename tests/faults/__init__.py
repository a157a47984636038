"""The fault matrix: every row of RELIABILITY.md as a scenario (see MATRIX.md).

``python -m tests.faults --reps N`` reruns it and prints the figures;
``tests/faults/test_matrix.py`` runs one cheap repetition under pytest.
"""

from __future__ import annotations

from tests.faults.harness import SCENARIOS, Scenario


def load_scenarios() -> dict[str, Scenario]:
    """Import every scenario module (each registers its scenarios)."""
    from tests.faults import (  # noqa: F401
        scenarios_fs,
        scenarios_life,
        scenarios_net,
        scenarios_proc,
    )

    return dict(SCENARIOS)
