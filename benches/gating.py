"""Regression gates: ratios against a baseline measured in the same run.

A gate is a ratio where higher is better (baseline time / our time, baseline
RSS / our RSS, ...), never an absolute time: the machine is shared and its
speed varies, but both sides of a ratio see the same machine. Each side is
measured over ``rounds`` interleaved rounds (the order alternates every round,
so a burst of load lands on both sides) and the gate takes the median of the
per-round ratios. Three rounds are too few: on a shared 2-core machine a
1 GiB download against curl gave a median of 0.87x over 8 interleaved pairs
while a median of 3 back-to-back rounds said 1.36x.

``benches/gates.toml`` holds, per gate, the ``threshold`` the ratio must
reach, the ``tolerance`` (a fraction of the threshold) allowed for noise, and
the number of ``rounds``. A ratio below ``threshold * (1 - tolerance)`` fails
the bench. In the smoke run (benchmarks disabled, tiny inputs) ratios are
recorded and printed but never fail: they measure nothing real.

Environment knobs, to prove a gate bites: ``CAXTON_GATE_ROUNDS`` overrides
every gate's rounds; ``CAXTON_BENCH_CONNECTIONS`` caps our download's
connections (``=1`` is a deliberately slowed build).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

GATES_FILE = Path(__file__).with_name("gates.toml")


@dataclass(frozen=True)
class Gate:
    name: str
    threshold: float
    tolerance: float
    rounds: int
    what: str

    @property
    def floor(self) -> float:
        return self.threshold * (1.0 - self.tolerance)


@dataclass
class Outcome:
    gate: str
    ratio: float
    threshold: float
    floor: float
    rounds: int
    passed: bool
    enforced: bool
    detail: str


def load_gates(path: Path = GATES_FILE) -> dict[str, Gate]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    gates = {}
    for name, g in data.items():
        if not isinstance(g, dict):
            raise ValueError(f"{path}: [{name}] must be a table")
        unknown = set(g) - {"threshold", "tolerance", "rounds", "what"}
        if unknown or "threshold" not in g:
            raise ValueError(
                f"{path}: [{name}] needs threshold (and may set tolerance, rounds, what); "
                f"unknown keys: {sorted(unknown)}"
            )
        tol = float(g.get("tolerance", 0.05))
        if not 0.0 <= tol < 1.0:
            raise ValueError(f"{path}: [{name}] tolerance must be in [0, 1), got {tol}")
        gates[name] = Gate(
            name, float(g["threshold"]), tol, int(g.get("rounds", 7)), str(g.get("what", ""))
        )
    return gates


GATES = load_gates()
OUTCOMES: list[Outcome] = []


def rounds_for(name: str, enabled: bool) -> int:
    """Rounds to measure for gate ``name``: 1 in the smoke run."""
    if not enabled:
        return 1
    env = os.environ.get("CAXTON_GATE_ROUNDS")
    return max(1, int(env)) if env else GATES[name].rounds


def interleaved(
    contenders: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    after: Callable[[str], object] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of each contender per round, the order reversed every
    other round, so that each round's pair ran back to back. ``after(name)``
    runs, untimed, after each contender's run (checking what it made, removing it)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    items = list(contenders.items())
    for r in range(rounds):
        for name, fn in items if r % 2 == 0 else reversed(items):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            if after is not None:
                after(name)
    return times


def round_ratios(baseline: list[float], ours: list[float]) -> list[float]:
    """Per-round baseline/ours: > 1 means ours took less."""
    return sorted(b / o for b, o in zip(baseline, ours, strict=True))


def spread(ratios: list[float]) -> str:
    ratios = sorted(ratios)
    if len(ratios) < 2:
        return f"1 round: {ratios[0]:.3f}x"
    q = statistics.quantiles(ratios, n=4)
    return (
        f"{len(ratios)} rounds: median {statistics.median(ratios):.3f}x "
        f"(q25 {q[0]:.3f}, q75 {q[2]:.3f}, min {ratios[0]:.3f}, max {ratios[-1]:.3f})"
    )


def check(name: str, ratio: float, *, enabled: bool, rounds: int, detail: str = "") -> None:
    """Records gate ``name``'s ratio. One under its floor in a real (benchmarks
    enabled) run fails the test when the test ends (``benches/conftest.py``),
    not here: a test that measures several gates records them all first."""
    gate = GATES[name]
    passed = ratio >= gate.floor
    OUTCOMES.append(
        Outcome(name, ratio, gate.threshold, gate.floor, rounds, passed, enabled, detail)
    )
    print(f"\n[gate] {name}: {ratio:.3f}x (threshold {gate.threshold}, floor {gate.floor:.3f}) "
          f"{'ok' if passed else 'BELOW'} -- {detail}")  # fmt: skip
    assert ratio > 0, f"gate {name}: a ratio must be positive, got {ratio}"


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    """Why each enforced gate of ``outcomes`` under its floor failed."""
    return [
        f"regression gate {o.gate!r} failed: {o.ratio:.3f}x is below the floor {o.floor:.3f} "
        f"(threshold {o.threshold} minus {GATES[o.gate].tolerance:.0%} tolerance; "
        f"{GATES[o.gate].what}). {o.detail}. If the slowdown is intended, lower the "
        f"threshold in {GATES_FILE.name} in the same change and say why."
        for o in outcomes
        if o.enforced and not o.passed
    ]


def check_time_ratios(
    times: Mapping[str, list[float]],
    gates: Sequence[tuple[str, str, str]],
    *,
    enabled: bool,
    rounds: int,
    describe: Callable[[str, str, list[float]], str],
) -> None:
    """``check`` for each (gate, baseline, ours) of ``gates`` over the
    per-round times of an :func:`interleaved` run; ``describe(base, ours,
    ratios)`` gives each gate's detail line."""
    for gate, base, ours in gates:
        ratios = round_ratios(times[base], times[ours])
        check(
            gate,
            statistics.median(ratios),
            enabled=enabled,
            rounds=rounds,
            detail=describe(base, ours, ratios),
        )


def summary_lines() -> list[str]:
    lines = []
    for o in OUTCOMES:
        status = ("PASS" if o.passed else "FAIL") if o.enforced else "smoke"
        lines.append(
            f"  {status:<5} {o.gate:<32} {o.ratio:8.3f}x  floor {o.floor:6.3f}  "
            f"({o.rounds} rounds) {o.detail}"
        )
    return lines


def write_report(path: str) -> None:
    Path(path).write_text(json.dumps([asdict(o) for o in OUTCOMES], indent=2) + "\n")
