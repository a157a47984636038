"""Re-embedding a corpus: batches, a SIGKILL midway and a resume that redoes
no finished batch, the refusals, and the neighbour-overlap comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import MigrationError
from caxton_models.ops.migrate import neighbour_overlap

TINY = "st-bert-mean-normalize"  # a tiny BERT: another embedding space than bundled-mini


@pytest.fixture
def tiny(architectures_dir: Path) -> Path:
    return architectures_dir / TINY


@pytest.fixture
def corpus(tmp_path: Path, corpora_dir: Path) -> Path:
    lines = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    out = tmp_path / "corpus.txt"
    out.write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
    return out


def _migrate_cli(corpus: Path, tiny: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "caxton_models", "--cache-dir", str(out.parent / "cache"),
        "model", "migrate", str(corpus), "--to", str(tiny), "--old", "bundled-mini",
        "--output", str(out), "--batch-size", "2", "--sample", "100", "--json",
    ]  # fmt: skip


def _done(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["done_batches"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_midway_resumes_without_redoing_batches(
    tmp_path: Path, corpus: Path, tiny: Path
) -> None:
    out = tmp_path / "vectors.npy"
    state = tmp_path / "vectors.npy.state.json"
    proc = subprocess.Popen(_migrate_cli(corpus, tiny, out), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _done(state) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _done(state)
    assert 5 <= killed_at < 150, "killed midway (300 texts in batches of 2)"

    again = subprocess.run(_migrate_cli(corpus, tiny, out), capture_output=True, text=True,
                           timeout=300, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["batches"] == 150
    assert report["batches_skipped"] == killed_at
    assert report["batches_run"] == 150 - killed_at
    assert _done(state) == 150
    # Every row is the tiny model's vector of its text: nothing skipped, nothing torn.
    texts = corpus.read_text(encoding="utf-8").splitlines()
    want = caxton_models.load(tiny).embed(texts)
    np.testing.assert_allclose(np.load(out), want, atol=1e-5)
    assert report["sample"] == 100 and report["k"] == 10
    assert 0.0 <= report["overlap_min"] <= report["overlap_mean"] < 0.9


def test_iterator_corpus_old_vectors_and_refusals(tmp_path: Path, tiny: Path, corpus: Path) -> None:
    texts = corpus.read_text(encoding="utf-8").splitlines()[:60]
    old = tmp_path / "old.npy"
    np.save(old, caxton_models.load(tiny).embed(texts))
    out = tmp_path / "new.npy"
    seen: list[int] = []
    report = caxton_models.migrate(
        iter(texts), new=tiny, output=out, old_vectors=old, batch_size=7,
        progress=lambda done, total: seen.append(done),
    )  # fmt: skip
    assert report.batches == report.batches_run == 9 and seen[-1] == 60
    # The same (float32) model on both sides: every neighbourhood agrees.
    assert report.overlap_mean == report.overlap_min == 1.0
    with pytest.raises(MigrationError, match="another dimensions, model"):
        caxton_models.migrate(texts, new="bundled-mini", output=out, batch_size=7)
    with pytest.raises(MigrationError, match="another corpus"):
        caxton_models.migrate(texts[::-1], new=tiny, output=out, batch_size=7)
    stray = tmp_path / "stray.npy"
    stray.write_bytes(b"x")
    with pytest.raises(MigrationError, match="refusing to overwrite"):
        caxton_models.migrate(texts, new="bundled-mini", output=stray)
    with pytest.raises(MigrationError, match="empty"):
        caxton_models.migrate([], new="bundled-mini", output=tmp_path / "e.npy")


def test_neighbour_overlap() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 8)).astype(np.float32)
    assert neighbour_overlap(a, a * 3.0).tolist() == [1.0] * 30  # scale does not matter
    b = rng.normal(size=(30, 8)).astype(np.float32)
    assert neighbour_overlap(a, b).mean() < 0.6
    with pytest.raises(MigrationError):
        neighbour_overlap(a[:1], b[:1])
