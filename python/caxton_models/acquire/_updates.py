"""Update checks of cached models (``update_check_interval``,
``update_strategy``): never on the path of a load the cache can serve.

When the interval has passed, a load starts one background thread per model
and returns the cached copy at once. The thread asks the Hub (one short,
single-attempt request: a slow or rate-limited Hub delays nothing), records
what it found (``caxton model info`` shows ``update_available``) and then,
by strategy: ``notify`` logs it; ``automatic`` stages, validates and
switches to the new revision, unless it embeds a few probe texts differently
from the current one (the space moved: it stays staged and a migration is
needed, see ``_probe``); ``staged`` stages and validates it, leaving the
switch to the operator (``caxton model update``); ``security`` does what
``automatic`` does when the registry flags the model ``security_update``,
else notifies; ``manual`` never checks. A failing check (429, 5xx, timeout)
is logged and counted, never raised.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

from caxton_models.acquire._network import Network
from caxton_models.acquire._versions import Versions, wants_update
from caxton_models.config import Config
from caxton_models.registry import ModelSpec
from caxton_models.store import InstalledModel, now_utc, parse_time

log = logging.getLogger("caxton_models.acquire.manager")


class UpdateWatcher:
    """Starts the background checks the config asks for, through ``versions``."""

    def __init__(self, config: Config, network: Network, versions: Versions) -> None:
        self.config = config
        self.network = network
        self.versions = versions
        self._threads: dict[str, threading.Thread] = {}
        self._mutex = threading.Lock()

    def due(self, installed: InstalledModel, spec: ModelSpec) -> bool:
        """Whether a load of ``installed`` should start an update check."""
        meta = installed.metadata
        strategy = self.config.cache.update_strategy
        if strategy == "manual" or spec.pinned or meta is None or self.network.offline_reason():
            return False
        try:
            last = parse_time(meta.last_update_check or meta.download_date)
        except ValueError:
            return True
        return now_utc() - last >= timedelta(seconds=self.config.cache.update_check_interval)

    def maybe_start(self, installed: InstalledModel, spec: ModelSpec) -> Path:
        """The cached copy, always; starts a background update check when due
        (one per model at a time)."""
        if self.due(installed, spec):
            with self._mutex:
                running = self._threads.get(spec.name)
                if running is None or not running.is_alive():
                    t = threading.Thread(
                        target=self.check, args=(spec,), daemon=True,
                        name=f"caxton-update-{spec.name}",
                    )  # fmt: skip
                    self._threads[spec.name] = t
                    t.start()
        return installed.path

    def join(self, timeout: float | None = None) -> None:
        """Wait for the checks started so far."""
        with self._mutex:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)

    def check(self, spec: ModelSpec) -> None:
        """One check, and what the strategy does with its answer. Never raises."""
        strategy = self.config.cache.update_strategy
        try:
            hub = self.network.check_client()
            v = self.versions.version(spec.name, check=True, hub=hub)
        except Exception as e:  # any failure of the check leaves the cached copy in use
            log.warning("update check for %s failed (%s); using the cached copy", spec.name, e)
            return
        if not v.update_available:
            return
        action = wants_update(strategy, spec)
        if action is None:
            log.info(
                "%s: a newer revision %s is available (cached %s); run 'caxton model update %s' "
                "or set memory.model_cache.update_strategy",
                spec.name, v.latest_commit, v.current_commit, spec.name,
            )  # fmt: skip
            return
        try:
            # The download uses the shared client (its retries and time limit).
            self.versions.update(spec.name, switch=action == "switch", automatic=True)
        except Exception as e:
            log.warning("update of %s failed (%s); using the cached copy", spec.name, e)
