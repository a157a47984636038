"""Rerun the fault matrix with repetitions and print its figures.

    python -m tests.faults --reps 20            # every scenario, full variants
    python -m tests.faults --reps 1 --cheap     # what the test command runs
    python -m tests.faults --only kill-sweep    # one scenario (repeatable)

Exit status 0 only when every figure that must be 0 is 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.faults import load_scenarios
from tests.faults.harness import Figures, run_one


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    ap.add_argument("--reps", type=int, default=1, help="repetitions of each scenario")
    ap.add_argument("--cheap", action="store_true", help="the test command's cheap variants")
    ap.add_argument("--only", action="append", default=[], help="run only these scenarios")
    args = ap.parse_args(argv)
    scenarios = load_scenarios()
    names = args.only or list(scenarios)
    unknown = [n for n in names if n not in scenarios]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(scenarios)}")
    total = Figures(runs=0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="caxton-fault-matrix.") as base:
        for rep in range(args.reps):
            for name in names:
                t0 = time.monotonic()
                fig = run_one(scenarios[name], Path(base), cheap=args.cheap)
                total.add(fig)
                state = "ok" if fig.clean else "FAIL"
                print(
                    f"rep {rep + 1:>3} {name:<28} {state} {time.monotonic() - t0:6.2f} s",
                    flush=True,
                )
                for note in fig.notes:
                    print("    " + note.replace("\n", "\n    "), flush=True)
    rows = sorted({r for n in names for r in scenarios[n].rows})
    elapsed = time.monotonic() - started
    print()
    print(
        f"fault matrix: {len(names)} scenarios x {args.reps} repetitions = {total.runs} runs, "
        f"{len(rows)} RELIABILITY rows, {elapsed:.0f} s"
    )
    for key, label in (
        ("corrupted", "corrupted complete entries"),
        ("outside", "writes outside the cache"),
        ("changed", "complete entries changed by a failed operation"),
        ("leaks", "leaked secrets"),
        ("panics", "panics / untyped exceptions"),
        ("leftovers", "leftover temp files"),
        ("failed", "failed scenario assertions"),
    ):
        print(f"  {label:<48} {getattr(total, key)}")
    found = Counter(total.findings)
    print(f"  {'open findings (reported, outside this edit scope)':<48} {len(found)}")
    for text, n in sorted(found.items()):
        print(f"    {n:>4} x {text}")
    return 0 if total.clean else 1


if __name__ == "__main__":
    sys.exit(main())
