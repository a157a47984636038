"""A whole model from a Hub on 127.0.0.1: ``caxton model download`` against
huggingface_hub's ``snapshot_download`` of the same files (gated).

The Hub is ``caxton model serve --repos`` holding the real all-MiniLM-L6-v2.
Ours resolves the revision, plans the files the model needs (the ONNX export,
the tokenizer and configs: 9 files, 91 MB), fetches them, verifies each
(SHA-256, or the git blob id of a small file), fsyncs and publishes the cache
entry. ``snapshot_download`` fetches the same files (``allow_patterns``) into an
empty Hugging Face cache, checking sizes and ETags and syncing nothing. Each
contender is a fresh process with an empty cache, in interleaved rounds; the
median of the per-round ratios is gated.

This is the path a new user's first ``load()`` takes: resolving, planning,
verifying and publishing are all in the time, so a per-file cost that crept into
any of them shows here and in no other bench.

Real run:
    python -m benches.gate -k model_download
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.hubfaults import MINILM_REPO_ID, minilm_sha256s

from benches import gating
from caxton_models import _core

GATE = "model_download_vs_hf_snapshot"

HF_SNAPSHOT = """
import sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[1], revision="main", cache_dir=sys.argv[2], allow_patterns=sys.argv[3:])
"""


def _env(hub: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=hub,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_ENABLE_HF_TRANSFER="0",
        **extra,
    )
    for var in ("HF_HUB_OFFLINE", "CAXTON_OFFLINE", "HF_TOKEN"):
        env.pop(var, None)
    return env


def _files(folder: Path) -> dict[str, Path]:
    """The model's files under ``folder`` by repo path (no cache bookkeeping)."""
    return {
        p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".caxton")
    }


@pytest.mark.gate
def test_model_download_gate(
    hub_url: str,
    minilm_dir: Path,
    tmp_path: Path,
    bench_enabled: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if importlib.util.find_spec("huggingface_hub") is None:
        pytest.skip("huggingface_hub is not installed (pip install huggingface_hub): the baseline")
    n = itertools.count()
    landed: dict[str, tuple[Path, Path]] = {}  # contender -> (its cache, the model's folder)

    def ours() -> None:
        cache = tmp_path / f"ours-{next(n)}"
        out = subprocess.run(
            [sys.executable, "-m", "caxton_models", "model", "download", MINILM_REPO_ID,
             "--revision", "main", "--json"],
            env=_env(hub_url, CAXTON_CACHE_DIR=str(cache)),
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        landed["ours"] = (cache, Path(json.loads(out)["path"]))

    # Once untimed: which files ours fetches (the baseline fetches the same), and the
    # Hub's page cache warm for both.
    ours()
    wanted = sorted(_files(landed["ours"][1]))
    assert "onnx/model.onnx" in wanted and "tokenizer.json" in wanted, wanted
    size = sum(p.stat().st_size for p in _files(landed["ours"][1]).values())
    shutil.rmtree(landed["ours"][0])

    def hf() -> None:
        cache = tmp_path / f"hf-{next(n)}"
        subprocess.run(
            [sys.executable, "-c", HF_SNAPSHOT, MINILM_REPO_ID, str(cache), *wanted],
            env=_env(hub_url), check=True, capture_output=True,
        )  # fmt: skip
        (snap,) = (cache / f"models--{MINILM_REPO_ID.replace('/', '--')}" / "snapshots").iterdir()
        landed["hf"] = (cache, snap)

    published = minilm_sha256s(minilm_dir)

    def check_and_remove(who: str) -> None:
        """Untimed: every byte of the model's files arrived; then the cache goes (a
        full run would otherwise leave 1.4 GB behind)."""
        cache, folder = landed.pop(who)
        got = _files(folder)
        assert sorted(got) == wanted, (who, sorted(got))
        for rel, path in got.items():
            assert _core.sha256_file(path) == published[rel], (who, rel)
        shutil.rmtree(cache)

    rounds = gating.rounds_for(GATE, bench_enabled)
    times = gating.interleaved({"hf": hf, "ours": ours}, rounds, after=check_and_remove)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    with capsys.disabled():
        print(f"\n[model download, {len(wanted)} files, {size / 1e6:.1f} MB, median of {rounds}]")
        print(f"  caxton model download {ms['ours']:.0f} ms, snapshot_download {ms['hf']:.0f} ms")
    gating.check_time_ratios(
        times,
        [(GATE, "hf", "ours")],
        enabled=bench_enabled,
        rounds=rounds,
        describe=lambda _base, _ours, ratios: (
            f"{len(wanted)} files, {size / 1e6:.1f} MB: ours {ms['ours']:.0f} ms, "
            f"snapshot_download {ms['hf']:.0f} ms; {gating.spread(ratios)}"
        ),
    )
