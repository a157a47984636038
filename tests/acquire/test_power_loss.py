"""After a power cut: a finished file of the right size whose blocks never
reached the disk (zeros), with a record saying it was fetched and verified,
must not be published as verified: it is hashed again and fetched again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caxton_models import _core
from caxton_models.acquire._fetch import FETCHED
from caxton_models.store import boot_id
from tests.support.fakehub import COMMIT, FakeHub, manager

W = "onnx/model.onnx"


def interrupted_attempt(root: Path, minilm_dir: Path, record: object) -> Path:
    """downloads/<name>@<commit>/ as an attempt left it: the weights finished
    (right size) and recorded, but zeros on disk."""
    work = root / "downloads" / f"all-MiniLM-L6-v2@{COMMIT}"
    (work / "onnx").mkdir(parents=True)
    with open(work / W, "wb") as f:
        f.truncate((minilm_dir / W).stat().st_size)
    (work / FETCHED).write_text(json.dumps(record))
    return work


@pytest.mark.parametrize("when", ["older-format", "another-boot"])
def test_a_zeroed_file_with_a_stale_record_is_fetched_again(
    tmp_path: Path, fake_hub: FakeHub, minilm_dir: Path, when: str
) -> None:
    mgr = manager(tmp_path, fake_hub)
    sha = _core.sha256_file(minilm_dir / W)
    record = {W: sha} if when == "older-format" else {"boot": "another", "files": {W: sha}}
    interrupted_attempt(tmp_path / "cache", minilm_dir, record)
    path = mgr.download("all-MiniLM-L6-v2")
    assert W in fake_hub.gets()
    assert _core.sha256_file(path / W) == sha
    installed = mgr.cache.get("all-MiniLM-L6-v2")
    assert installed is not None and installed.status == "verified"
    assert mgr.verify("all-MiniLM-L6-v2", full=True).ok


def test_a_record_from_this_boot_is_trusted(
    tmp_path: Path, fake_hub: FakeHub, minilm_dir: Path
) -> None:
    """A killed process loses nothing the kernel holds: the record of this
    boot saves the fetch (the file here is whole; only its record is read)."""
    if boot_id() is None:
        pytest.skip("no boot id on this system: every record is re-hashed")
    mgr = manager(tmp_path, fake_hub)
    sha = _core.sha256_file(minilm_dir / W)
    work = interrupted_attempt(tmp_path / "cache", minilm_dir, {})
    (work / W).write_bytes((minilm_dir / W).read_bytes())
    (work / FETCHED).write_text(json.dumps({"boot": boot_id(), "files": {W: sha}}))
    mgr.download("all-MiniLM-L6-v2")
    assert W not in fake_hub.gets()
