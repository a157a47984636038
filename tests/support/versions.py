"""A tiny sentence-transformers repo whose publisher pushes a new commit, behind
an ``OidHub``: the update strategies' tests start from here."""

from __future__ import annotations

import json
from pathlib import Path

from caxton_models.acquire.manager import ModelManager
from caxton_models.store import METADATA_FILE
from tests.support.fakehub import FakeHub, OidHub, manager

OLD, NEW = "1" * 40, "2" * 40
MODEL = "{model_id: org/tiny, dimensions: 32, model_type: safetensors, revision: main%s}"


def setup(
    tmp_path: Path, repo: Path, strategy: str, extra: str = ""
) -> tuple[ModelManager, FakeHub]:
    hub = OidHub({"org/tiny": (repo, OLD)})
    text = (
        f"memory: {{model_cache: {{update_check_interval: 0s, update_strategy: {strategy}}}}}\n"
        f"models: {{tiny: {MODEL % extra}}}\n"
    )
    mgr = manager(tmp_path, hub, text)
    mgr.download("tiny")
    # The publisher pushes a commit that changes one small file.
    st = json.loads((repo / "sentence_bert_config.json").read_text())
    (repo / "sentence_bert_config.json").write_text(json.dumps({**st, "max_seq_length": 64}))
    hub.repos["org/tiny"] = (repo, NEW)
    hub.calls.clear()
    return mgr, hub


def commit(path: Path) -> str:
    return str(json.loads((path / METADATA_FILE).read_text())["commit"])


def load_then_wait(mgr: ModelManager) -> Path:
    path, _ = mgr.ensure("tiny")
    mgr.join_updates()
    return path
