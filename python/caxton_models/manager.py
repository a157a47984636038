"""ModelManager: the spec's 7-step download process, and the cache policies.

1. registry lookup      :meth:`ModelManager.spec`
2. cache check          quick validation (sizes + manifest); full SHA-256 when
                        ``validation_interval`` has passed
3. repository query     ``HubClient.resolve`` -> commit + file list (sizes, LFS SHA-256)
4. parallel download    small files first (config, tokenizer), checked, then the
                        weights; ``parallel_downloads`` at a time, into
                        ``downloads/<name>@<commit>/`` (resumable)
5. integrity validation every file hashed (``_core.hash_files``) against the
                        registry pin, the Hub's LFS SHA-256 and the download;
                        formats checked
6. installation         metadata written last, directory renamed into place
7. registry update      registry.json rewritten from the model directories

Offline (``CAXTON_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``download.enabled: false``)
means no HubClient is ever built, so no network call can happen. A verified
cached model loads with no network call until ``update_check_interval`` has
passed; a failing update check (429, 5xx, timeout) is logged, never raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from caxton_models import _core
from caxton_models import metrics as _metrics
from caxton_models.cache import (
    DIR_MODE,
    FileEntry,
    InstalledModel,
    ModelCache,
    _FileLock,
    _rmtree,
    format_time,
    now_utc,
    parse_time,
)
from caxton_models.config import Config, DownloadConfig, load_config
from caxton_models.errors import (
    CaxtonError,
    ChecksumMismatch,
    InsufficientDiskSpace,
    InvalidModelFormat,
    ModelNotFound,
    NetworkTimeout,
    OfflineError,
    SizeMismatch,
    ValidationFailed,
)
from caxton_models.paths import check_unique, safe_join
from caxton_models.registry import ModelSpec, Registry, is_pickle, spec_from_mapping
from caxton_models.validate import ValidationReport, check_file_formats, validate_model

__all__ = ["DownloadMetrics", "ModelManager", "bundled_dir", "default_manager"]

log = logging.getLogger("caxton_models.manager")


_default: ModelManager | None = None
_default_lock = threading.Lock()


def default_manager() -> ModelManager:
    """The process-wide manager for ``caxton_models.load`` (config read once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelManager()
        return _default


def bundled_dir(name: str) -> Path:
    from caxton_models._bundled import bundled_dir as _bundled

    return _bundled(name)


class HubLike(Protocol):
    """What the manager needs from ``caxton_models.hub.HubClient``."""

    def resolve(self, repo_id: str, revision: str = "main") -> Any: ...

    def download_file(
        self, info: Any, path: str, dest: Path, *, progress: Callable[[int], object] | None = None
    ) -> Any: ...


@dataclass
class DownloadMetrics:
    """Counters for ``caxton_model_download_*`` (monitoring.track_download_metrics)."""

    downloads: int = 0
    failures: int = 0
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    update_checks: int = 0
    update_check_failures: int = 0
    repaired_files: int = 0
    validations: dict[str, int] = field(default_factory=dict)
    validation_failures: int = 0


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
        self.metrics = DownloadMetrics()
        _metrics.watch_cache(self.cache)
        self._model_locks: dict[str, threading.Lock] = {}
        self._locks_mutex = threading.Lock()
        self._housekept = False
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
        kwargs: dict[str, Any] = {
            "token": self.config.token,
            "offline": False,
            "timeout": self.config.download.request_timeout,
            "retries": self.config.download.retry_attempts,
        }
        dl = self.config.download
        if dl.connections is not None:
            kwargs["connections"] = dl.connections
        if dl.chunk_size_kb != DownloadConfig.chunk_size_kb:  # the spec's default: keep ours
            kwargs["chunk_size"] = dl.chunk_size_kb * 1024
        kwargs.update(overrides)
        if self._hub_factory is not None:
            return self._hub_factory(list(self.config.endpoints), **kwargs)
        from caxton_models.hub import HubClient

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
        """Step 1: the registry entry (``ModelNotFound`` with suggestions)."""
        spec = self.registry.get(name)
        return replace(spec, revision=revision) if revision else spec

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

    def ensure(self, name: str, *, revision: str | None = None) -> tuple[Path, ModelSpec]:
        """An installed, validated copy of ``name``: downloaded if needed and
        allowed. Returns (directory, spec)."""
        spec = self.spec(name, revision)
        if spec.bundled:
            path = bundled_dir(spec.name)
            if not (path / "onnx" / "model.onnx").is_file() and not (path / "model.onnx").is_file():
                raise ModelNotFound(
                    f"the bundled model {spec.name!r} is not in this installation ({path}); "
                    "reinstall caxton-models from a wheel",
                    model=spec.name,
                )
            return path, spec
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
            if reason:
                raise OfflineError(
                    f"model {spec.name!r} ({spec.model_id}) is not in the cache at "
                    f"{self.cache.root} and {reason}. Install it with 'caxton model install "
                    f"--model-id {spec.name} --source DIR', or allow downloads.",
                    model=spec.name,
                    reason=reason,
                )
            path = self._download(spec, installed=installed)
            self.cache.touch(spec.name)
            return path, spec

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
        self.metrics.validations[mode] = self.metrics.validations.get(mode, 0) + 1
        if not report.ok:
            self.metrics.validation_failures += 1
        if full:
            status = "verified" if report.ok else "corrupt"
            if meta is None and report.ok and installed.manifest is not None:
                self._rewrite_lost_metadata(installed, spec)
            else:
                self.cache.update_metadata(
                    installed.name, last_validated=format_time(now_utc()), validation_status=status
                )
        return report

    def _rewrite_lost_metadata(self, installed: InstalledModel, spec: ModelSpec) -> None:
        """A model whose metadata was lost but whose files verify: write fresh
        metadata in place (atomic), status verified."""
        from caxton_models.cache import METADATA_FILE, Metadata, write_json_atomic

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
            total_size_bytes=installed.size_bytes,
            file_count=len(installed.manifest),
        )
        with contextlib.suppress(OSError), self.cache.lock():
            write_json_atomic(installed.path / METADATA_FILE, meta.to_json())
            self.cache.rebuild_index()

    # ------------------------------------------------------------------ update check

    def _maybe_update(self, installed: InstalledModel, spec: ModelSpec) -> Path:
        meta = installed.metadata
        if spec.pinned or meta is None or self._offline_reason():
            return installed.path
        last_raw = meta.last_update_check or meta.download_date
        try:
            last = parse_time(last_raw)
        except ValueError:
            last = None
        interval = timedelta(seconds=self.config.cache.update_check_interval)
        if last is not None and now_utc() - last < interval:
            return installed.path
        self.metrics.update_checks += 1
        try:
            # A short, single-attempt check: a slow or rate-limited Hub must
            # not delay a load that the cache can serve.
            timeout = min(10.0, self.config.download.request_timeout)
            checker = self._hub or self._make_hub(retries=1, timeout=timeout)
            info = checker.resolve(spec.model_id, spec.revision)
        except Exception as e:  # any failure of the check leaves the cached copy in use
            self.metrics.update_check_failures += 1
            log.warning("update check for %s failed (%s); using the cached copy", spec.name, e)
            self.cache.update_metadata(spec.name, last_update_check=format_time(now_utc()))
            return installed.path
        self.cache.update_metadata(spec.name, last_update_check=format_time(now_utc()))
        if info.commit == meta.commit:
            return installed.path
        if not self.config.cache.auto_update:
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
            return self._download(spec, installed=None, info=info)
        except CaxtonError as e:
            log.warning("update of %s failed (%s); using the cached copy", spec.name, e)
            return installed.path

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
        self.metrics.repaired_files += len(bad)
        return path

    def _plan(self, spec: ModelSpec, info: Any) -> list[Any]:
        """Which listed files to fetch; refuses the whole snapshot if any listed
        name is unsafe (before any I/O)."""
        listing = {f.path: f for f in info.files}
        check_unique(list(listing), what=f"file name in {spec.model_id}@{info.commit}")
        missing = [p for p in spec.required_files if p not in listing]
        if missing:
            alt = [p for p in listing if p.endswith((".onnx", ".safetensors"))]
            hint = f" The repository has: {', '.join(alt[:5])}." if alt else ""
            raise ModelNotFound(
                f"{spec.model_id}@{info.commit} has no {', '.join(missing)} (needed for "
                f"model_type {spec.model_type.value}).{hint} Pick another model_type or file "
                "list in caxton.yaml.",
                model=spec.name,
                files=missing,
            )
        wanted = [*spec.required_files, *(p for p in spec.optional_files if p in listing)]
        files = [listing[p] for p in dict.fromkeys(wanted)]
        pickles = [f.path for f in files if is_pickle(f.path)]
        if pickles:
            spec.check_safe(self.config.download.allow_pickle)
        for f in files:
            if not (isinstance(f.size, int) and f.size >= 0):
                raise InvalidModelFormat(f"listing gives {f.path} a bad size {f.size!r}")
            if f.sha256 is not None and not _is_hex64(f.sha256):
                raise InvalidModelFormat(f"listing gives {f.path} a malformed sha256")
        # Small files (config, tokenizer) first, the weights last.
        weights = {spec.weights_file}
        files.sort(key=lambda f: (f.path in weights or f.lfs, f.size, f.path))
        return files

    def _expected(
        self, spec: ModelSpec, f: Any, installed: InstalledModel | None, commit: str
    ) -> str | None:
        pin = spec.checksums.get(f.path)
        if pin and f.sha256 and pin != f.sha256:
            raise ChecksumMismatch(
                f"{spec.model_id}@{commit}: the repository lists {f.path} with sha256 "
                f"{f.sha256}, but the registry pins {pin}. The repository changed or the "
                "mirror serves something else; nothing was downloaded.",
                expected=pin,
                actual=f.sha256,
                path=f.path,
            )
        if pin:
            return pin
        if f.sha256:
            return str(f.sha256)
        if (
            installed is not None
            and installed.manifest
            and installed.metadata
            and installed.metadata.commit == commit
            and f.path in installed.manifest
        ):
            return installed.manifest[f.path].sha256  # recorded at first download
        return None

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
    ) -> Path:
        started = time.monotonic()
        track = self.config.monitoring.track_download_metrics
        try:
            path = self._download_inner(spec, installed, info, only, keep_revision, progress, fresh)
        except BaseException as e:
            self.metrics.failures += 1
            if track:
                elapsed = time.monotonic() - started
                _metrics.observe_download(spec.model_id, _metrics.download_status(e), elapsed)
            # Integrity checks of fresh bytes are validation too (step 5), and
            # they raise here rather than returning a report.
            kind = next((k for t, k in _INTEGRITY_FAILURES if isinstance(e, t)), None)
            if kind is not None:
                _metrics.count_validation_failure(spec.model_id, kind)
            if self.config.monitoring.alert_on_failures:
                log.error("download of %s failed: %s", spec.name, e)
            raise
        elapsed = time.monotonic() - started
        if track:
            _metrics.observe_download(spec.model_id, "ok", elapsed)
        self.metrics.downloads += 1
        self.metrics.seconds += elapsed
        if self.config.monitoring.performance_logging:
            log.info("downloaded %s in %.2f s", spec.name, elapsed)
        return path

    def _download_inner(
        self,
        spec: ModelSpec,
        installed: InstalledModel | None,
        info: Any,
        only: Sequence[str] | None,
        keep_revision: str | None,
        progress: Callable[[int], object] | None,
        fresh: bool = False,
    ) -> Path:
        cfg = self.config
        spec.check_safe(cfg.download.allow_pickle)
        # Step 3: repository query.
        if info is None:
            info = self.hub.resolve(spec.model_id, spec.revision)
        commit = str(info.commit)
        if not _is_hex40(commit):
            raise InvalidModelFormat(f"the Hub gave {spec.model_id} a malformed commit {commit!r}")
        files = self._plan(spec, info)
        expected = {f.path: self._expected(spec, f, installed, commit) for f in files}

        self.cache.ensure_dirs()
        stable = self.cache.downloads / f"{spec.name}@{commit}"
        lock = _FileLock(
            self.cache.downloads / f"{spec.name}@{commit}.lock", timeout=3600.0, transient=True
        )
        with lock.hold():
            # Another process may have finished while we waited.
            again = self.cache.get(spec.name)
            before = installed.metadata.download_date if installed and installed.metadata else None
            if (
                only is None
                and again is not None
                and again.metadata is not None
                and again.metadata.commit == commit
                and again.status == "verified"
                and again.metadata.download_date != before
            ):
                return again.path
            work = self._claim_work_dir(stable)
            try:
                return self._download_into(
                    spec,
                    info,
                    commit,
                    files,
                    expected,
                    installed,
                    work,
                    only,
                    keep_revision,
                    progress,
                    fresh,
                )
            except BaseException:
                # Hand the finished files back for the next attempt to resume.
                if os.path.isdir(work) and not os.path.lexists(stable):
                    with contextlib.suppress(OSError):
                        os.rename(work, stable)
                if os.path.lexists(work):
                    _rmtree(work)
                raise

    def _claim_work_dir(self, stable: Path) -> Path:
        """Take ``downloads/<name>@<commit>`` (a previous attempt's files) by an
        atomic rename to a private name, so two processes never write the same
        files even when the lock is a no-op; a fresh private dir otherwise."""
        private = stable.with_name(f"{stable.name}.{os.getpid()}.{secrets.token_hex(4)}")
        if os.path.islink(stable) or (os.path.lexists(stable) and not os.path.isdir(stable)):
            _rmtree(stable)  # never follow a link planted there
        try:
            os.rename(stable, private)
        except FileNotFoundError:
            os.mkdir(private, DIR_MODE)
        return private

    def _download_into(
        self,
        spec: ModelSpec,
        info: Any,
        commit: str,
        files: list[Any],
        expected: Mapping[str, str | None],
        installed: InstalledModel | None,
        work: Path,
        only: Sequence[str] | None,
        keep_revision: str | None,
        progress: Callable[[int], object] | None,
        fresh: bool = False,
    ) -> Path:
        cfg = self.config
        # Reuse good files of the installed copy (same commit) by hard link:
        # a repair fetches only the bad files and never edits the live dir.
        # ``fresh`` (download --force) fetches every byte again.
        reuse: set[str] = set()
        if (
            not fresh
            and installed is not None
            and installed.metadata
            and installed.metadata.commit == commit
        ):
            bad = set(only or ())
            for f in files:
                if f.path in bad or installed.manifest is None or f.path not in installed.manifest:
                    continue
                src = safe_join(installed.path, f.path)
                dst = safe_join(work, f.path)
                if os.path.lexists(dst):
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
                try:
                    os.link(src, dst, follow_symlinks=False)
                except OSError:
                    continue
                reuse.add(f.path)
        todo = list(files) if fresh else self._still_needed(work, files, reuse, expected, only)
        for f in todo:  # a bad file from a previous attempt must not block the retry
            p = safe_join(work, f.path)
            if os.path.lexists(p):
                _rmtree(p)
        need = sum(f.size for f in todo)
        total = sum(f.size for f in files)
        if cfg.cache.max_size_bytes is not None or cfg.cache.max_models is not None:
            self.cache.make_room(
                policy=cfg.cache.cleanup_policy,
                max_bytes=cfg.cache.max_size_bytes,
                max_models=cfg.cache.max_models,
                incoming_bytes=total,
                incoming_name=spec.name,
                pinned_names=cfg.cache.pinned_models,
            )
        self._ensure_space(spec, need)
        # Step 4: download, small files first, then the weights.
        self._fetch(spec, info, work, todo, expected, progress)
        # Step 5: integrity validation of the complete set.
        entries = self._verify_set(spec, work, files, expected, commit)
        # Step 6: installation.
        staging = self.cache.new_staging(spec.name)
        try:
            os.rmdir(staging)
            os.rename(work, staging)
            self.cache.finalize(
                staging,
                name=spec.name,
                files=entries,
                model_id=spec.model_id,
                revision=keep_revision or spec.revision,
                commit=commit,
                source=_host(getattr(info, "endpoint", "")),
                pinned=spec.name in cfg.cache.pinned_models,
                previous=installed.metadata if installed else None,
            )
            # Step 7: registry update (publish rewrites registry.json).
            published = self.cache.publish(spec.name, staging)
        except BaseException:
            _rmtree(staging)
            raise
        self.metrics.files += len(todo)
        self.metrics.bytes += need
        return published.path

    def _still_needed(
        self,
        work: Path,
        files: list[Any],
        reuse: set[str],
        expected: Mapping[str, str | None],
        only: Sequence[str] | None,
    ) -> list[Any]:
        """Files of an earlier, interrupted attempt are kept only if their size
        and SHA-256 prove them complete; everything else is fetched (again)."""
        candidates = []
        for f in files:
            if f.path in reuse or (only is not None and f.path in only):
                continue
            p = safe_join(work, f.path)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == f.size and expected.get(f.path):
                candidates.append(f)
        done: set[str] = set(reuse)
        if candidates:
            digests = _core.hash_files([work / f.path for f in candidates], "sha256")
            for f, digest in zip(candidates, digests, strict=True):
                if digest == expected.get(f.path):
                    done.add(f.path)
        return [f for f in files if f.path not in done]

    def _ensure_space(self, spec: ModelSpec, need: int) -> None:
        self.cache.ensure_disk_space(
            need,
            policy=self.config.cache.cleanup_policy,
            pinned_names=self.config.cache.pinned_models,
            incoming_name=spec.name,
        )

    def _fetch(
        self,
        spec: ModelSpec,
        info: Any,
        work: Path,
        todo: list[Any],
        expected: Mapping[str, str | None],
        progress: Callable[[int], object] | None,
    ) -> None:
        if not todo:
            return
        hub = self.hub
        deadline = time.monotonic() + self.config.download.timeout_minutes * 60.0
        plock = threading.Lock()

        def tick(n: int) -> object:
            if progress is not None:
                with plock:
                    return progress(n)
            return None

        # Optional hooks for per-file progress (the CLI's bars); plain callables
        # just get the byte deltas of all files together.
        on_plan = getattr(progress, "plan", None)
        on_file = getattr(progress, "file_progress", None)
        if on_plan is not None:
            on_plan([(f.path, f.size) for f in todo])

        def one(f: Any) -> None:
            def file_tick(n: int) -> object:
                if on_file is not None:
                    with plock:
                        on_file(f.path, n)
                return tick(n)

            if time.monotonic() > deadline:
                raise NetworkTimeout(
                    f"downloading {spec.name} took longer than download.timeout_minutes "
                    f"({self.config.download.timeout_minutes:g}); the finished files are kept "
                    "and the next attempt resumes",
                    model=spec.name,
                    path=f.path,
                )
            dest = safe_join(work, f.path)
            dest.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            for attempt in (1, 2):
                try:
                    result = hub.download_file(
                        info, f.path, dest, progress=file_tick if progress else None
                    )
                    break
                except InsufficientDiskSpace:
                    if attempt == 2:
                        raise
                    self._ensure_space(spec, f.size)  # evict by policy, then retry once
            want = expected.get(f.path)
            got = getattr(result, "sha256", None)
            if want and got and got != want:
                with contextlib.suppress(OSError):
                    os.unlink(dest)
                raise ChecksumMismatch(
                    f"{f.path} of {spec.name}: sha256 {got}, expected {want}; file removed",
                    expected=want,
                    actual=got,
                    path=f.path,
                )

        small = [f for f in todo if not (f.lfs or f.path == spec.weights_file)]
        large = [f for f in todo if f not in small]
        workers = max(1, self.config.download.max_concurrent)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caxton-dl") as pool:
            for fut in [pool.submit(one, f) for f in small]:
                fut.result()
            # Essential files are checked before the large download starts.
            check_file_formats(work, [f.path for f in small], model=spec.name)
            for fut in [pool.submit(one, f) for f in large]:
                fut.result()

    def _verify_set(
        self,
        spec: ModelSpec,
        work: Path,
        files: list[Any],
        expected: Mapping[str, str | None],
        commit: str,
    ) -> dict[str, FileEntry]:
        paths = [f.path for f in files]
        for f in files:
            size = os.lstat(safe_join(work, f.path)).st_size
            if size != f.size:
                raise SizeMismatch(
                    f"{f.path} of {spec.name}@{commit}: {size} bytes, the Hub lists {f.size}",
                    expected=f.size,
                    actual=size,
                    path=f.path,
                )
        digests = _core.hash_files([work / p for p in paths], "sha256")
        git_blob = getattr(_core, "git_blob_sha1_file", None)
        entries: dict[str, FileEntry] = {}
        for f, digest in zip(files, digests, strict=True):
            want = expected.get(f.path)
            if want and digest != want:
                with contextlib.suppress(OSError):
                    os.unlink(work / f.path)
                raise ChecksumMismatch(
                    f"{f.path} of {spec.name}@{commit}: sha256 {digest}, expected {want}; "
                    "file removed, retry the download",
                    expected=want,
                    actual=digest,
                    path=f.path,
                )
            if not want and not f.lfs and f.git_oid and git_blob is not None:
                oid = git_blob(work / f.path)
                if oid != f.git_oid:
                    with contextlib.suppress(OSError):
                        os.unlink(work / f.path)
                    raise ChecksumMismatch(
                        f"{f.path} of {spec.name}@{commit}: git blob {oid}, the Hub lists "
                        f"{f.git_oid}; file removed",
                        expected=f.git_oid,
                        actual=oid,
                        path=f.path,
                    )
            entries[f.path] = FileEntry(f.size, digest, f.git_oid, bool(f.lfs))
        check_file_formats(work, paths, model=spec.name)
        return entries

    # ------------------------------------------------------------------ housekeeping

    def _housekeeping(self) -> None:
        """Once per manager: reclaim stale temp files and remove long-unused models."""
        if self._housekept:
            return
        self._housekept = True
        cfg = self.config.cache
        try:
            self.cache.recover()
            self.cache.reclaim_temp(cfg.temp_max_age)
            if cfg.cleanup_unused_after is not None and cfg.cleanup_policy != "manual":
                self.cache.cleanup_unused(cfg.cleanup_unused_after, pinned_names=cfg.pinned_models)
        except (OSError, CaxtonError) as e:
            log.debug("cache housekeeping skipped: %s", e)

    def gc(self, *, dry_run: bool = False) -> dict[str, list[str]]:
        """Reclaim temp files, remove unused models, enforce the limits.
        ``dry_run`` returns what would be removed and removes nothing."""
        cfg = self.config.cache
        out = {
            "temp": self.cache.reclaim_temp(cfg.temp_max_age, dry_run=dry_run),
            "unused": [],
            "evicted": [],
        }
        if cfg.cleanup_unused_after is not None:
            out["unused"] = self.cache.cleanup_unused(
                cfg.cleanup_unused_after, pinned_names=cfg.pinned_models, dry_run=dry_run
            )
        if cfg.cleanup_policy != "manual":
            out["evicted"] = self.cache.make_room(
                policy=cfg.cleanup_policy,
                max_bytes=cfg.max_size_bytes,
                max_models=cfg.max_models,
                pinned_names=cfg.pinned_models,
                dry_run=dry_run,
            )
            # A dry run still sees the unused models it would have removed first.
            out["evicted"] = [n for n in out["evicted"] if n not in out["unused"]]
        return out

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
        kw.setdefault("allow_pickle", self.config.download.allow_pickle or spec.allow_pickle)
        kw.setdefault("policy", cfg.cleanup_policy)
        kw.setdefault("max_bytes", cfg.max_size_bytes)
        kw.setdefault("max_models", cfg.max_models)
        kw.setdefault("pinned", name in cfg.pinned_models)
        return self.cache.install_from_dir(name, src_dir, **kw)


# failure_type of caxton_model_validation_failures_total for a download's integrity errors.
_INTEGRITY_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (ChecksumMismatch, "checksum"),
    (SizeMismatch, "size"),
    (InvalidModelFormat, "format"),
)


def _is_hex40(v: object) -> bool:
    return isinstance(v, str) and len(v) == 40 and all(c in "0123456789abcdef" for c in v)


def _is_hex64(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _host(endpoint: str) -> str:
    from urllib.parse import urlsplit

    try:
        host = urlsplit(endpoint).hostname
    except ValueError:
        host = None
    return host or "unknown"
