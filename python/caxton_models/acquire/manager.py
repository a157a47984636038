"""ModelManager: the spec's 7-step download process, and the cache policies.

1. registry lookup      ``_specs.Specs``
2. cache check          ``_checker.Checker``: quick validation (sizes + manifest);
                        full SHA-256 when ``validation_interval`` has passed
3. repository query     ``_downloader.Downloader``: ``HubClient.resolve`` -> commit
                        + file list (sizes, LFS SHA-256), then the plan (``_plan``)
4. parallel download    ``_fetch.run``: small files first (config, tokenizer), checked, then the
                        weights; ``parallel_downloads`` at a time, into
                        ``downloads/<name>@<commit>/`` (resumable)
5. integrity validation each file verified once, as it streams (the core's
                        SHA-256 against the registry pin or the Hub's LFS
                        SHA-256, or the git blob id); formats checked
6. installation         metadata written last, directory renamed into place
7. registry update      registry.json rewritten from the model directories

The manager is a facade: it builds each collaborator from what that one
needs (``_network``: offline state and the Hub client, per-model locks;
``_versions``; ``_updates``: background checks; ``_upkeep``: cleanup rules)
and decides only the order. Offline (``CAXTON_OFFLINE`` / ``HF_HUB_OFFLINE`` /
``download.enabled: false``) means no HubClient is ever built. A verified
cached model loads with no network call until ``update_check_interval`` has
passed; a failing update check (429, 5xx, timeout) is logged, never raised.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from caxton_models import metrics as _metrics
from caxton_models._bundled import bundled_dir
from caxton_models.acquire._checker import Checker, Functional
from caxton_models.acquire._downloader import Downloader
from caxton_models.acquire._fetch import HubLike
from caxton_models.acquire._install import install_spec
from caxton_models.acquire._network import ModelLocks, Network
from caxton_models.acquire._offloop import off_loop
from caxton_models.acquire._specs import Specs
from caxton_models.acquire._updates import UpdateWatcher
from caxton_models.acquire._upkeep import Upkeep
from caxton_models.acquire._versions import ModelVersion, UpdateResult, Versions
from caxton_models.acquire.validate import ValidationReport, validate_model
from caxton_models.config import Config, load_config
from caxton_models.errors import ModelNotFound, OfflineError, ValidationFailed
from caxton_models.registry import ModelSpec, Registry
from caxton_models.store import CacheLimits, InstalledModel, ModelCache

__all__ = ["ModelManager", "default_manager"]

log = logging.getLogger("caxton_models.acquire.manager")

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

    # ------------------------------------------------------------------ ensure

    def ensure(
        self,
        name: str,
        *,
        revision: str | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> tuple[Path, ModelSpec]:
        """An installed, validated copy of ``name``: downloaded if needed and
        allowed (``progress(delta_bytes)`` while it is). Returns (directory, spec)."""
        spec = self.spec(name, revision)
        if spec.bundled:
            return bundled_dir(spec.name), spec
        if self.config.cache.bundled_models_only:
            raise OfflineError(
                f"model {spec.name!r} refused: memory.model_cache.bundled_models_only is true "
                "(only bundled models, e.g. 'bundled-mini', may be used). Set it to false to use "
                "installed models.",
                model=spec.name,
            )
        self.upkeep.housekeeping()
        with self.locks.hold(spec.name):
            installed = self.cache.get(spec.name)
            if installed is not None and self.checker.matches(installed, spec):
                path = self._from_cache(installed, spec)
            else:
                path = self._install(spec, installed, progress)
            self.cache.touch(spec.name)
            return path, spec

    def _from_cache(self, installed: InstalledModel, spec: ModelSpec) -> Path:
        """Step 2 passed: the cached copy (an update check may start), or its repair."""
        report = self.checker.validate(installed, spec)
        if report.ok:
            return self.watcher.maybe_start(installed, spec)
        log.warning("%s", report.summary())
        self.checker.repair(spec, installed, report)
        return self.cache.model_dir(spec.name)

    def _install(
        self,
        spec: ModelSpec,
        installed: InstalledModel | None,
        progress: Callable[[int], object] | None,
    ) -> Path:
        """Steps 3-7, from the Hub, or from the Hugging Face cache when the
        network may not be used."""
        reason = self.network.offline_reason()
        if reason is None and not self.config.cache.auto_download:
            reason = "automatic downloads are off (memory.model_cache.auto_download: false)"
        if reason is None:
            return self.downloader.download(spec, installed=installed, progress=progress)
        revision = spec.revision or "main"
        hf = self.specs.hf_cache_for(spec.model_id, revision)
        if hf is None:
            raise OfflineError(
                f"model {spec.name!r} ({spec.model_id}) is not in the cache at "
                f"{self.cache.root} and {reason}. Install it with 'caxton model install "
                f"--model-id {spec.name} --source DIR', or allow downloads.",
                model=spec.name,
                reason=reason,
            )
        info = hf.resolve(spec.model_id, revision)  # no network at all
        return self.downloader.download(
            spec, installed=installed, info=info, progress=progress, hub=hf
        )

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
        spec = self.spec(name)
        with self.locks.hold(spec.name):
            installed = self.cache.get(spec.name)
            if installed is None:
                return self.ensure(name)
            report = self.checker.validate(installed, spec, force_full=True)
            if report.ok:
                raise ValidationFailed(
                    f"model {spec.name!r} failed to load ({error}), but its files verify; "
                    "the problem is not in the cache",
                    model=spec.name,
                )
            self.checker.repair(spec, installed, report)
            return self.cache.model_dir(spec.name), spec

    def fetch_weights(self, name: str, weights: str) -> tuple[Path, ModelSpec]:
        """Install ``name`` again at its installed commit, running from
        ``weights``, another of its registry weights files (the spec's "try
        alternative model formats": ``model.safetensors`` when ONNX Runtime
        refuses the repository's ONNX export). Unchanged files are kept
        (hard links), so only ``weights`` is fetched."""
        spec = self.spec(name)
        if weights not in spec.weights:
            raise ModelNotFound(
                f"model {spec.name!r} lists no {weights} among its weights "
                f"({', '.join(spec.weights)})",
                model=spec.name,
                files=[weights],
            )
        with self.locks.hold(spec.name):
            installed = self.cache.get(spec.name)
            meta = installed.metadata if installed is not None else None
            if installed is None or meta is None or meta.commit is None:
                raise ModelNotFound(
                    f"model {spec.name!r} is not installed at a known commit", model=spec.name
                )
            log.warning("fetching %s of %s@%s to run from", weights, spec.name, meta.commit)
            at_commit = replace(spec, revision=meta.commit, weights=(weights,))
            self.downloader.download(at_commit, installed=installed, keep_revision=meta.revision)
            return self.cache.model_dir(spec.name), spec

    # ------------------------------------------------------------------ download, repair

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
        spec = self.spec(name, revision)
        if spec.bundled:
            return self.ensure(name)[0]
        reason = self.network.offline_reason()
        if reason:
            raise OfflineError(
                f"cannot download {spec.name!r}: {reason}", model=spec.name, reason=reason
            )
        with self.locks.hold(spec.name):
            installed = self.cache.get(spec.name)
            if not force and installed is not None and self.checker.matches(installed, spec):
                report = self.checker.validate(installed, spec)
                if report.ok:
                    return installed.path
                self.checker.repair(spec, installed, report)
                return self.cache.model_dir(spec.name)
            return self.downloader.download(
                spec, installed=installed, progress=progress, fresh=force
            )

    def repair(self, name: str) -> ValidationReport:
        """Full validation; re-download exactly the files that fail. Returns the
        report of the final state."""
        spec = self.spec(name)
        with self.locks.hold(spec.name):
            installed = self.cache.get(spec.name)
            if installed is None:
                raise ModelNotFound(f"model {name!r} is not installed", model=name)
            report = self.checker.validate(installed, spec, force_full=True)
            if report.ok:
                return report
            self.checker.repair(spec, installed, report)
            fresh = self.cache.get(spec.name)
            assert fresh is not None
            return validate_model(fresh, spec, mode="full", functional=False)

    # ------------------------------------------------------------------ the cache

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
        out: dict[str, ValidationReport] = {}
        for m in self.cache.installed():
            spec = self.specs.known(m.name)
            if spec is None:
                out[m.name] = validate_model(m, None, mode=mode, functional=False)
            else:
                out[m.name] = self.checker.validate(m, spec, force_full=mode == "full")
            if not out[m.name].ok:
                log.warning("%s", out[m.name].summary())
        return out

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
        if self.cache.get(name) is None:
            raise ModelNotFound(f"model {name!r} is not installed", model=name)
        self.cache.set_pinned(name, pinned)

    def install_from_dir(
        self, name: str, src_dir: str | os.PathLike[str], **kw: Any
    ) -> InstalledModel:
        """Install a folder as registry model ``name`` (checked against the
        registry's checksums and required files)."""
        return install_spec(self.cache, self.config, name, self.spec(name), src_dir, **kw)
