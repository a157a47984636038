"""Update and rollback end to end: ``caxton model serve``'s server with two
revisions of MiniLM, the CLI as subprocesses, and another process that keeps
embedding with the revision it loaded while the cache switches under it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from caxton_models.ops.server import MINILM_COMMIT, MINILM_REPO_ID, Catalog, ServerThread
from tests.support.hubfaults import minilm_catalog

NEW_COMMIT = "2" * 40
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "modules.json",
         "1_Pooling/config.json", "special_tokens_map.json", "config_sentence_transformers.json",
         "onnx/model.onnx")  # fmt: skip

WORKER = r"""
import json, sys, time
from pathlib import Path
import caxton_models
from caxton_models.config import load_config

cfg, out, stop = load_config(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
emb = caxton_models.load("mini", config=cfg, fallback=False)
with out.open("w") as f:
    i = 0
    while not stop.exists():
        v = emb.embed(["the cache switches revisions under a running process"])
        f.write(json.dumps({"i": i, "rev": emb.revision, "max_len": emb.max_sequence_length,
                            "v": [round(float(x), 6) for x in v[0][:8]]}) + "\n")
        f.flush()
        i += 1
        time.sleep(0.01)
"""


def _second_revision(minilm_dir: Path, dest: Path) -> Path:
    """MiniLM with one small file changed (max_seq_length 256 -> 128)."""
    for rel in FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(minilm_dir / rel, dest / rel)
        except OSError:
            shutil.copyfile(minilm_dir / rel, dest / rel)
    st = json.loads((minilm_dir / "sentence_bert_config.json").read_text())
    st["max_seq_length"] = 128
    (dest / "sentence_bert_config.json").write_text(json.dumps(st))
    return dest


def _lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def test_update_and_rollback_while_another_process_embeds(tmp_path: Path, minilm_dir: Path) -> None:
    cat = Catalog(source="test").merge(minilm_catalog(minilm_dir))
    cat.merge(Catalog.from_folder(_second_revision(minilm_dir, tmp_path / "v2"), MINILM_REPO_ID,
                                  commit=NEW_COMMIT, revisions=()))  # fmt: skip
    cat.refs[MINILM_REPO_ID]["main"] = MINILM_COMMIT
    cache = tmp_path / "cache"
    config = tmp_path / "caxton.yaml"
    config.write_text(
        f"memory: {{model_cache: {{directory: {cache}, update_strategy: manual}}}}\n"
        f"models: {{mini: {{model_id: {MINILM_REPO_ID}, dimensions: 384, revision: main}}}}\n"
    )

    with ServerThread(cat) as srv:
        env = {**os.environ, "HF_ENDPOINT": srv.url}

        def caxton(*args: str, code: int = 0) -> Any:
            proc = subprocess.run(
                [sys.executable, "-m", "caxton_models", "--config", str(config), *args, "--json"],
                capture_output=True, text=True, env=env, timeout=300, check=False,
            )  # fmt: skip
            assert proc.returncode == code, (args, proc.stdout, proc.stderr)
            return json.loads(proc.stdout) if code == 0 else {"stderr": proc.stderr}

        caxton("model", "download", "mini")
        out, stop = tmp_path / "worker.jsonl", tmp_path / "stop"
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(config), str(out), str(stop)],
                                  env=env)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not _lines(out) and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _lines(out), "the worker embeds"

            (checked,) = caxton("model", "update", "mini", "--check")
            assert checked["action"] == "checked" and not checked["update_available"]
            cat.refs[MINILM_REPO_ID]["main"] = NEW_COMMIT  # a new commit is pushed
            (checked,) = caxton("model", "update", "mini", "--check")
            assert checked["update_available"] and checked["latest_commit"] == NEW_COMMIT
            assert checked["available"] == {"main": NEW_COMMIT}
            assert checked["current_commit"] == MINILM_COMMIT

            before = len(_lines(out))
            (updated,) = caxton("model", "update", "mini")
            assert (updated["action"], updated["from"], updated["to"]) == (
                "switched", MINILM_COMMIT, NEW_COMMIT)  # fmt: skip
            old_dir = cache / ".revisions" / "mini" / MINILM_COMMIT
            weights = "onnx/model.onnx"
            assert (cache / "mini" / weights).stat().st_ino == (old_dir / weights).stat().st_ino
            info = caxton("model", "info", "mini")
            assert info["version"]["previous"] == MINILM_COMMIT
            listed = {r["name"]: r for r in caxton("model", "list")}
            assert listed["mini"]["commit"] == NEW_COMMIT
            assert listed["mini"]["stored_revisions"] == 1

            rolled = caxton("model", "rollback", "mini")
            assert (rolled["from"], rolled["to"]) == (NEW_COMMIT, MINILM_COMMIT)
            (verified,) = caxton("model", "verify", "mini")
            assert verified["ok"] and verified["commit"] == MINILM_COMMIT
            assert caxton("model", "gc")["revisions"] == [f"mini@{NEW_COMMIT}"]
            assert "no previous revision" in str(caxton("model", "rollback", "mini", code=4))
            time.sleep(0.3)
            during = len(_lines(out))
        finally:
            stop.write_text("")
            worker.wait(timeout=60)
    assert worker.returncode == 0
    rows = _lines(out)
    assert during > before, "the worker kept embedding through the update and the rollback"
    # The old revision, unchanged, the whole time.
    assert {r["rev"] for r in rows} == {MINILM_COMMIT}
    assert {r["max_len"] for r in rows} == {256}
    assert len({json.dumps(r["v"]) for r in rows}) == 1


def test_refs_route_of_the_mirror(minilm_dir: Path) -> None:
    from caxton_models.acquire.hub import HubClient
    from caxton_models.errors import ModelNotFound

    cat = Catalog(source="test").merge(minilm_catalog(minilm_dir))
    cat.pin_ref(MINILM_REPO_ID, "v1", MINILM_COMMIT)
    with ServerThread(cat) as srv:
        refs = HubClient([srv.url]).refs(MINILM_REPO_ID)
        assert refs.branches["v1"] == MINILM_COMMIT and refs.tags == {}
        assert refs.all()["main"] == MINILM_COMMIT
        with pytest.raises(ModelNotFound):
            HubClient([srv.url]).refs("nobody/nothing")
