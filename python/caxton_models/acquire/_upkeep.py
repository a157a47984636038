"""Keeping a cache in shape: housekeeping once per manager, gc on demand,
and metadata rewritten for a model whose files verify but whose record was
lost."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from caxton_models.acquire import _versions
from caxton_models.errors import CaxtonError
from caxton_models.registry import ModelSpec
from caxton_models.store import (
    METADATA_FILE,
    InstalledModel,
    Metadata,
    format_time,
    now_utc,
    write_json_atomic,
)

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager

log = logging.getLogger("caxton_models.acquire.manager")


def rewrite_lost_metadata(mgr: ModelManager, installed: InstalledModel, spec: ModelSpec) -> None:
    """A model whose metadata was lost but whose files verify: write fresh
    metadata in place (atomic), status verified."""
    assert installed.manifest is not None
    now = format_time(now_utc())
    meta = Metadata(
        name=installed.name,
        model_id=spec.model_id,
        revision=spec.revision,
        commit=spec.revision if spec.pinned else None,
        download_date=now,
        last_validated=now,
        download_source="recovered",
        total_size_bytes=installed.files_bytes,
        file_count=len(installed.manifest),
    )
    with contextlib.suppress(OSError), mgr.cache.lock():
        write_json_atomic(installed.path / METADATA_FILE, meta.to_json())
        mgr.cache.rebuild_index()


def housekeeping(mgr: ModelManager) -> None:
    """Once per manager: reclaim stale temp files and remove long-unused models."""
    if mgr._housekept:
        return
    mgr._housekept = True
    cfg = mgr.config.cache
    try:
        mgr.cache.recover()
        mgr.cache.reclaim_temp(cfg.temp_max_age)
        if cfg.cleanup_unused_after is not None and cfg.cleanup_policy != "manual":
            mgr.cache.cleanup_unused(cfg.cleanup_unused_after, pinned_names=cfg.pinned_models)
    except (OSError, CaxtonError) as e:
        log.debug("cache housekeeping skipped: %s", e)


def gc(mgr: ModelManager, *, dry_run: bool = False) -> dict[str, list[str]]:
    """Reclaim temp files, remove unused models, enforce the limits.
    ``dry_run`` returns what would be removed and removes nothing."""
    cfg = mgr.config.cache
    out = {
        "temp": mgr.cache.reclaim_temp(cfg.temp_max_age, dry_run=dry_run),
        "unused": [],
        "evicted": [],
    }
    if cfg.cleanup_unused_after is not None:
        out["unused"] = mgr.cache.cleanup_unused(
            cfg.cleanup_unused_after, pinned_names=cfg.pinned_models, dry_run=dry_run
        )
    if cfg.cleanup_policy != "manual":
        out["evicted"] = mgr.cache.make_room(
            policy=cfg.cleanup_policy,
            max_bytes=cfg.max_size_bytes,
            max_models=cfg.max_models,
            pinned_names=cfg.pinned_models,
            dry_run=dry_run,
        )
        # A dry run still sees the unused models it would have removed first.
        out["evicted"] = [n for n in out["evicted"] if n not in out["unused"]]
    out["revisions"] = _versions.cleanup(mgr, dry_run=dry_run)
    return out
