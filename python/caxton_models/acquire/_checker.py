"""Step 2, the cache check, and repair: quick validation (sizes and
manifest), a full one (SHA-256 of every file, and the functional test) when
``validation_interval`` has passed, and re-downloading exactly the files
that fail."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from caxton_models import metrics as _metrics
from caxton_models.acquire._downloader import Downloader
from caxton_models.acquire._network import Network
from caxton_models.acquire.validate import ValidationReport, validate_model
from caxton_models.config import Config
from caxton_models.errors import ModelNotFound
from caxton_models.registry import ModelSpec
from caxton_models.store import InstalledModel, ModelCache, format_time, now_utc, parse_time

log = logging.getLogger("caxton_models.acquire.manager")

#: The functional test a full validation runs (True: the default one; False: none).
Functional = Callable[[Path, ModelSpec], Sequence[float]] | bool | None


class Checker:
    """Validates what ``cache`` holds against its spec; repairs through
    ``downloader`` (never when ``network`` says offline: then it raises)."""

    def __init__(
        self,
        cache: ModelCache,
        config: Config,
        network: Network,
        downloader: Downloader,
        functional: Functional = True,
    ) -> None:
        self.cache = cache
        self.config = config
        self.network = network
        self.downloader = downloader
        self.functional = functional

    def matches(self, installed: InstalledModel, spec: ModelSpec) -> bool:
        """Whether ``installed`` is the revision ``spec`` asks for."""
        meta = installed.metadata
        if installed.manifest is None or meta is None:
            return installed.manifest is not None  # metadata lost: full check decides
        if meta.model_id != spec.model_id:
            return False
        if spec.pinned:
            return meta.commit == spec.revision
        return meta.revision == spec.revision or meta.commit == spec.revision

    def validate(
        self, installed: InstalledModel, spec: ModelSpec, *, force_full: bool = False
    ) -> ValidationReport:
        """Quick, or full when forced, never verified, or ``validation_interval``
        has passed; a full result is recorded in the metadata (rewritten by the
        store when it was lost and the files verify)."""
        meta = installed.metadata
        full = force_full or meta is None or meta.validation_status != "verified"
        if not full and meta is not None:
            try:
                last = parse_time(meta.last_validated) if meta.last_validated else None
            except ValueError:
                last = None
            interval = timedelta(seconds=self.config.cache.validation_interval)
            full = last is None or now_utc() - last >= interval
        mode = "full" if full else "quick"
        report = validate_model(
            installed, spec, mode=mode, functional=self.functional if full else False
        )
        _metrics.count(_metrics.VALIDATIONS, model_id=spec.model_id, mode=mode)
        if full:
            if meta is None and report.ok and installed.manifest is not None:
                self.cache.restore_metadata(
                    installed.name,
                    model_id=spec.model_id,
                    revision=spec.revision,
                    commit=spec.revision if spec.pinned else None,
                )
            else:
                status = "verified" if report.ok else "corrupt"
                now = format_time(now_utc())
                self.cache.update_metadata(
                    installed.name, last_validated=now, validation_status=status
                )
        return report

    def repair(self, spec: ModelSpec, installed: InstalledModel, report: ValidationReport) -> Path:
        """Re-download the files ``report`` found bad (all of them when the
        record of what was installed is gone). Offline: raises the report's error."""
        if self.network.offline_reason():
            report.raise_for_status()
        bad = report.bad_files
        meta = installed.metadata
        if installed.manifest is None or meta is None or meta.commit is None or not bad:
            log.warning("re-downloading all of %s (%s)", spec.name, report.summary())
            return self.downloader.download(spec, installed=None)
        log.warning("re-downloading %d corrupt file(s) of %s: %s", len(bad), spec.name, bad)
        return self.downloader.download(
            replace(spec, revision=meta.commit),
            installed=installed,
            only=bad,
            keep_revision=meta.revision,
        )

    def verify(self, name: str, spec: ModelSpec | None, *, full: bool) -> ValidationReport:
        """Validate one installed model now (a full result with a spec is recorded)."""
        installed = self.cache.get(name)
        if installed is None:
            raise ModelNotFound(f"model {name!r} is not installed in {self.cache.root}", model=name)
        if spec is not None and full:
            return self.validate(installed, spec, force_full=True)
        mode = "full" if full else "quick"
        return validate_model(installed, spec, mode=mode, functional=False)

    def validate_installed(
        self, known: Callable[[str], ModelSpec | None], *, mode: str = "quick"
    ) -> dict[str, ValidationReport]:
        """Validate every installed model against ``known(name)``'s spec (with
        none, checked on its own); failures are logged."""
        out: dict[str, ValidationReport] = {}
        for m in self.cache.installed():
            spec = known(m.name)
            if spec is None:
                out[m.name] = validate_model(m, None, mode=mode, functional=False)
            else:
                out[m.name] = self.validate(m, spec, force_full=mode == "full")
            if not out[m.name].ok:
                log.warning("%s", out[m.name].summary())
        return out
