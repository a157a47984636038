"""CacheLimits, the one value the eviction rule reads, and plan_eviction over
it: the limits, the policy, the pins and the reserve arrive together."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from caxton_models.errors import CacheFull, InvalidArgument
from caxton_models.store import CacheLimits, FileEntry, InstalledModel, Metadata, plan_eviction

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def model(
    name: str, size: int, *, used_days_ago: int, installed_days_ago: int = 40, pinned: bool = False
) -> InstalledModel:
    def day(n: int) -> str:
        return (NOW - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%SZ")

    meta = Metadata(
        name=name, model_id=f"org/{name}", revision="main", commit=None,
        download_date=day(installed_days_ago), last_validated=None, download_source="test",
        total_size_bytes=size, file_count=1, last_access=day(used_days_ago), pinned=pinned,
    )  # fmt: skip
    return InstalledModel(name, Path("/nowhere") / name, meta, {"w": FileEntry(size, "0" * 64)})


# Least recently used first: a, then b, then c.
CACHE = [model("a", 100, used_days_ago=30), model("b", 100, used_days_ago=20),
         model("c", 100, used_days_ago=10)]  # fmt: skip


def test_the_default_limits_limit_nothing_and_pin_nothing() -> None:
    limits = CacheLimits()
    assert (limits.max_bytes, limits.max_models, limits.pinned, limits.policy) == (
        None, None, frozenset(), "lru"
    )  # fmt: skip
    assert not limits.bounded
    assert plan_eviction(CACHE, limits, incoming_bytes=10**9, incoming_name="z") == []


def test_plan_evicts_the_least_recently_used_to_meet_the_count() -> None:
    assert plan_eviction(CACHE, CacheLimits(max_models=2), incoming_name="z") == ["a", "b"]


def test_plan_evicts_to_meet_the_size_limit() -> None:
    limits = CacheLimits(max_bytes=250)
    assert plan_eviction(CACHE, limits, incoming_bytes=100, incoming_name="z") == ["a", "b"]


def test_a_name_pinned_in_the_limits_is_passed_over() -> None:
    limits = CacheLimits(max_models=2, pinned=frozenset({"a"}))
    assert plan_eviction(CACHE, limits, incoming_name="z") == ["b", "c"]


def test_a_pin_recorded_on_the_cache_is_passed_over_too() -> None:
    cache = [model("a", 100, used_days_ago=30, pinned=True), *CACHE[1:]]
    assert plan_eviction(cache, CacheLimits(max_models=2), incoming_name="z") == ["b", "c"]


def test_pins_and_in_use_models_that_block_the_plan_raise_and_are_named() -> None:
    limits = CacheLimits(max_models=1, pinned=frozenset({"a", "b"}))
    with pytest.raises(CacheFull) as exc:
        plan_eviction(CACHE, limits, incoming_name="z", in_use={"c"})
    assert "pinned or in-use" in str(exc.value) and "kept: a, b, c" in str(exc.value)


def test_fifo_and_manual_come_with_the_limits() -> None:
    # fifo goes by install date (c first), not by use (a least recently).
    installed_first = [model("c", 100, used_days_ago=10, installed_days_ago=90), *CACHE[:2]]
    fifo = CacheLimits(max_models=2, policy="fifo")
    assert plan_eviction(installed_first, fifo, incoming_name="z") == ["c", "a"]
    with pytest.raises(CacheFull, match="manual"):
        plan_eviction(CACHE, CacheLimits(max_models=2, policy="manual"), incoming_name="z")


def test_unbounded_keeps_the_pins_policy_and_reserve() -> None:
    limits = CacheLimits(max_bytes=1, max_models=1, pinned=frozenset({"a"}), policy="fifo",
                         reserve_bytes=7)  # fmt: skip
    free = limits.unbounded()
    assert (free.max_bytes, free.max_models) == (None, None) and not free.bounded
    assert (free.pinned, free.policy, free.reserve_bytes) == (frozenset({"a"}), "fifo", 7)
    # Freeing disk space: the pinned a is passed over, the oldest others go.
    assert plan_eviction(CACHE, free, free_bytes=150) == ["b", "c"]


def test_pinned_accepts_any_collection_of_names() -> None:
    assert CacheLimits(pinned=("a", "b")).pinned == frozenset({"a", "b"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": -1}, "max_bytes must be a non-negative integer"),
        ({"max_models": 1.5}, "max_models must be a non-negative integer"),
        ({"max_models": True}, "max_models must be a non-negative integer"),
        ({"reserve_bytes": -5}, "reserve_bytes must be a non-negative integer"),
        ({"policy": "random"}, "'random' is not one of lru, fifo, manual"),
        ({"pinned": "mini"}, "collection of model names, not 'mini'"),
        ({"pinned": frozenset({1})}, "non-string name"),
    ],
)
def test_bad_limits_are_a_typed_error_naming_the_field(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        CacheLimits(**kwargs)  # type: ignore[arg-type]
