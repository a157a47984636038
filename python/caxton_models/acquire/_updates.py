"""Update checks of cached models (the spec's update_check_interval,
auto_update): off the path of a load the cache can serve."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from caxton_models import metrics as _metrics
from caxton_models.errors import CaxtonError
from caxton_models.registry import ModelSpec
from caxton_models.store import InstalledModel, format_time, now_utc, parse_time

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager

log = logging.getLogger("caxton_models.acquire.manager")


def maybe_update(mgr: ModelManager, installed: InstalledModel, spec: ModelSpec) -> Path:
    """The cached copy, or a newer revision when ``update_check_interval`` has
    passed, the check finds one and ``auto_update`` allows it. A failing check
    (429, 5xx, timeout) is logged and counted, never raised."""
    meta = installed.metadata
    if spec.pinned or meta is None or mgr._offline_reason():
        return installed.path
    last_raw = meta.last_update_check or meta.download_date
    try:
        last = parse_time(last_raw)
    except ValueError:
        last = None
    interval = timedelta(seconds=mgr.config.cache.update_check_interval)
    if last is not None and now_utc() - last < interval:
        return installed.path
    try:
        # A short, single-attempt check: a slow or rate-limited Hub must
        # not delay a load that the cache can serve.
        timeout = min(10.0, mgr.config.download.request_timeout)
        checker = mgr._hub or mgr._make_hub(retries=1, timeout=timeout)
        info = checker.resolve(spec.model_id, spec.revision)
    except Exception as e:  # any failure of the check leaves the cached copy in use
        _metrics.count(_metrics.UPDATE_CHECKS, model_id=spec.model_id, result="failed")
        log.warning("update check for %s failed (%s); using the cached copy", spec.name, e)
        mgr.cache.update_metadata(spec.name, last_update_check=format_time(now_utc()))
        return installed.path
    _metrics.count(_metrics.UPDATE_CHECKS, model_id=spec.model_id, result="ok")
    mgr.cache.update_metadata(spec.name, last_update_check=format_time(now_utc()))
    if info.commit == meta.commit:
        return installed.path
    if not mgr.config.cache.auto_update:
        log.info(
            "%s: a newer revision %s is available (cached %s); run 'caxton model download "
            "%s --force' or set memory.model_cache.auto_update: true",
            spec.name,
            info.commit,
            meta.commit,
            spec.name,
        )
        return installed.path
    try:
        return mgr._download(spec, installed=None, info=info)
    except CaxtonError as e:
        log.warning("update of %s failed (%s); using the cached copy", spec.name, e)
        return installed.path
