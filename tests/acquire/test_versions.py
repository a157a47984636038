"""Update strategies and ModelVersion against the in-process hub stand-in: what
each strategy does when the background check finds a newer commit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from caxton_models.errors import ModelNotFound
from tests.support.versions import NEW, OLD, commit, load_then_wait, setup


def test_notify_records_but_never_downloads(tmp_path: Path, publisher_repo: Path) -> None:
    mgr, hub = setup(tmp_path, publisher_repo, "notify")
    assert commit(load_then_wait(mgr)) == OLD
    assert hub.gets() == []
    v = mgr.version("tiny")  # from the cache: no network
    assert v.update_available and v.latest_commit == NEW and v.current_commit == OLD
    assert v.last_update_check is not None and v.stored == ()
    assert v.available == {"main": NEW}


def test_manual_never_checks(tmp_path: Path, publisher_repo: Path) -> None:
    mgr, hub = setup(tmp_path, publisher_repo, "manual")
    load_then_wait(mgr)
    assert hub.calls == []
    result = mgr.update("tiny", check_only=True)
    assert result.action == "checked" and result.version.update_available


def test_automatic_switches_in_the_background_and_fetches_only_what_changed(
    tmp_path: Path, publisher_repo: Path
) -> None:
    mgr, hub = setup(tmp_path, publisher_repo, "automatic")
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


def test_staged_downloads_and_waits_for_the_operator(tmp_path: Path, publisher_repo: Path) -> None:
    mgr, hub = setup(tmp_path, publisher_repo, "staged")
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
    tmp_path: Path, publisher_repo: Path, flag: str, expected: str
) -> None:
    mgr, _ = setup(tmp_path, publisher_repo, "security", flag)
    load_then_wait(mgr)
    assert commit(mgr.ensure("tiny")[0]) == expected


def test_update_of_a_model_not_installed_is_typed(tmp_path: Path, publisher_repo: Path) -> None:
    mgr, _ = setup(tmp_path, publisher_repo, "manual")
    mgr.remove("tiny")
    with pytest.raises(ModelNotFound, match="not installed"):
        mgr.update("tiny")
    with pytest.raises(ModelNotFound, match="no previous revision"):
        mgr.cache.rollback("tiny")
