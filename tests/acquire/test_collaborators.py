"""The manager's collaborators, each built alone from what it needs (no
ModelManager): network state, per-model locks, the downloader, the checker,
versions with the update watcher, upkeep, and the ensurer that orders them."""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from caxton_models.acquire._checker import Checker
from caxton_models.acquire._downloader import Downloader
from caxton_models.acquire._ensure import Ensurer
from caxton_models.acquire._network import ModelLocks, Network
from caxton_models.acquire._specs import Specs
from caxton_models.acquire._updates import UpdateWatcher
from caxton_models.acquire._upkeep import Upkeep
from caxton_models.acquire._versions import Versions
from caxton_models.config import Config
from caxton_models.errors import CaxtonError, ModelNotFound, NetworkError, OfflineError
from caxton_models.registry import ModelSpec, Registry, spec_from_mapping
from caxton_models.store import METADATA_FILE, ModelCache
from tests.support.fakehub import FakeHub, make_config

OLD, NEW = "1" * 40, "2" * 40
TINY = {"model_id": "org/tiny", "dimensions": 32, "model_type": "safetensors"}


@pytest.fixture
def repo(tmp_path: Path, architectures_dir: Path) -> Path:
    return Path(shutil.copytree(architectures_dir / "st-bert-mean-normalize", tmp_path / "repo"))


def tiny() -> ModelSpec:
    return spec_from_mapping("tiny", TINY, where="test")


def forbidden(*a: Any, **k: Any) -> Any:
    raise AssertionError("no client may be built here")


def installed_tiny(
    tmp_path: Path, repo: Path, text: str = ""
) -> tuple[Config, ModelCache, FakeHub, Network, Downloader]:
    """A cache holding ``tiny`` at OLD, through a Downloader built alone."""
    cfg = make_config(tmp_path, text)
    cache = ModelCache(cfg.cache.directory)
    hub = FakeHub({"org/tiny": (repo, OLD)})
    network = Network(cfg, hub=hub)
    downloader = Downloader(cache, cfg, network)
    downloader.download(tiny(), installed=None)
    return cfg, cache, hub, network, downloader


def test_offline_network_never_builds_a_client(tmp_path: Path) -> None:
    network = Network(make_config(tmp_path, offline="1"), factory=forbidden)
    assert network.offline_reason() is not None
    with pytest.raises(OfflineError):
        _ = network.hub
    with pytest.raises(OfflineError):
        network.check_client()


def test_the_update_check_client_is_one_short_attempt_until_a_shared_one_exists(
    tmp_path: Path,
) -> None:
    built: list[dict[str, Any]] = []

    def factory(endpoints: list[str], **kw: Any) -> Any:
        built.append(kw)
        return object()

    cfg = make_config(tmp_path, "download: {request_timeout: 60, retry_attempts: 5}")
    network = Network(cfg, factory=factory)
    network.check_client()
    assert (built[-1]["retries"], built[-1]["timeout"]) == (1, 10.0)
    shared = network.hub
    assert built[-1]["retries"] == 5 and built[-1]["timeout"] == 60
    assert network.check_client() is shared and network.hub is shared and len(built) == 2


def test_model_locks_are_one_per_name() -> None:
    locks = ModelLocks()
    assert locks.hold("a") is locks.hold("a")
    assert locks.hold("a") is not locks.hold("b")
    assert isinstance(locks.hold("a"), type(threading.Lock()))


def test_the_downloader_alone_alerts_on_failures_in_a_row(
    tmp_path: Path, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, "monitoring: {alert_on_failures: true, alert_threshold: 2}")
    cache = ModelCache(cfg.cache.directory)
    hub = FakeHub({"org/tiny": (repo, OLD)}, fail_resolve=NetworkError("the hub is down"))
    downloader = Downloader(cache, cfg, Network(cfg, hub=hub))
    caplog.set_level(logging.ERROR, "caxton_models.acquire.manager")
    for _ in range(3):
        with pytest.raises(NetworkError):
            downloader.download(tiny(), installed=None)
    assert sum("ALERT: 2 downloads of tiny" in r.message for r in caplog.records) == 1
    hub.fail_resolve = None
    path = downloader.download(tiny(), installed=None)
    installed = cache.get("tiny")
    assert installed is not None and installed.path == path
    assert installed.metadata is not None and installed.metadata.commit == OLD


def test_the_checker_has_the_store_rewrite_lost_metadata(tmp_path: Path, repo: Path) -> None:
    cfg, cache, _, network, downloader = installed_tiny(tmp_path, repo)
    (cache.model_dir("tiny") / METADATA_FILE).unlink()
    lost = cache.get("tiny")
    assert lost is not None and lost.metadata is None
    checker = Checker(cache, cfg, network, downloader, functional=False)
    assert checker.matches(lost, tiny())  # the full check decides
    assert checker.validate(lost, tiny()).ok
    back = cache.get("tiny")
    assert back is not None and back.metadata is not None
    assert (back.metadata.download_source, back.metadata.model_id) == ("recovered", "org/tiny")
    assert back.metadata.validation_status == "verified"


