"""Runs the regression-gated benches: ``python -m benches.gate [pytest args]``.

The same as ``pytest benches -m gate --benchmark-enable -p no:cacheprovider``:
every gate of ``benches/gates.toml`` is measured against its same-run baseline
over its interleaved rounds, and a ratio under its floor fails the run (exit
status 1). Extra arguments go to pytest, e.g. ``-k download`` for one bench,
``--gate-report gates.json`` for the outcomes as JSON. Needs the real model
data (``CAXTON_TEST_DATA``), nginx and curl (the download baselines) and the
test extra (fastembed, blake3). Takes about 20 minutes on 2 cores.
"""

from __future__ import annotations

import sys

import pytest


def main(argv: list[str]) -> int:
    args = ["benches", "-m", "gate", "--benchmark-enable", "-p", "no:cacheprovider", *argv]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
