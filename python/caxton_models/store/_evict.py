"""Which models to evict: a pure plan over what is installed."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from caxton_models.errors import CacheFull
from caxton_models.store._limits import CacheLimits
from caxton_models.store._records import InstalledModel


def evictable(model: InstalledModel, limits: CacheLimits, in_use: Collection[str]) -> bool:
    """Whether eviction or cleanup may remove ``model``: not pinned (by
    ``limits``' rule), not in use, not written by a newer caxton-models."""
    return not (limits.keeps(model) or model.read_only or model.name in in_use)


def plan_eviction(
    models: Iterable[InstalledModel],
    limits: CacheLimits,
    *,
    incoming_bytes: int = 0,
    incoming_name: str | None = None,
    free_bytes: int = 0,
    in_use: Collection[str] = (),
) -> list[str]:
    """Which models to evict so that, after adding one of ``incoming_bytes``,
    the cache is within ``limits.max_bytes``/``limits.max_models`` and at least
    ``free_bytes`` are released. Pure. Raises :class:`CacheFull` (before
    anything is evicted) when that is impossible without touching a protected
    (pinned, in-use or read-only) model, or when the policy is ``manual``."""
    max_bytes, max_models = limits.max_bytes, limits.max_models
    present = [m for m in models if m.name != incoming_name]
    total = sum(m.size_bytes for m in present) + incoming_bytes
    count = len(present) + (1 if incoming_name is not None else 0)

    def satisfied(t: int, c: int, freed: int) -> bool:
        return (
            (max_bytes is None or t <= max_bytes)
            and (max_models is None or c <= max_models)
            and freed >= free_bytes
        )

    if satisfied(total, count, 0):
        return []
    if max_bytes is not None and incoming_bytes > max_bytes:
        raise CacheFull(
            f"the model needs {incoming_bytes} bytes but max_size_gb allows only {max_bytes}: "
            "raise memory.model_cache.max_size_gb",
            required=incoming_bytes,
            limit=max_bytes,
        )
    if limits.policy == "manual":
        raise CacheFull(
            "the model cache is full and cleanup_policy is 'manual': remove models with "
            "'caxton model remove', or raise max_size_gb / max_models",
            required=incoming_bytes,
            limit=max_bytes,
        )
    candidates = [m for m in present if evictable(m, limits, in_use)]
    if limits.policy == "fifo":
        candidates.sort(key=lambda m: (m.installed_at(), m.name))
    else:  # lru; ties broken by how often it was used, then by name
        candidates.sort(
            key=lambda m: (m.last_access(), m.metadata.access_count if m.metadata else 0, m.name)
        )
    chosen: list[str] = []
    freed = 0
    for m in candidates:
        if satisfied(total, count, freed):
            break
        chosen.append(m.name)
        total -= m.size_bytes
        freed += m.size_bytes
        count -= 1
    if not satisfied(total, count, freed):
        kept = sorted(m.name for m in present if not evictable(m, limits, in_use))
        raise CacheFull(
            "cannot make room in the model cache without evicting pinned or in-use models "
            f"(need {incoming_bytes} bytes, limit {max_bytes} bytes / {max_models} models; "
            f"kept: {', '.join(kept) or 'none'}): "
            "unpin or remove a model, or raise the limits",
            required=incoming_bytes,
            limit=max_bytes,
        )
    return chosen
