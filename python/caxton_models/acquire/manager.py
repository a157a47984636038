"""ModelManager: the spec's 7-step download process, and the cache policies,
as a facade. It builds each collaborator from what that one needs and
delegates: ``_ensure.Ensurer`` (the order of the steps for one model, listed
there), ``_specs``, ``_checker``, ``_downloader``, ``_network`` (offline state
and the Hub client, per-model locks), ``_versions``, ``_updates`` (background
checks) and ``_upkeep`` (cleanup rules). Offline (``CAXTON_OFFLINE`` /
``HF_HUB_OFFLINE`` / ``download.enabled: false``) means no HubClient is ever
built. A verified cached model loads with no network call until
``update_check_interval`` has passed; a failing update check (429, 5xx,
timeout) is logged, never raised.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from caxton_models import metrics as _metrics
from caxton_models.acquire._checker import Checker, Functional
from caxton_models.acquire._downloader import Downloader
from caxton_models.acquire._ensure import Ensurer
from caxton_models.acquire._fetch import HubLike
from caxton_models.acquire._install import install_spec
from caxton_models.acquire._network import ModelLocks, Network
from caxton_models.acquire._offloop import off_loop
from caxton_models.acquire._specs import Specs
from caxton_models.acquire._updates import UpdateWatcher
from caxton_models.acquire._upkeep import Upkeep
from caxton_models.acquire._versions import ModelVersion, UpdateResult, Versions
from caxton_models.acquire.validate import ValidationReport
from caxton_models.config import Config, load_config
from caxton_models.registry import ModelSpec, Registry
from caxton_models.store import CacheLimits, InstalledModel, ModelCache

__all__ = ["ModelManager", "default_manager"]

_default: ModelManager | None = None
_default_lock = threading.Lock()


def reset_default() -> None:
    """Forget the process-wide manager: the next one reads caxton.yaml again."""
    global _default
    with _default_lock:
        _default = None


def default_manager() -> ModelManager:
    """The process-wide manager for ``caxton_models.load`` (config read once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelManager()
        return _default


class ModelManager:
    """Registry + cache + hub. Thread-safe; one per process is typical."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        registry: Registry | None = None,
        cache: ModelCache | None = None,
        hub: HubLike | None = None,
        hub_factory: Callable[..., HubLike] | None = None,
        functional: Functional = True,
    ) -> None:
        self.config = cfg = config if config is not None else load_config()
        where = str(cfg.source) if cfg.source else "caxton.yaml"
        self.registry = registry or Registry.from_config(cfg.models, where=where)
        self.cache = cache or ModelCache(cfg.cache.directory)
        _metrics.watch_cache(self.cache)
        self.network = Network(cfg, hub=hub, factory=hub_factory)
        self.locks = ModelLocks()
        self.specs = Specs(self.registry, self.cache, self.network)
        self.downloader = Downloader(self.cache, cfg, self.network)
        self.checker = Checker(self.cache, cfg, self.network, self.downloader, functional)
        self.versions = Versions(
            self.cache, cfg, self.specs, self.network, self.locks, self.downloader, functional
        )
        self.watcher = UpdateWatcher(cfg, self.network, self.versions)
        self.upkeep = Upkeep(self.cache, cfg)
        self.ensurer = Ensurer(
            cfg, self.cache, self.specs, self.network, self.locks,
            self.checker, self.downloader, self.watcher, self.upkeep,
        )  # fmt: skip
        if cfg.cache.validation_on_startup:
            self.validate_installed()

    @property
    def hub(self) -> HubLike:
        return self.network.hub

    def spec(self, name: str, revision: str | None = None) -> ModelSpec:
        """Step 1: the registry entry, or one described from a Hub repo id."""
        return self.specs.get(name, revision)

    def register(self, spec: ModelSpec | str, entry: Mapping[str, Any] | None = None) -> ModelSpec:
        """Add a model through the API: a :class:`ModelSpec`, or a name plus the
        same mapping ``caxton.yaml`` takes under ``models:``."""
        return self.specs.register(spec, entry)

    def ensure(
        self,
        name: str,
        *,
        revision: str | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> tuple[Path, ModelSpec]:
        """An installed, validated copy of ``name``: downloaded if needed and
        allowed (``progress(delta_bytes)`` while it is). Returns (directory, spec)."""
        return self.ensurer.ensure(name, revision=revision, progress=progress)

    async def aensure(
        self,
        name: str,
        *,
        revision: str | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> tuple[Path, ModelSpec]:
        """:meth:`ensure` for asyncio code: the work runs on a worker thread,
        so the event loop keeps running; cancelling the task stops a download
        at its next progress tick (the bytes so far are kept for a resume)."""
        return await off_loop(
            lambda tick: self.ensure(name, revision=revision, progress=tick), progress
        )

    async def adownload(
        self,
        name: str,
        *,
        revision: str | None = None,
        force: bool = False,
        progress: Callable[[int], object] | None = None,
    ) -> Path:
        """:meth:`download` for asyncio code (see :meth:`aensure`)."""
        return await off_loop(
            lambda tick: self.download(name, revision=revision, force=force, progress=tick),
            progress,
        )

    def on_load_failure(
        self, name: str, error: BaseException | None = None
    ) -> tuple[Path, ModelSpec]:
        """Called when loading an installed model failed: full validation, then
        re-download of exactly the bad files. Raises ValidationFailed if the
        files are fine (the failure is not the cache's)."""
        return self.ensurer.on_load_failure(name, error)

    def fetch_weights(self, name: str, weights: str) -> tuple[Path, ModelSpec]:
        """Install ``name`` again at its installed commit, running from
        ``weights``, another of its registry weights files (the spec's "try
        alternative model formats": ``model.safetensors`` when ONNX Runtime
        refuses the repository's ONNX export). Unchanged files are kept
        (hard links), so only ``weights`` is fetched."""
        return self.ensurer.fetch_weights(name, weights)

    def download(
        self,
        name: str,
        *,
        revision: str | None = None,
        force: bool = False,
        progress: Callable[[int], object] | None = None,
    ) -> Path:
        """Steps 1-7 for ``name``: returns the installed directory. Without
        ``force``, a valid cached copy is returned with no network call."""
        return self.ensurer.download(name, revision=revision, force=force, progress=progress)

    def repair(self, name: str) -> ValidationReport:
        """Full validation; re-download exactly the files that fail. Returns the
        report of the final state."""
        return self.ensurer.repair(name)

    @property
    def limits(self) -> CacheLimits:
        """What this manager's config holds the cache to (limits, policy, the
        config's pinned models); ``limits.keeps(m)`` says whether ``m`` is pinned."""
        return self.upkeep.limits

    def gc(self, *, dry_run: bool = False) -> dict[str, list[str]]:
        """Reclaim temp files, remove unused models and stored revisions, enforce
        the limits. ``dry_run`` returns what would be removed and removes nothing."""
        return self.upkeep.gc(dry_run=dry_run)

    def validate_installed(self, *, mode: str = "quick") -> dict[str, ValidationReport]:
        """Validate every installed model (``validation_on_startup``)."""
        return self.checker.validate_installed(self.specs.known, mode=mode)

    def installed(self) -> list[InstalledModel]:
        return self.cache.installed()

    def verify(self, name: str, *, full: bool = False) -> ValidationReport:
        """Validate one installed model now: quick (existence, sizes, manifest,
        formats) or full (SHA-256 of every file plus the functional test), and
        record a full result in its metadata."""
        return self.checker.verify(name, self.specs.known(name), full=full)

    def remove(self, name: str, *, force: bool = False) -> bool:
        return self.cache.remove(name, force=force)

    def version(self, name: str, *, check: bool = False) -> ModelVersion:
        return self.versions.version(name, check=check)

    def update(self, name: str, *, check_only: bool = False, switch: bool = True) -> UpdateResult:
        return self.versions.update(name, check_only=check_only, switch=switch)

    def rollback(self, name: str) -> InstalledModel:
        return self.versions.rollback(name)

    def join_updates(self, timeout: float | None = None) -> None:
        """Wait for the background update checks this manager started."""
        self.watcher.join(timeout)

    def pin(self, name: str, pinned: bool = True) -> None:
        """Pin (or unpin) ``name`` on this cache, whatever the config says. A
        model the config's ``pinned_models`` lists stays pinned while it is
        listed: unpinning here does not override the config."""
        self.upkeep.pin(name, pinned)

    def install_from_dir(
        self, name: str, src_dir: str | os.PathLike[str], **kw: Any
    ) -> InstalledModel:
        """Install a folder as registry model ``name`` (checked against the
        registry's checksums and required files)."""
        return install_spec(self.cache, self.config, name, self.spec(name), src_dir, **kw)
