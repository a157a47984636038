"""ModelManager: the spec's 7-step download process, and the cache policies.

1. registry lookup      :meth:`ModelManager.spec`
2. cache check          quick validation (sizes + manifest); full SHA-256 when
                        ``validation_interval`` has passed
3. repository query     ``HubClient.resolve`` -> commit + file list (sizes, LFS SHA-256)
4. parallel download    small files first (config, tokenizer), checked, then the
                        weights; ``parallel_downloads`` at a time, into
                        ``downloads/<name>@<commit>/`` (resumable)
5. integrity validation each file verified once, as it streams (the core's
                        SHA-256 against the registry pin or the Hub's LFS
                        SHA-256, or the git blob id); formats checked
6. installation         metadata written last, directory renamed into place
7. registry update      registry.json rewritten from the model directories

Offline (``CAXTON_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``download.enabled: false``)
means no HubClient is ever built, so no network call can happen. A verified
cached model loads with no network call until ``update_check_interval`` has
passed; a failing update check (429, 5xx, timeout) is logged, never raised.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from caxton_models import metrics as _metrics
from caxton_models._bundled import bundled_dir
from caxton_models.acquire import _fetch, _upkeep, _versions
from caxton_models.acquire._adhoc import cache_name, describe, describe_remote, is_repo_id
from caxton_models.acquire._fetch import HubLike
from caxton_models.acquire._hfcache import HfCacheSource
from caxton_models.acquire._install import install_from_dir
from caxton_models.acquire._offloop import off_loop
from caxton_models.acquire._plan import expected_digests, plan_files
from caxton_models.acquire._updates import maybe_update
from caxton_models.acquire._versions import ModelVersion, UpdateResult
from caxton_models.acquire.validate import ValidationReport, validate_model
from caxton_models.config import Config, hf_hub_cache_dir, load_config
from caxton_models.errors import (
    CaxtonError,
    InvalidModelFormat,
    ModelNotFound,
    OfflineError,
    ValidationFailed,
    download_status,
)
from caxton_models.registry import ModelSpec, Registry, spec_from_mapping
from caxton_models.store import (
    InstalledModel,
    ModelCache,
    format_time,
    is_hex,
    now_utc,
    parse_time,
)

__all__ = ["ModelManager", "default_manager"]

log = logging.getLogger("caxton_models.acquire.manager")
_T = TypeVar("_T")


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
        functional: Callable[[Path, ModelSpec], Sequence[float]] | bool | None = True,
    ) -> None:
        self.config = config if config is not None else load_config()
        where = str(self.config.source) if self.config.source else "caxton.yaml"
        self.registry = registry or Registry.from_config(self.config.models, where=where)
        self.cache = cache or ModelCache(self.config.cache.directory)
        self._hub = hub
        self._hub_factory = hub_factory
        self.functional = functional
        _metrics.watch_cache(self.cache)
        self._model_locks: dict[str, threading.Lock] = {}
        self._locks_mutex = threading.Lock()
        self._failures: dict[str, int] = {}  # consecutive failed downloads, per model
        self._housekept = False
        self._update_threads: dict[str, threading.Thread] = {}  # background update checks
        if self.config.cache.validation_on_startup:
            self.validate_installed()

    # ------------------------------------------------------------------ hub

    def _offline_reason(self) -> str | None:
        if self.config.offline:
            return "offline mode is on (CAXTON_OFFLINE / HF_HUB_OFFLINE)"
        if not self.config.download.enabled:
            return "downloads are disabled (download.enabled: false)"
        return None

    def _make_hub(self, **overrides: Any) -> HubLike:
        reason = self._offline_reason()
        if reason:  # never even construct a client: zero network calls
            raise OfflineError(f"no network access: {reason}", reason=reason)
        dl = self.config.download
        kwargs: dict[str, Any] = {
            "token": self.config.token,
            "offline": False,
            "timeout": dl.request_timeout,
            "retries": dl.retry_attempts,
            "retry_delay": dl.retry_delay_ms / 1000.0,
            # Always passed: the config's default is the engine's, stated.
            "chunk_size": dl.chunk_size_kb * 1024,
        }
        if dl.connection_budget is not None:
            kwargs["connections"] = dl.connection_budget
        kwargs.update(overrides)
        if self._hub_factory is not None:
            return self._hub_factory(list(self.config.endpoints), **kwargs)
        from caxton_models.acquire.hub import HubClient

        return HubClient(list(self.config.endpoints), **kwargs)  # type: ignore[no-any-return,unused-ignore]

    @property
    def hub(self) -> HubLike:
        if self._hub is None:
            self._hub = self._make_hub()
        elif self._offline_reason():
            raise OfflineError(f"no network access: {self._offline_reason()}")
        return self._hub

    # ------------------------------------------------------------------ registry

    def spec(self, name: str, revision: str | None = None) -> ModelSpec:
        """Step 1: the registry entry (``ModelNotFound`` with suggestions), or,
        for a Hub repo id the registry does not know (``org/name``), a spec
        made from the repository's own files, registered for next time."""
        try:
            spec = self.registry.get(name)
        except ModelNotFound:
            if not is_repo_id(name):
                raise
            spec = self._describe(name, revision or "main")
            self.registry.add(spec)
        return replace(spec, revision=revision) if revision else spec

    def _describe(self, repo_id: str, revision: str) -> ModelSpec:
        installed = self.cache.get(cache_name(repo_id))
        meta = installed.metadata if installed else None
        usable = meta is not None and (self._offline_reason() or meta.revision == revision)
        if installed is not None and meta is not None and meta.model_id == repo_id and usable:
            return describe(repo_id, meta.revision, installed.path, installed.manifest or {})
        hf = self._hf_cache_for(repo_id, revision) if self._offline_reason() else None
        return describe_remote(hf or self.hub, repo_id, revision)

    def _hf_cache_for(self, repo_id: str, revision: str) -> HfCacheSource | None:
        """The Hugging Face cache, when it holds ``repo_id`` at ``revision``."""
        source = HfCacheSource(hf_hub_cache_dir())
        return source if source.has(repo_id, revision) else None

    def register(self, spec: ModelSpec | str, entry: Mapping[str, Any] | None = None) -> ModelSpec:
        """Add a model through the API: a :class:`ModelSpec`, or a name plus the
        same mapping ``caxton.yaml`` takes under ``models:``."""
        if isinstance(spec, str):
            spec = spec_from_mapping(spec, entry or {}, where=f"register({spec!r})")
        self.registry.add(spec)
        return spec

    def _model_lock(self, name: str) -> threading.Lock:
        with self._locks_mutex:
            return self._model_locks.setdefault(name, threading.Lock())

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
        self._housekeeping()
        with self._model_lock(spec.name):
            installed = self.cache.get(spec.name)
            if installed is not None and self._matches(installed, spec):
                report = self._validate(installed, spec)
                if report.ok:
                    path = self._maybe_update(installed, spec)
                    self.cache.touch(spec.name)
                    return path, spec
                log.warning("%s", report.summary())
                if self._offline_reason():
                    report.raise_for_status()
                self._repair(spec, installed, report)
                self.cache.touch(spec.name)
                return self.cache.model_dir(spec.name), spec
            reason = self._offline_reason()
            if reason is None and not self.config.cache.auto_download:
                reason = "automatic downloads are off (memory.model_cache.auto_download: false)"
            hf = self._hf_cache_for(spec.model_id, spec.revision or "main") if reason else None
            if hf is not None:  # offline, but the Hugging Face cache has it: no network at all
                path = self._download(
                    spec,
                    installed=installed,
                    info=hf.resolve(spec.model_id, spec.revision or "main"),
                    progress=progress,
                    hub=hf,
                )
                self.cache.touch(spec.name)
                return path, spec
            if reason:
                raise OfflineError(
                    f"model {spec.name!r} ({spec.model_id}) is not in the cache at "
                    f"{self.cache.root} and {reason}. Install it with 'caxton model install "
                    f"--model-id {spec.name} --source DIR', or allow downloads.",
                    model=spec.name,
                    reason=reason,
                )
            path = self._download(spec, installed=installed, progress=progress)
            self.cache.touch(spec.name)
            return path, spec

    # ------------------------------------------------------------------ asyncio

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
        with self._model_lock(spec.name):
            installed = self.cache.get(spec.name)
            if installed is None:
                return self.ensure(name)
            report = self._validate(installed, spec, force_full=True)
            if report.ok:
                raise ValidationFailed(
                    f"model {spec.name!r} failed to load ({error}), but its files verify; "
                    "the problem is not in the cache",
                    model=spec.name,
                )
            if self._offline_reason():
                report.raise_for_status()
            self._repair(spec, installed, report)
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
        with self._model_lock(spec.name):
            installed = self.cache.get(spec.name)
            meta = installed.metadata if installed is not None else None
            if installed is None or meta is None or meta.commit is None:
                raise ModelNotFound(
                    f"model {spec.name!r} is not installed at a known commit", model=spec.name
                )
            log.warning("fetching %s of %s@%s to run from", weights, spec.name, meta.commit)
            at_commit = replace(spec, revision=meta.commit, weights=(weights,))
            self._download(at_commit, installed=installed, keep_revision=meta.revision)
            return self.cache.model_dir(spec.name), spec

    # ------------------------------------------------------------------ cache check

    def _matches(self, installed: InstalledModel, spec: ModelSpec) -> bool:
        meta = installed.metadata
        if installed.manifest is None or meta is None:
            return installed.manifest is not None  # metadata lost: full check decides
        if meta.model_id != spec.model_id:
            return False
        if spec.pinned:
            return meta.commit == spec.revision
        return meta.revision == spec.revision or meta.commit == spec.revision

    def _validate(
        self, installed: InstalledModel, spec: ModelSpec, *, force_full: bool = False
    ) -> ValidationReport:
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
            status = "verified" if report.ok else "corrupt"
            if meta is None and report.ok and installed.manifest is not None:
                _upkeep.rewrite_lost_metadata(self, installed, spec)
            else:
                self.cache.update_metadata(
                    installed.name, last_validated=format_time(now_utc()), validation_status=status
                )
        return report

    # ------------------------------------------------------------------ update check

    def _maybe_update(self, installed: InstalledModel, spec: ModelSpec) -> Path:
        return maybe_update(self, installed, spec)

    # ------------------------------------------------------------------ download

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
        reason = self._offline_reason()
        if reason:
            raise OfflineError(
                f"cannot download {spec.name!r}: {reason}", model=spec.name, reason=reason
            )
        with self._model_lock(spec.name):
            installed = self.cache.get(spec.name)
            if not force and installed is not None and self._matches(installed, spec):
                report = self._validate(installed, spec)
                if report.ok:
                    return installed.path
                self._repair(spec, installed, report)
                return self.cache.model_dir(spec.name)
            return self._download(spec, installed=installed, progress=progress, fresh=force)

    def repair(self, name: str) -> ValidationReport:
        """Full validation; re-download exactly the files that fail. Returns the
        report of the final state."""
        spec = self.spec(name)
        with self._model_lock(spec.name):
            installed = self.cache.get(spec.name)
            if installed is None:
                raise ModelNotFound(f"model {name!r} is not installed", model=name)
            report = self._validate(installed, spec, force_full=True)
            if report.ok:
                return report
            if self._offline_reason():
                report.raise_for_status()
            self._repair(spec, installed, report)
            fresh = self.cache.get(spec.name)
            assert fresh is not None
            return validate_model(fresh, spec, mode="full", functional=False)

    def _repair(self, spec: ModelSpec, installed: InstalledModel, report: ValidationReport) -> Path:
        bad = report.bad_files
        meta = installed.metadata
        if installed.manifest is None or meta is None or meta.commit is None or not bad:
            log.warning("re-downloading all of %s (%s)", spec.name, report.summary())
            return self._download(spec, installed=None)
        log.warning("re-downloading %d corrupt file(s) of %s: %s", len(bad), spec.name, bad)
        pinned_spec = replace(spec, revision=meta.commit)
        path = self._download(
            pinned_spec, installed=installed, only=bad, keep_revision=meta.revision
        )
        return path

    def _download(
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
        started = time.monotonic()
        track = self.config.monitoring.track_download_metrics
        try:
            path = self._download_inner(
                spec, installed, info, only, keep_revision, progress, fresh, switch, hub
            )
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
        with self._locks_mutex:
            self._failures.pop(spec.name, None)
        elapsed = time.monotonic() - started
        if track:
            _metrics.observe_download(spec.model_id, "ok", elapsed)
        if self.config.monitoring.performance_logging:
            log.info("downloaded %s in %.2f s", spec.name, elapsed)
        return path

    def _failed(self, spec: ModelSpec, error: BaseException) -> None:
        """Counts a failed download; with ``monitoring.alert_on_failures``, logs
        one error when ``alert_threshold`` failures in a row are reached (a
        success resets the count). A cancel is not a failure of the model."""
        if isinstance(error, KeyboardInterrupt):
            return
        with self._locks_mutex:
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

    def _download_inner(
        self,
        spec: ModelSpec,
        installed: InstalledModel | None,
        info: Any,
        only: Sequence[str] | None,
        keep_revision: str | None,
        progress: Callable[[int], object] | None,
        fresh: bool = False,
        switch: bool = True,
        hub: HubLike | None = None,
    ) -> Path:
        allow_pickle = self.config.download.allow_pickle
        spec.check_safe(allow_pickle)
        hub = hub or self.hub
        if info is None:  # step 3: repository query
            info = hub.resolve(spec.model_id, spec.revision)
        commit = str(info.commit)
        if not is_hex(commit, 40):
            raise InvalidModelFormat(f"the Hub gave {spec.model_id} a malformed commit {commit!r}")
        files = plan_files(spec, info, allow_pickle=allow_pickle)
        job = _fetch.Job(
            cache=self.cache,
            config=self.config,
            hub=hub,
            name=spec.name,
            model_id=spec.model_id,
            revision=keep_revision or spec.revision,
            info=info,
            files=files,
            expected=expected_digests(spec, files, installed, commit),
            installed=installed,
            weights=spec.weights,
            only=only,
            progress=progress,
            fresh=fresh,
            source=_host(getattr(info, "endpoint", "")),
            switch=switch,
        )
        return _fetch.run(job)

    # ------------------------------------------------------------------ housekeeping

    def _housekeeping(self) -> None:
        _upkeep.housekeeping(self)

    def gc(self, *, dry_run: bool = False) -> dict[str, list[str]]:
        """Reclaim temp files, remove unused models and stored revisions, enforce
        the limits. ``dry_run`` returns what would be removed and removes nothing."""
        return _upkeep.gc(self, dry_run=dry_run)

    def validate_installed(self, *, mode: str = "quick") -> dict[str, ValidationReport]:
        """Validate every installed model (``validation_on_startup``)."""
        out: dict[str, ValidationReport] = {}
        for m in self.cache.installed():
            spec = self.registry.get(m.name) if m.name in self.registry else None
            if spec is None:
                out[m.name] = validate_model(m, None, mode=mode, functional=False)
            else:
                out[m.name] = self._validate(m, spec, force_full=mode == "full")
            if not out[m.name].ok:
                log.warning("%s", out[m.name].summary())
        return out

    def installed(self) -> list[InstalledModel]:
        return self.cache.installed()

    def verify(self, name: str, *, full: bool = False) -> ValidationReport:
        """Validate one installed model now: quick (existence, sizes, manifest,
        formats) or full (SHA-256 of every file plus the functional test), and
        record a full result in its metadata."""
        installed = self.cache.get(name)
        if installed is None:
            raise ModelNotFound(f"model {name!r} is not installed in {self.cache.root}", model=name)
        spec = self.registry.get(name) if name in self.registry else None
        if spec is not None and full:
            return self._validate(installed, spec, force_full=True)
        mode = "full" if full else "quick"
        return validate_model(installed, spec, mode=mode, functional=False)

    def remove(self, name: str, *, force: bool = False) -> bool:
        return self.cache.remove(name, force=force)

    # Versions and updates: see acquire/_versions.py.
    def version(self, name: str, *, check: bool = False) -> ModelVersion:
        return _versions.version(self, name, check=check)

    def update(self, name: str, *, check_only: bool = False, switch: bool = True) -> UpdateResult:
        return _versions.update(self, name, check_only=check_only, switch=switch)

    def rollback(self, name: str) -> InstalledModel:
        return _versions.rollback(self, name)

    def join_updates(self, timeout: float | None = None) -> None:
        """Wait for the background update checks this manager started."""
        for t in list(self._update_threads.values()):
            t.join(timeout)

    def pin(self, name: str, pinned: bool = True) -> None:
        if self.cache.get(name) is None:
            raise ModelNotFound(f"model {name!r} is not installed", model=name)
        self.cache.set_pinned(name, pinned)

    def install_from_dir(
        self, name: str, src_dir: str | os.PathLike[str], **kw: Any
    ) -> InstalledModel:
        """Install a folder as registry model ``name`` (checked against the
        registry's checksums and required files)."""
        spec = self.spec(name)
        cfg = self.config.cache
        kw.setdefault("model_id", spec.model_id)
        kw.setdefault("revision", spec.revision)
        kw.setdefault("commit", spec.revision if spec.pinned else None)
        kw.setdefault("expected", dict(spec.checksums))
        kw.setdefault("required_files", spec.required_files)
        kw.setdefault("weights", spec.weights)
        kw.setdefault("allow_pickle", self.config.download.allow_pickle or spec.allow_pickle)
        kw.setdefault("policy", cfg.cleanup_policy)
        kw.setdefault("max_bytes", cfg.max_size_bytes)
        kw.setdefault("max_models", cfg.max_models)
        kw.setdefault("pinned", name in cfg.pinned_models)
        kw.setdefault("pinned_names", cfg.pinned_models)
        return install_from_dir(self.cache, name, src_dir, **kw)


def _host(endpoint: str) -> str:
    from urllib.parse import urlsplit

    try:
        host = urlsplit(endpoint).hostname
    except ValueError:
        host = None
    return host or "unknown"
