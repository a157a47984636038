"""The manager's decisions on one model, each under the model's lock: serve
the cached copy, repair it, or install it, from the Hub or (when the network
may not be used) from the Hugging Face cache; and the explicit download,
repair and fetch-another-weights-file requests. The spec's 7 steps:

1. registry lookup      ``_specs.Specs``
2. cache check          ``_checker.Checker``: quick validation (sizes + manifest);
                        full SHA-256 when ``validation_interval`` has passed
3. repository query     ``_downloader.Downloader``: ``HubClient.resolve`` -> commit
                        + file list (sizes, LFS SHA-256), then the plan (``_plan``)
4. parallel download    ``_fetch.run``: small files first (config, tokenizer), checked,
                        then the weights; ``parallel_downloads`` at a time, into
                        ``downloads/<name>@<commit>/`` (resumable)
5. integrity validation each file verified once, as it streams (the core's
                        SHA-256 against the registry pin or the Hub's LFS
                        SHA-256, or the git blob id); formats checked
6. installation         metadata written last, directory renamed into place
7. registry update      registry.json rewritten from the model directories
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from caxton_models._bundled import bundled_dir
from caxton_models.acquire._checker import Checker
from caxton_models.acquire._downloader import Downloader
from caxton_models.acquire._network import ModelLocks, Network
from caxton_models.acquire._specs import Specs
from caxton_models.acquire._updates import UpdateWatcher
from caxton_models.acquire._upkeep import Upkeep
from caxton_models.acquire.validate import ValidationReport, validate_model
from caxton_models.config import Config
from caxton_models.errors import ModelNotFound, OfflineError, ValidationFailed
from caxton_models.registry import ModelSpec
from caxton_models.store import InstalledModel, ModelCache

log = logging.getLogger("caxton_models.acquire.manager")

Progress = Callable[[int], object] | None


class Ensurer:
    """Decides, per model, between ``checker`` (cache), ``downloader`` (Hub
    or Hugging Face cache) and ``watcher`` (update checks); ``locks`` keep two
    threads of this process off the same model."""

    def __init__(
        self,
        config: Config,
        cache: ModelCache,
        specs: Specs,
        network: Network,
        locks: ModelLocks,
        checker: Checker,
        downloader: Downloader,
        watcher: UpdateWatcher,
        upkeep: Upkeep,
    ) -> None:
        self.config = config
        self.cache = cache
        self.specs = specs
        self.network = network
        self.locks = locks
        self.checker = checker
        self.downloader = downloader
        self.watcher = watcher
        self.upkeep = upkeep

    def ensure(
        self, name: str, *, revision: str | None = None, progress: Progress = None
    ) -> tuple[Path, ModelSpec]:
        """An installed, validated copy of ``name``: (directory, spec)."""
        spec = self.specs.get(name, revision)
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
        self, spec: ModelSpec, installed: InstalledModel | None, progress: Progress
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

    def on_load_failure(
        self, name: str, error: BaseException | None = None
    ) -> tuple[Path, ModelSpec]:
        """Full validation, then re-download of exactly the bad files;
        ValidationFailed if the files are fine."""
        spec = self.specs.get(name)
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
        """``name`` again at its installed commit, running from ``weights``."""
        spec = self.specs.get(name)
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

    def download(
        self,
        name: str,
        *,
        revision: str | None = None,
        force: bool = False,
        progress: Progress = None,
    ) -> Path:
        """Steps 1-7; without ``force`` a valid cached copy, with no network call."""
        spec = self.specs.get(name, revision)
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
        """Full validation, re-download of the files that fail; the final report."""
        spec = self.specs.get(name)
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
