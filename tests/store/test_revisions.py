"""Revisions side by side: shared files stored once, atomic switches, rollback,
and a valid current revision after a crash at any step of a switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from caxton_models.errors import ModelNotFound, ValidationFailed
from caxton_models.store import ModelCache
from caxton_models.store._revisions import REVISIONS, SWITCHING_FILE, exchange
from tests.support.revisions import A, B, C, commit_of, make_src, put


def test_second_revision_is_kept_beside_and_shares_files(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    put(cache, tmp_path, B)
    current = cache.get("m")
    assert current is not None and current.metadata is not None
    assert current.path == tmp_path / "c" / "m" and current.metadata.commit == B
    stored = cache.stored_revisions("m")
    assert [m.metadata.commit for m in stored if m.metadata] == [A]
    old = stored[0].path
    assert old == tmp_path / "c" / REVISIONS / "m" / A
    # The weights are identical: one inode; config.json differs: two.
    w_new, w_old = (p / "onnx" / "model.onnx" for p in (current.path, old))
    assert os.stat(w_new).st_ino == os.stat(w_old).st_ino
    assert os.stat(current.path / "config.json").st_ino != os.stat(old / "config.json").st_ino
    # Counted beside: what is not shared (config.json and the two records), never the weights.
    unshared = sum(p.stat().st_size for p in old.iterdir() if p.is_file())
    assert cache.revisions.bytes_beside("m", current) == unshared
    # Only the current revision is an installed model.
    assert [m.name for m in cache.installed()] == ["m"]


def test_rollback_and_back_and_cleanup(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    put(cache, tmp_path, B)
    assert commit_of(cache.rollback("m").path) == A
    assert [m.metadata.commit for m in cache.stored_revisions("m") if m.metadata] == [B]
    assert commit_of(cache.switch("m", B).path) == B
    assert cache.remove_revisions("m", dry_run=True) == [A]
    assert cache.stored_revisions("m") != []
    assert cache.remove_revisions("m") == [A]
    with pytest.raises(ModelNotFound, match="no previous revision"):
        cache.rollback("m")
    with pytest.raises(ModelNotFound, match="no stored revision"):
        cache.switch("m", C)


def test_same_commit_replaces_in_place(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    put(cache, tmp_path, A)
    assert cache.stored_revisions("m") == []


def test_stage_without_switch_keeps_the_current_one(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    staging = cache.new_staging("m")
    src = make_src(tmp_path / "src-b", "b")
    from caxton_models.store import FileEntry

    files = {}
    for rel in ("config.json", "onnx/model.onnx"):
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes((src / rel).read_bytes())
        import hashlib

        data = (src / rel).read_bytes()
        files[rel] = FileEntry(len(data), hashlib.sha256(data).hexdigest())
    cache.finalize(staging, name="m", files=files, model_id="org/m", revision="main",
                   commit=B, source="test")  # fmt: skip
    staged = cache.publish("m", staging, switch=False)
    assert staged.path == tmp_path / "c" / REVISIONS / "m" / B
    assert commit_of(tmp_path / "c" / "m") == A
    assert commit_of(cache.switch("m", B).path) == B
    # Staging the current revision beside itself is refused.
    again = cache.new_staging("m")
    (again / "x").write_text("x")
    cache.finalize(again, name="m", files={"x": FileEntry(1, hashlib.sha256(b"x").hexdigest())},
                   model_id="org/m", revision="main", commit=B, source="test")  # fmt: skip
    with pytest.raises(ValidationFailed, match="same revision"):
        cache.publish("m", again, switch=False)


def test_remove_drops_every_revision(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    put(cache, tmp_path, B)
    assert cache.remove("m")
    assert not (tmp_path / "c" / REVISIONS / "m").exists()


_CRASH = r"""
import os, sys
from pathlib import Path
from caxton_models.store import ModelCache
from caxton_models.store import _revisions

step = sys.argv[2]
real_rename = os.rename
calls = {"n": 0}

def rename(a, b):
    real_rename(a, b)
    calls["n"] += 1
    if str(calls["n"]) == step:
        os._exit(9)  # a crash right after this rename

real_exchange = _revisions.exchange

def exchange(a, b):
    done = real_exchange(a, b)
    if done:
        calls["n"] += 1
        if str(calls["n"]) == step:
            os._exit(9)
    return done

_revisions.os.rename = rename
_revisions.exchange = exchange
ModelCache(sys.argv[1]).rollback("m")
"""


@pytest.mark.parametrize("exchange_env", ["0", "1"], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("step", ["1", "2", "3"])
def test_a_crash_during_a_switch_leaves_a_valid_current_revision(
    tmp_path: Path, step: str, exchange_env: str
) -> None:
    cache = ModelCache(tmp_path / "c")
    put(cache, tmp_path, A)
    put(cache, tmp_path, B)
    env = {**os.environ, "CAXTON_NO_RENAME_EXCHANGE": exchange_env}
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, str(tmp_path / "c"), step], env=env, check=False
    )
    assert proc.returncode == (0 if (exchange_env, step) == ("0", "3") else 9)
    fresh = ModelCache(tmp_path / "c")
    current = fresh.get("m")
    assert current is not None and current.status == "verified"
    assert current.metadata is not None and current.metadata.commit in (A, B)
    other = B if current.metadata.commit == A else A
    stored = fresh.stored_revisions("m")
    assert [m.path.name for m in stored] == [other]
    assert [m.metadata.commit for m in stored if m.metadata] == [other]
    assert not (tmp_path / "c" / REVISIONS / "m" / SWITCHING_FILE).exists()


def test_exchange_swaps_two_folders_when_the_system_can(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("a")
    if not exchange(a, b):
        pytest.skip("this system has no renameat2(RENAME_EXCHANGE); the two-rename path is used")
    assert (b / "f").read_text() == "a" and not (a / "f").exists()