def test_the_checker_offline_raises_instead_of_repairing(tmp_path: Path, repo: Path) -> None:
    _, cache, hub, _, _ = installed_tiny(tmp_path, repo)
    weights = cache.model_dir("tiny") / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(b"\0" * weights.stat().st_size)
    offline = make_config(tmp_path, offline="1")
    network = Network(offline, factory=forbidden)
    checker = Checker(cache, offline, network, Downloader(cache, offline, network), False)
    installed = cache.get("tiny")
    assert installed is not None
    report = checker.validate(installed, tiny(), force_full=True)
    assert report.bad_files == ["model.safetensors"]
    hub.calls.clear()
    with pytest.raises(CaxtonError):
        checker.repair(tiny(), installed, report)
    assert hub.calls == []


def versions_for(cfg: Config, cache: ModelCache, network: Network, dl: Downloader) -> Versions:
    specs = Specs(Registry([tiny()]), cache, network)
    return Versions(cache, cfg, specs, network, ModelLocks(), dl, functional=False)


def test_the_watcher_with_a_fake_hub_records_a_newer_commit(tmp_path: Path, repo: Path) -> None:
    text = "memory: {model_cache: {update_check_interval: 0s, update_strategy: notify}}"
    cfg, cache, hub, network, downloader = installed_tiny(tmp_path, repo, text)
    hub.repos["org/tiny"] = (repo, NEW)
    hub.calls.clear()
    watcher = UpdateWatcher(cfg, network, versions_for(cfg, cache, network, downloader))
    installed = cache.get("tiny")
    assert installed is not None and watcher.due(installed, tiny())
    assert watcher.maybe_start(installed, tiny()) == installed.path
    watcher.join(30)
    assert hub.calls == [("resolve", "org/tiny")]  # checked, nothing fetched (notify)
    state = cache.revision_state("tiny")
    assert (state["latest_commit"], state["tracking"]) == (NEW, "main")
    assert not watcher.due(replace(installed, metadata=None), tiny())


def test_versions_alone_update_and_roll_back(tmp_path: Path, repo: Path) -> None:
    cfg, cache, hub, network, downloader = installed_tiny(tmp_path, repo)
    versions = versions_for(cfg, cache, network, downloader)
    assert versions.update("tiny").action == "none"
    cfg_text = (repo / "sentence_bert_config.json").read_text()
    (repo / "sentence_bert_config.json").write_text(cfg_text.replace("}", ', "x": 1}', 1))
    hub.repos["org/tiny"] = (repo, NEW)
    result = versions.update("tiny")
    assert (result.action, result.from_commit, result.to_commit) == ("switched", OLD, NEW)
    assert versions.version("tiny").previous == OLD
    rolled = versions.rollback("tiny")
    assert rolled.metadata is not None and rolled.metadata.commit == OLD


def test_upkeep_runs_housekeeping_once_and_gc_dry_run_removes_nothing(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "memory: {model_cache: {cleanup_unused_after: 0s}}"
    cfg, cache, _, _, _ = installed_tiny(tmp_path, repo, text)
    upkeep = Upkeep(cache, cfg)
    assert upkeep.gc(dry_run=True)["unused"] == ["tiny"]
    assert cache.get("tiny") is not None
    calls: list[float] = []
    real = cache.reclaim_temp

    def reclaim(age: float, **k: Any) -> list[str]:
        calls.append(age)
        return real(age, **k)

    monkeypatch.setattr(cache, "reclaim_temp", reclaim)
    upkeep.housekeeping()
    upkeep.housekeeping()
    assert calls == [cfg.cache.temp_max_age]
    assert cache.get("tiny") is None  # unused for 0 s: removed by housekeeping


def ensurer_for(cfg: Config, cache: ModelCache, network: Network, dl: Downloader) -> Ensurer:
    specs = Specs(Registry([tiny()]), cache, network)
    locks = ModelLocks()
    versions = Versions(cache, cfg, specs, network, locks, dl, functional=False)
    checker = Checker(cache, cfg, network, dl, functional=False)
    watcher = UpdateWatcher(cfg, network, versions)
    return Ensurer(cfg, cache, specs, network, locks, checker, dl, watcher, Upkeep(cache, cfg))


def test_the_ensurer_alone_serves_the_cache_and_refuses_offline_installs(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, cache, hub, network, downloader = installed_tiny(tmp_path, repo)
    ensurer = ensurer_for(cfg, cache, network, downloader)
    monkeypatch.setattr(downloader, "download", forbidden)
    hub.calls.clear()
    assert ensurer.ensure("tiny") == (cache.model_dir("tiny"), tiny())
    assert ensurer.download("tiny") == cache.model_dir("tiny")
    assert hub.calls == []
    assert ensurer.repair("tiny").ok
    offline_cfg = make_config(tmp_path / "off", offline="1")
    empty = ModelCache(offline_cfg.cache.directory)
    offline = ensurer_for(offline_cfg, empty, Network(offline_cfg, factory=forbidden), downloader)
    with pytest.raises(OfflineError, match="caxton model install"):
        offline.ensure("tiny")
    with pytest.raises(ModelNotFound, match="not installed"):
        Upkeep(empty, offline_cfg).pin("tiny")
