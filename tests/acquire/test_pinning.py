"""Pinning has one rule in one place: ``CacheLimits.keeps``. A model is kept
when the config's ``pinned_models`` lists it (carried whole in the limits the
config builds, never copied into the model's metadata) or when it was pinned
on the cache itself (``ModelManager.pin``). Every path that evicts reads that
rule: install and download over the limits, freeing disk space, housekeeping's
and gc's cleanup of unused models, and gc enforcing the limits; the CLI's
JSON says ``pinned`` by the same rule."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from caxton_models.acquire._upkeep import cache_limits
from caxton_models.acquire.manager import ModelManager
from caxton_models.errors import CacheFull
from caxton_models.ops.cli._common import _installed_json
from caxton_models.store import CacheLimits, format_time
from caxton_models.store._limits import DISK_RESERVE
from tests.support.fakehub import FakeHub, make_config, manager

TINY = "st-bert-mean-normalize"
NAMES = "abc"
MODELS = "".join(
    f"  {n}: {{model_id: org/{n}, dimensions: 32, model_type: safetensors}}\n" for n in NAMES
)
HOWS = ["config", "cache"]  # pinned_models in caxton.yaml, or ModelManager.pin


@pytest.fixture
def src(tmp_path: Path, architectures_dir: Path) -> Path:
    return Path(shutil.copytree(architectures_dir / TINY, tmp_path / "src"))


@pytest.fixture
def hub(src: Path) -> FakeHub:
    return FakeHub({f"org/{n}": (src, str(i + 1) * 40) for i, n in enumerate(NAMES)})


def config_text(how: str, **cache: str) -> str:
    """A caxton.yaml declaring a, b and c; with ``how == "config"`` it pins a
    (any other ``how`` pins nothing in the config)."""
    if how == "config":
        cache["pinned_models"] = "[a]"
    keys = ", ".join(f"{k}: {v}" for k, v in cache.items())
    return f"memory: {{model_cache: {{{keys}}}}}\nmodels:\n{MODELS}"


def offline(tmp_path: Path, how: str, **cache: str) -> ModelManager:
    return manager(tmp_path, None, config_text(how, **cache), offline="1")


def setup_a_and_c(mgr: ModelManager, how: str, src: Path, *, days: tuple[int, int]) -> None:
    """Install a and c, a the less recently used (so unpinned it would go
    first), and pin a the ``how`` way."""
    for name, age in zip("ac", days, strict=True):
        mgr.install_from_dir(name, src)
        used = datetime.now(timezone.utc) - timedelta(days=age)
        mgr.cache.update_metadata(name, last_access=format_time(used))
    if how == "cache":
        mgr.pin("a")


def names(mgr: ModelManager) -> list[str]:
    return sorted(m.name for m in mgr.cache.installed())


def test_the_config_becomes_the_limits_in_one_place(tmp_path: Path) -> None:
    text = (
        "memory: {model_cache: {max_size_gb: 2, max_models: 3, cleanup_policy: fifo, "
        "pinned_models: [a, b]}}"
    )
    assert cache_limits(make_config(tmp_path, text)) == CacheLimits(
        max_bytes=2 * 1000**3, max_models=3, pinned=frozenset({"a", "b"}), policy="fifo"
    )
    unlimited = "memory: {model_cache: {max_size_gb: null, max_models: null}}"
    assert cache_limits(make_config(tmp_path, unlimited)) == CacheLimits()
    # The defaults: 5 GB, 10 models, lru, nothing pinned.
    assert cache_limits(make_config(tmp_path)) == CacheLimits(max_bytes=5 * 1000**3, max_models=10)
    assert offline(tmp_path, "config").limits.pinned == frozenset({"a"})


@pytest.mark.parametrize("how", HOWS)
def test_install_over_the_count_limit_keeps_the_pinned_model(
    tmp_path: Path, src: Path, how: str
) -> None:
    mgr = offline(tmp_path, how, max_models="2")
    setup_a_and_c(mgr, how, src, days=(30, 10))
    mgr.install_from_dir("b", src)
    assert names(mgr) == ["a", "b"]  # c went, though a was used less recently


@pytest.mark.parametrize("how", HOWS)
def test_install_with_only_pinned_models_to_evict_is_cache_full(
    tmp_path: Path, src: Path, how: str
) -> None:
    mgr = offline(tmp_path, how, max_models="2")
    setup_a_and_c(mgr, how, src, days=(30, 10))
    mgr.pin("c")
    with pytest.raises(CacheFull, match="kept: a, c"):
        mgr.install_from_dir("b", src)
    assert names(mgr) == ["a", "c"]


@pytest.mark.parametrize("how", HOWS)
def test_download_over_the_count_limit_keeps_the_pinned_model(
    tmp_path: Path, hub: FakeHub, src: Path, how: str
) -> None:
    mgr = manager(tmp_path, hub, config_text(how, max_models="2"))
    mgr.download("a")
    mgr.download("c")
    if how == "cache":
        mgr.pin("a")
    mgr.ensure("c")  # c used last: a is the least recently used
    mgr.cache.flush_access()
    mgr.download("b")
    assert names(mgr) == ["a", "b"]


@pytest.mark.parametrize("how", HOWS)
def test_freeing_disk_space_keeps_the_pinned_model(tmp_path: Path, src: Path, how: str) -> None:
    setup_a_and_c(offline(tmp_path, how), how, src, days=(30, 10))
    mgr = offline(tmp_path, how)
    # The disk lacks a few bytes for b until one model goes; unpinned, a (the
    # least recently used) would be the one.
    need = sum(f.stat().st_size for f in src.rglob("*") if f.is_file()) + DISK_RESERVE
    mgr.cache._disk_free = lambda _: 10**12 if len(mgr.cache.installed()) < 2 else need - 1000
    mgr.install_from_dir("b", src)
    assert names(mgr) == ["a", "b"]


@pytest.mark.parametrize("how", HOWS)
def test_cleanup_of_unused_models_keeps_the_pinned_model(
    tmp_path: Path, src: Path, how: str
) -> None:
    setup_a_and_c(offline(tmp_path, how), how, src, days=(40, 40))
    gc = offline(tmp_path, how, cleanup_unused_after="30d").gc(dry_run=True)
    assert gc["unused"] == ["c"]
    offline(tmp_path, how, cleanup_unused_after="30d").upkeep.housekeeping()
    assert names(offline(tmp_path, how)) == ["a"]


@pytest.mark.parametrize("how", HOWS)
def test_gc_enforcing_the_limits_keeps_the_pinned_model(
    tmp_path: Path, src: Path, how: str
) -> None:
    setup_a_and_c(offline(tmp_path, how), how, src, days=(30, 10))
    mgr = offline(tmp_path, how, max_models="1")
    assert mgr.gc()["evicted"] == ["c"]
    assert names(mgr) == ["a"]


@pytest.mark.parametrize("how", HOWS)
def test_the_cli_json_says_pinned_by_the_same_rule(tmp_path: Path, src: Path, how: str) -> None:
    mgr = offline(tmp_path, how)
    setup_a_and_c(mgr, how, src, days=(30, 10))
    a, c = mgr.cache.get("a"), mgr.cache.get("c")
    assert a is not None and c is not None
    assert _installed_json(a, mgr.limits)["pinned"] is True
    assert _installed_json(c, mgr.limits)["pinned"] is False


def test_a_pin_removed_from_the_config_no_longer_protects_the_model(
    tmp_path: Path, src: Path
) -> None:
    # Installed while the config pinned it (before the fix, install copied the
    # config's pin into a's metadata, where it outlived the config) ...
    offline(tmp_path, "config").install_from_dir("a", src)
    # ... and then the operator takes a off pinned_models: installing b into a
    # cache of one model replaces a instead of raising CacheFull.
    mgr = offline(tmp_path, "unpinned", max_models="1")
    installed = mgr.cache.get("a")
    assert installed is not None and not mgr.limits.keeps(installed)
    assert _installed_json(installed, mgr.limits)["pinned"] is False
    mgr.install_from_dir("b", src)
    assert names(mgr) == ["b"]


def test_a_pin_on_the_cache_outlives_a_reinstall(tmp_path: Path, src: Path) -> None:
    mgr = offline(tmp_path, "unpinned", max_models="1")
    mgr.install_from_dir("a", src)
    mgr.pin("a")
    mgr.install_from_dir("a", src)  # a repair or a new copy keeps the pin
    with pytest.raises(CacheFull):
        mgr.install_from_dir("b", src)
    assert names(mgr) == ["a"]
