"""Keeping a cache in shape by the config's rules: housekeeping once, gc on
demand. Every file is written by the store; this only decides what goes."""

from __future__ import annotations

import contextlib
import logging
import threading

from caxton_models.config import Config
from caxton_models.errors import CaxtonError, ModelNotFound
from caxton_models.store import CacheLimits, ModelCache

log = logging.getLogger("caxton_models.acquire.manager")


def cache_limits(config: Config) -> CacheLimits:
    """The limits ``config.cache`` holds the cache to: the one place the
    configuration's keys become the store's :class:`CacheLimits`. Pinning is
    the config's ``pinned_models`` here, never copied into a model's
    metadata, so taking a name off the list unpins it."""
    cfg = config.cache
    return CacheLimits(
        max_bytes=cfg.max_size_bytes,
        max_models=cfg.max_models,
        pinned=frozenset(cfg.pinned_models),
        policy=cfg.cleanup_policy,
    )


class Upkeep:
    """The cleanup rules of ``config.cache`` applied to ``cache``."""

    def __init__(self, cache: ModelCache, config: Config) -> None:
        self.cache = cache
        self.config = config
        self.limits = cache_limits(config)
        self._done = False
        self._mutex = threading.Lock()

    def housekeeping(self) -> None:
        """Once: reclaim stale temp files and remove long-unused models."""
        with self._mutex:
            if self._done:
                return
            self._done = True
        cfg = self.config.cache
        try:
            self.cache.recover()
            self.cache.reclaim_temp(cfg.temp_max_age)
            if cfg.cleanup_unused_after is not None and self.limits.policy != "manual":
                self.cache.cleanup_unused(cfg.cleanup_unused_after, self.limits)
        except (OSError, CaxtonError) as e:
            log.debug("cache housekeeping skipped: %s", e)

    def pin(self, name: str, pinned: bool = True) -> None:
        """Pin (or unpin) installed model ``name`` on this cache."""
        if self.cache.get(name) is None:
            raise ModelNotFound(f"model {name!r} is not installed", model=name)
        self.cache.set_pinned(name, pinned)

    def gc(self, *, dry_run: bool = False) -> dict[str, list[str]]:
        """Reclaim temp files, remove unused models and stored revisions,
        enforce the limits. ``dry_run`` returns what would be removed."""
        cfg = self.config.cache
        out = {
            "temp": self.cache.reclaim_temp(cfg.temp_max_age, dry_run=dry_run),
            "unused": [],
            "evicted": [],
        }
        if cfg.cleanup_unused_after is not None:
            out["unused"] = self.cache.cleanup_unused(
                cfg.cleanup_unused_after, self.limits, dry_run=dry_run
            )
        if self.limits.policy != "manual":
            out["evicted"] = self.cache.make_room(self.limits, dry_run=dry_run)
            # A dry run still sees the unused models it would have removed first.
            out["evicted"] = [n for n in out["evicted"] if n not in out["unused"]]
        out["revisions"] = self.cleanup_revisions(dry_run=dry_run)
        return out

    def cleanup_revisions(self, *, dry_run: bool = False) -> list[str]:
        """Remove the revisions stored beside the current ones (``name@commit``);
        after this, rollback has nothing to return to. A process that loaded
        one keeps its open files."""
        out: list[str] = []
        for name in self.cache.revision_names():
            with contextlib.suppress(CaxtonError):
                removed = self.cache.remove_revisions(name, dry_run=dry_run)
                out += [f"{name}@{key}" for key in removed]
        return out
