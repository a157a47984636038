"""store/_upstream: a pull-through mirror's refs and listings, read strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caxton_models.store import ListedFile, UpstreamRecords

C1, C2 = "a" * 40, "b" * 40
FILES = [
    ListedFile("config.json", 10, None, "c" * 40, False),
    ListedFile("model.onnx", 99, "d" * 64, "e" * 40, True),
]


def test_record_and_read_back(tmp_path: Path) -> None:
    rec = UpstreamRecords(tmp_path)
    assert rec.ref("acme/m", "main") is None and rec.listing("acme/m", C1) is None
    rec.record("acme/m", C1, FILES, ref="main")
    rec.record("acme/m", C2, FILES[:1], ref=C2)  # a commit is never recorded as a ref
    got = rec.ref("acme/m", "main")
    assert got is not None and got.commit == C1
    assert rec.ref("acme/m", C2) is None
    assert rec.listing("acme/m", C1) == FILES
    assert rec.listing("acme/m", C2) == FILES[:1]
    assert UpstreamRecords(tmp_path).listing("acme/other", C1) is None


def test_malformed_records_are_ignored(tmp_path: Path) -> None:
    rec = UpstreamRecords(tmp_path)
    rec.record("acme/m", C1, FILES, ref="main")
    path = next((tmp_path / ".upstream").glob("*.json"))
    data = json.loads(path.read_text())
    data["listings"][C1]["model.onnx"]["sha256"] = "not-hex"
    data["refs"]["main"]["commit"] = "short"
    path.write_text(json.dumps(data))
    assert rec.listing("acme/m", C1) is None  # one bad entry: the listing is not trusted
    assert rec.ref("acme/m", "main") is None
    data["repo_id"] = "acme/else"  # a record of another repo is not this one's
    path.write_text(json.dumps(data))
    assert rec.ref("acme/m", "main") is None
    with pytest.raises(ValueError):
        rec.record("../escape", C1, FILES)
