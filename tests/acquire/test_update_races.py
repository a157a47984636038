"""The lifecycle under concurrency, and automatic updates that would move the
embedding space: a background check racing a switch, a cleanup removing the
revision an update is staging, and the probe comparison before an automatic
switch."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models.acquire import _probe
from caxton_models.errors import RevisionGone
from caxton_models.store import _revisions
from tests.support.versions import NEW, OLD, commit, load_then_wait, setup


def test_a_background_check_never_writes_back_a_stale_previous(
    tmp_path: Path, publisher_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr, _ = setup(tmp_path, publisher_repo, "manual")
    assert mgr.update("tiny").action == "switched"  # current NEW, previous OLD
    at_write, go = threading.Event(), threading.Event()
    real_write = _revisions.write_json_atomic

    def write(path: Path, data: Any) -> None:
        if path.name == _revisions.STATE_FILE and "latest_commit" in data:
            at_write.set()  # the check has read state.json and is about to write it
            go.wait(30)
        real_write(path, data)

    monkeypatch.setattr(_revisions, "write_json_atomic", write)
    check = threading.Thread(target=mgr.versions.version, args=("tiny",), kwargs={"check": True})
    check.start()
    assert at_write.wait(30)
    # A rollback in another thread meanwhile: previous becomes NEW.
    rollback = threading.Thread(target=mgr.cache.rollback, args=("tiny",))
    rollback.start()
    rollback.join(1.0)  # without the lock it finishes here, before the check writes
    go.set()
    check.join(30)
    rollback.join(30)
    assert commit(mgr.cache.model_dir("tiny")) == OLD
    assert mgr.version("tiny").previous == NEW
    assert mgr.cache.revision_state("tiny")["previous"] == NEW
    assert commit(mgr.rollback("tiny").path) == NEW


@pytest.mark.parametrize("removals", [1, 2])
def test_an_update_whose_staged_revision_a_cleanup_removes(
    tmp_path: Path, publisher_repo: Path, removals: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr, _ = setup(tmp_path, publisher_repo, "manual")
    real_download = mgr.downloader.download
    calls = {"n": 0}

    def download(*a: Any, **k: Any) -> Any:
        out = real_download(*a, **k)
        calls["n"] += 1
        if calls["n"] <= removals:
            assert mgr.cache.remove_revisions("tiny") == [NEW]  # `caxton model gc` meanwhile
        return out

    monkeypatch.setattr(mgr.downloader, "download", download)
    if removals == 1:  # staged again, then switched
        result = mgr.update("tiny")
        assert (result.action, result.to_commit) == ("switched", NEW)
        assert commit(mgr.cache.model_dir("tiny")) == NEW
    else:
        with pytest.raises(RevisionGone, match="removed twice while it was being staged"):
            mgr.update("tiny")
        assert commit(mgr.cache.model_dir("tiny")) == OLD
    assert calls["n"] == 2


def perturb_weights(folder: Path, scale: float = 0.5) -> None:
    """Rewrite model.safetensors with every float32 tensor perturbed by
    multiplicative noise: another fine-tune of the same architecture."""
    path = folder / "model.safetensors"
    raw = bytearray(path.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    rng = np.random.default_rng(7)
    for key, t in header.items():
        if key == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = (8 + n + o for o in t["data_offsets"])
        vals = np.frombuffer(bytes(raw[a:b]), dtype="<f4")
        noisy = vals * (1 + scale * rng.standard_normal(vals.shape)).astype("<f4")
        raw[a:b] = noisy.astype("<f4").tobytes()
    path.chmod(0o644)
    path.write_bytes(bytes(raw))


def test_an_automatic_update_that_moves_the_space_is_staged_not_switched(
    tmp_path: Path, publisher_repo: Path
) -> None:
    mgr, _ = setup(tmp_path, publisher_repo, "automatic")
    perturb_weights(publisher_repo)
    load_then_wait(mgr)  # the background check: automatic
    assert commit(mgr.cache.model_dir("tiny")) == OLD
    assert [(s.commit, s.role) for s in mgr.version("tiny").stored] == [(NEW, "staged")]
    result = mgr.versions.update("tiny", automatic=True)
    assert (result.action, result.to_commit) == ("staged", NEW)
    assert result.reason is not None
    assert "moves the embedding space" in result.reason and "caxton model migrate" in result.reason
    staged = mgr.cache.find_revision("tiny", NEW)
    assert staged is not None
    spec = mgr.spec("tiny")
    current = mgr.cache.get("tiny")
    assert current is not None
    cos = _probe.min_cosine(
        _probe.embed_probe(current.path, spec), _probe.embed_probe(staged.path, spec)
    )
    assert cos < _probe.MIN_COSINE
    # The operator decides: an explicit update switches.
    assert mgr.update("tiny").action == "switched"
    assert commit(mgr.cache.model_dir("tiny")) == NEW


def test_an_automatic_update_that_embeds_alike_switches(
    tmp_path: Path, publisher_repo: Path
) -> None:
    mgr, _ = setup(tmp_path, publisher_repo, "automatic")  # NEW differs in max_seq_length only
    installed = mgr.cache.get("tiny")
    assert installed is not None
    before = _probe.embed_probe(installed.path, mgr.spec("tiny"))
    load_then_wait(mgr)
    current = mgr.cache.get("tiny")
    assert current is not None and commit(current.path) == NEW
    after = _probe.embed_probe(current.path, mgr.spec("tiny"))
    assert _probe.min_cosine(before, after) >= _probe.MIN_COSINE
    assert mgr.version("tiny").previous == OLD
