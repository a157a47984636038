"""One model's download as the manager decided it: repository query (step 3),
plan, then :func:`_fetch.run` (fetch, verify, stage, publish: steps 4 to 7);
with the download metrics and the consecutive-failure alert around it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from caxton_models import metrics as _metrics
from caxton_models.acquire import _fetch
from caxton_models.acquire._fetch import HubLike
from caxton_models.acquire._network import Network
from caxton_models.acquire._plan import expected_digests, plan_files
from caxton_models.config import Config
from caxton_models.errors import CaxtonError, InvalidModelFormat, download_status
from caxton_models.registry import ModelSpec
from caxton_models.store import InstalledModel, ModelCache, is_hex

log = logging.getLogger("caxton_models.acquire.manager")


class Downloader:
    """Downloads into ``cache`` through ``network``'s client (or a source
    passed per call, such as the Hugging Face cache)."""

    def __init__(self, cache: ModelCache, config: Config, network: Network) -> None:
        self.cache = cache
        self.config = config
        self.network = network
        self._failures: dict[str, int] = {}  # consecutive failed downloads, per model
        self._mutex = threading.Lock()

    def download(
        self,
        spec: ModelSpec,
        *,
        installed: InstalledModel | None,
        info: Any = None,
        only: Sequence[str] | None = None,
        keep_revision: str | None = None,
        progress: Callable[[int], object] | None = None,
        fresh: bool = False,
        switch: bool = True,
        hub: HubLike | None = None,
    ) -> Path:
        """Install ``spec`` (``only``: just these files, at ``info``'s commit;
        ``switch`` False: stage it beside the current revision). Returns the
        folder published."""
        started = time.monotonic()
        track = self.config.monitoring.track_download_metrics
        try:
            job = self._job(
                spec, installed, info, hub or self.network.hub,
                revision=keep_revision or spec.revision, only=only, progress=progress,
                fresh=fresh, switch=switch,
            )  # fmt: skip
            path = _fetch.run(job)
        except BaseException as e:
            if track:
                elapsed = time.monotonic() - started
                _metrics.observe_download(spec.model_id, download_status(e), elapsed)
            # Integrity checks of fresh bytes are validation too (step 5), and
            # they raise here rather than returning a report.
            if isinstance(e, CaxtonError) and e.failure_type is not None:
                _metrics.count_validation_failure(spec.model_id, e.failure_type)
            self._failed(spec, e)
            raise
        with self._mutex:
            self._failures.pop(spec.name, None)
        elapsed = time.monotonic() - started
        if track:
            _metrics.observe_download(spec.model_id, "ok", elapsed)
        if self.config.monitoring.performance_logging:
            log.info("downloaded %s in %.2f s", spec.name, elapsed)
        return path

    def _job(
        self,
        spec: ModelSpec,
        installed: InstalledModel | None,
        info: Any,
        hub: HubLike,
        **options: Any,
    ) -> _fetch.Job:
        """Step 3 (when ``info`` is not known yet) and the plan; ``options``
        are the rest of the :class:`_fetch.Job`."""
        allow_pickle = self.config.download.allow_pickle
        spec.check_safe(allow_pickle)
        if info is None:
            info = hub.resolve(spec.model_id, spec.revision)
        commit = str(info.commit)
        if not is_hex(commit, 40):
            raise InvalidModelFormat(f"the Hub gave {spec.model_id} a malformed commit {commit!r}")
        files = plan_files(spec, info, allow_pickle=allow_pickle)
        return _fetch.Job(
            cache=self.cache,
            config=self.config,
            hub=hub,
            name=spec.name,
            model_id=spec.model_id,
            info=info,
            files=files,
            expected=expected_digests(spec, files, installed, commit),
            installed=installed,
            weights=spec.weights,
            source=_host(getattr(info, "endpoint", "")),
            **options,
        )

    def _failed(self, spec: ModelSpec, error: BaseException) -> None:
        """Counts a failed download; with ``monitoring.alert_on_failures``, logs
        one error when ``alert_threshold`` failures in a row are reached (a
        success resets the count). A cancel is not a failure of the model."""
        if isinstance(error, KeyboardInterrupt):
            return
        with self._mutex:
            n = self._failures[spec.name] = self._failures.get(spec.name, 0) + 1
        mon = self.config.monitoring
        if mon.alert_on_failures and n == mon.alert_threshold:
            log.error(
                "ALERT: %d downloads of %s (%s) in a row have failed; the last: %s",
                n,
                spec.name,
                spec.model_id,
                error,
            )


def _host(endpoint: str) -> str:
    try:
        host = urlsplit(endpoint).hostname
    except ValueError:
        host = None
    return host or "unknown"
