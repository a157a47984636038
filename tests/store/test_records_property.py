"""Property tests for every parser of untrusted input in the cache/config layer:
each returns a value or raises its one typed error, never anything else."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from caxton_models._paths import check_repo_path, check_unique
from caxton_models.config import parse_config, parse_duration, parse_size
from caxton_models.errors import CacheFull, ConfigError, InvalidPath
from caxton_models.store import (
    CacheLimits,
    FileEntry,
    InstalledModel,
    Metadata,
    parse_manifest,
    plan_eviction,
)

path_chars = st.sampled_from([*'aZ09._-/\\:.* <>|?"\x00\x01 é\u202e', "..", "CON", "nul", "\ud800"])
paths = st.one_of(st.text(max_size=40), st.lists(path_chars, max_size=12).map("".join))


@given(paths)
@settings(max_examples=500, deadline=None)
def test_repo_path_is_safe_or_invalid(p: str) -> None:
    try:
        out = check_repo_path(p)
    except InvalidPath:
        return
    assert out == p
    parts = p.split("/")
    assert not p.startswith("/") and "\\" not in p and ":" not in p
    assert all(c not in ("", ".", "..") for c in parts)
    # Joining it to a root never escapes the root.
    root = Path("/cache/root")
    assert (root / p).resolve().is_relative_to(root) or ".." not in parts


@given(st.lists(paths, max_size=8))
@settings(max_examples=200, deadline=None)
def test_unique_set_or_invalid(ps: list[str]) -> None:
    try:
        out = check_unique(ps)
    except InvalidPath:
        return
    assert len({p.casefold() for p in out}) == len(out)


durations = st.one_of(
    st.text(alphabet="0123456789.hmsdw -", max_size=12),
    st.integers(-10, 10**9),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
)


@given(durations)
def test_parse_duration_total(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert seconds >= 0 and seconds == seconds


@given(st.integers(0, 10**6), st.sampled_from(["s", "m", "h", "d"]))
def test_parse_duration_units(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}") == n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


@given(
    st.one_of(
        st.text(alphabet="0123456789.kKmMgGiIbBtT -", max_size=10), st.floats(), st.integers()
    )
)
def test_parse_size_total(value: object) -> None:
    try:
        size = parse_size(value)
    except ValueError:
        return
    assert isinstance(size, int) and 0 <= size < 2**63


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_manifest_parser_total(data: Any) -> None:
    with contextlib.suppress(ValueError, InvalidPath):
        parse_manifest(data)


good_meta: dict[str, Any] = Metadata(
    name="m",
    model_id="o/m",
    revision="main",
    commit="a" * 40,
    download_date="2025-01-01T00:00:00Z",
    last_validated=None,
    download_source="h",
    total_size_bytes=1,
    file_count=1,
).to_json()


@given(st.dictionaries(st.sampled_from([*sorted(good_meta), "extra"]), json_scalars, max_size=6))
@settings(max_examples=300, deadline=None)
def test_metadata_parser_total(changes: dict[str, Any]) -> None:
    with contextlib.suppress(ValueError, InvalidPath):
        Metadata.from_json({**good_meta, **changes})


config_keys = st.sampled_from(
    [
        "memory",
        "download",
        "embedding",
        "monitoring",
        "models",
        "model_cache",
        "max_size_gb",
        "cleanup_policy",
        "enabled",
        "batch_size",
        "fallback_models",
        "x",
        "validation_interval",
    ]
)
config_docs = st.recursive(
    json_scalars,
    lambda inner: st.dictionaries(config_keys, inner, max_size=4),
    max_leaves=12,
)


@given(config_docs)
@settings(max_examples=300, deadline=None)
def test_config_parser_total(doc: Any) -> None:
    try:
        parse_config(doc, Path("/x/caxton.yaml"), environ=False)
    except ConfigError as e:
        assert "/x/caxton.yaml" in str(e) or "<config>" in str(e)


# ------------------------------------------------------------------ eviction vs a reference model

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _model(name: str, size: int, age: int, pinned: bool) -> InstalledModel:
    when = (NOW - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = Metadata(
        name=name,
        model_id=f"o/{name}",
        revision="main",
        commit=None,
        download_date=when,
        last_validated=None,
        download_source="t",
        total_size_bytes=size,
        file_count=1,
        last_access=when,
        pinned=pinned,
    )
    return InstalledModel(name, Path("/nonexistent") / name, meta, {"f": FileEntry(size, "0" * 64)})


models_st = st.lists(
    st.tuples(st.integers(0, 1000), st.integers(0, 10**6), st.booleans()), min_size=0, max_size=8
).map(lambda xs: [_model(f"m{i}", s, a, p) for i, (s, a, p) in enumerate(xs)])


@given(
    models_st,
    st.integers(0, 3000),
    st.integers(1, 6),
    st.integers(0, 1000),
    st.sets(st.integers(0, 7)),
)
@settings(max_examples=300, deadline=None)
def test_lru_plan_matches_reference(
    models: list[InstalledModel], max_bytes: int, max_models: int, incoming: int, in_use: set[int]
) -> None:
    protected = {f"m{i}" for i in in_use}
    try:
        plan = plan_eviction(
            models,
            CacheLimits(max_bytes=max_bytes, max_models=max_models),
            incoming_bytes=incoming,
            incoming_name="new",
            in_use=protected,
        )
    except CacheFull:
        # Reference: even evicting every unprotected model would not suffice.
        keep = [m for m in models if m.pinned or m.name in protected]
        assert (
            incoming > max_bytes
            or sum(m.size_bytes for m in keep) + incoming > max_bytes
            or len(keep) + 1 > max_models
        )
        return
    evicted = [m for m in models if m.name in plan]
    # Never a pinned or in-use model.
    assert not any(m.pinned or m.name in protected for m in evicted)
    # Limits hold afterwards.
    rest = [m for m in models if m.name not in plan]
    assert sum(m.size_bytes for m in rest) + incoming <= max_bytes
    assert len(rest) + 1 <= max_models
    # Least recently used first: each evicted model is no more recent than any evictable survivor.
    survivors = [m for m in rest if not m.pinned and m.name not in protected]
    if evicted and survivors:
        assert max(m.last_access() for m in evicted) <= min(m.last_access() for m in survivors)
    # Minimal: stopping one eviction earlier would not satisfy the limits.
    if plan:
        undo = next(m for m in models if m.name == plan[-1])
        assert (
            sum(m.size_bytes for m in rest) + undo.size_bytes + incoming > max_bytes
            or len(rest) + 2 > max_models
        )
