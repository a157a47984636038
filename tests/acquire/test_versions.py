"""Update strategies and ModelVersion against the in-process hub stand-in: what
each strategy does when the background check finds a newer commit."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from caxton_models import _core
from caxton_models.acquire.manager import ModelManager
from caxton_models.errors import ModelNotFound
from caxton_models.store import METADATA_FILE
from tests.acquire.test_manager import FakeHub, manager

OLD, NEW = "1" * 40, "2" * 40
MODEL = "{model_id: org/tiny, dimensions: 32, model_type: safetensors, revision: main%s}"


@pytest.fixture
def repo(tmp_path: Path, architectures_dir: Path) -> Path:
    return Path(shutil.copytree(architectures_dir / "st-bert-mean-normalize", tmp_path / "repo"))


class OidHub(FakeHub):
    """Lists each small file's git blob id, as the Hub does."""

    def resolve(self, repo_id: str, revision: str = "main") -> Any:
        info = super().resolve(repo_id, revision)
        folder = self.repos[repo_id][0]
        files = tuple(
            replace(f, git_oid=_core.git_blob_sha1_file(folder / f.path)) for f in info.files
        )
        return replace(info, files=files)


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


def test_notify_records_but_never_downloads(tmp_path: Path, repo: Path) -> None:
    mgr, hub = setup(tmp_path, repo, "notify")
    assert commit(load_then_wait(mgr)) == OLD
    assert hub.gets() == []
    v = mgr.version("tiny")  # from the cache: no network
    assert v.update_available and v.latest_commit == NEW and v.current_commit == OLD
    assert v.last_update_check is not None and v.stored == ()
    assert v.available == {"main": NEW}


def test_manual_never_checks(tmp_path: Path, repo: Path) -> None:
    mgr, hub = setup(tmp_path, repo, "manual")
    load_then_wait(mgr)
    assert hub.calls == []
    result = mgr.update("tiny", check_only=True)
    assert result.action == "checked" and result.version.update_available


def test_automatic_switches_in_the_background_and_fetches_only_what_changed(
    tmp_path: Path, repo: Path
) -> None:
    mgr, hub = setup(tmp_path, repo, "automatic")
    gate = threading.Event()
    resolve = hub.resolve
    hub.resolve = lambda *a: (gate.wait(30), resolve(*a))[1]  # type: ignore[method-assign]
    path, _ = mgr.ensure("tiny")  # returns while the check is still waiting for the hub
    assert commit(path) == OLD
    gate.set()
    mgr.join_updates()
    assert hub.gets() == ["sentence_bert_config.json"]
    assert commit(mgr.ensure("tiny")[0]) == NEW
    assert mgr.version("tiny").previous == OLD
    assert commit(mgr.rollback("tiny").path) == OLD


def test_staged_downloads_and_waits_for_the_operator(tmp_path: Path, repo: Path) -> None:
    mgr, hub = setup(tmp_path, repo, "staged")
    load_then_wait(mgr)
    assert commit(mgr.ensure("tiny")[0]) == OLD
    v = mgr.version("tiny")
    assert [(s.commit, s.role) for s in v.stored] == [(NEW, "staged")]
    hub.calls.clear()
    result = mgr.update("tiny")  # the staged revision is switched to, not fetched again
    assert (result.action, result.to_commit) == ("switched", NEW) and hub.gets() == []
    assert commit(mgr.cache.model_dir("tiny")) == NEW


@pytest.mark.parametrize(("flag", "expected"), [("", OLD), (", security_update: true", NEW)])
def test_security_updates_only_flagged_models(
    tmp_path: Path, repo: Path, flag: str, expected: str
) -> None:
    mgr, _ = setup(tmp_path, repo, "security", flag)
    load_then_wait(mgr)
    assert commit(mgr.ensure("tiny")[0]) == expected


def test_update_of_a_model_not_installed_is_typed(tmp_path: Path, repo: Path) -> None:
    mgr, _ = setup(tmp_path, repo, "manual")
    mgr.remove("tiny")
    with pytest.raises(ModelNotFound, match="not installed"):
        mgr.update("tiny")
    with pytest.raises(ModelNotFound, match="no previous revision"):
        mgr.cache.rollback("tiny")
