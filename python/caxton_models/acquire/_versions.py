"""Versions of a cached model: what is current, what the Hub offers, and
moving between them.

An update is always staged: the new revision is downloaded beside the
current one (only the files that changed are fetched; the rest are hard
links), validated in full (SHA-256 of every file and the functional test),
and only then switched in by an atomic rename. The replaced revision stays
stored, so :meth:`Versions.rollback` returns to it until cleanup removes it. The
state of the last check (newest commit, branches and tags) is kept in the
store (``.revisions/<name>/state.json``), so ``update_available`` is known
without a network call.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from caxton_models import metrics as _metrics
from caxton_models.acquire import _probe
from caxton_models.acquire._checker import Functional
from caxton_models.acquire._downloader import Downloader
from caxton_models.acquire._fetch import HubLike
from caxton_models.acquire._network import ModelLocks, Network
from caxton_models.acquire._specs import Specs
from caxton_models.acquire.validate import validate_model
from caxton_models.config import Config
from caxton_models.errors import CaxtonError, ModelNotFound, RevisionGone
from caxton_models.registry import ModelSpec
from caxton_models.store import InstalledModel, ModelCache, format_time, now_utc

log = logging.getLogger("caxton_models.acquire.versions")


@dataclass(frozen=True)
class StoredRevision:
    """A revision kept beside the current one."""

    commit: str | None
    revision: str
    download_date: str
    role: str  # "previous" (what rollback returns to) or "staged" (not yet switched to)
    path: str


@dataclass(frozen=True)
class ModelVersion:
    """Where a cached model stands. ``available``: the repository's branches
    and tags (name -> commit) as of ``last_update_check``."""

    name: str
    model_id: str
    tracking: str  # the branch, tag or commit the registry follows
    strategy: str
    current_commit: str | None
    current_revision: str | None
    latest_commit: str | None = None
    available: dict[str, str] = field(default_factory=dict)
    last_update_check: str | None = None
    stored: tuple[StoredRevision, ...] = ()

    @property
    def update_available(self) -> bool:
        return (
            self.latest_commit is not None
            and self.current_commit is not None
            and self.latest_commit != self.current_commit
        )

    @property
    def previous(self) -> str | None:
        return next((s.commit for s in self.stored if s.role == "previous"), None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["update_available"] = self.update_available
        out["previous"] = self.previous
        return out


@dataclass(frozen=True)
class UpdateResult:
    """What :meth:`Versions.update` did: ``none`` (up to date), ``checked`` (only
    checked), ``staged`` (downloaded and validated, not switched to) or
    ``switched``."""

    action: str
    version: ModelVersion
    from_commit: str | None = None
    to_commit: str | None = None
    # Why a switch was held back (staged instead), e.g. the embedding space moved.
    reason: str | None = None


class Versions:
    """Version, update and rollback of the models in ``cache``: asks the Hub
    through ``network``, stages through ``downloader``, under ``locks``."""

    def __init__(
        self,
        cache: ModelCache,
        config: Config,
        specs: Specs,
        network: Network,
        locks: ModelLocks,
        downloader: Downloader,
        functional: Functional = True,
    ) -> None:
        self.cache = cache
        self.config = config
        self.specs = specs
        self.network = network
        self.locks = locks
        self.downloader = downloader
        self.functional = functional

    def _stored(self, name: str) -> tuple[StoredRevision, ...]:
        prev = self.cache.revision_state(name).get("previous")
        out = []
        for m in self.cache.stored_revisions(name):
            meta = m.metadata
            assert meta is not None  # stored() lists only revisions with metadata
            role = "previous" if m.path.name == prev else "staged"
            out.append(StoredRevision(meta.commit, meta.revision, meta.download_date, role,
                                      str(m.path)))  # fmt: skip
        return tuple(out)

    def version(
        self, name: str, *, check: bool = False, hub: HubLike | None = None
    ) -> ModelVersion:
        """The model's version; with ``check``, ask the Hub first (the newest
        commit of the tracked revision, and the branches and tags)."""
        spec = self.specs.get(name)
        if check:
            self._check(spec, hub)
        installed = self.cache.get(spec.name)
        meta = installed.metadata if installed else None
        state = self.cache.revision_state(spec.name)
        latest = state.get("latest_commit") if state.get("tracking") == spec.revision else None
        available = state.get("available")
        return ModelVersion(
            name=spec.name,
            model_id=spec.model_id,
            tracking=spec.revision,
            strategy=self.config.cache.update_strategy,
            current_commit=meta.commit if meta else None,
            current_revision=meta.revision if meta else None,
            latest_commit=None if spec.pinned else latest,
            available=dict(available) if isinstance(available, dict) else {},
            last_update_check=(meta.last_update_check if meta else None)
            or state.get("last_update_check"),
            stored=self._stored(spec.name),
        )

    def _check(self, spec: ModelSpec, hub: HubLike | None) -> Any:
        """Resolve the tracked revision and list the refs; recorded in the store.
        Returns the resolved listing (for the download that may follow)."""
        client: Any = hub or self.network.hub
        try:
            info = client.resolve(spec.model_id, spec.revision)
        except Exception:
            _metrics.count(_metrics.UPDATE_CHECKS, model_id=spec.model_id, result="failed")
            self.cache.update_metadata(spec.name, last_update_check=format_time(now_utc()))
            raise
        _metrics.count(_metrics.UPDATE_CHECKS, model_id=spec.model_id, result="ok")
        available = {spec.revision: str(info.commit)}
        refs = getattr(client, "refs", None)
        if refs is not None:
            try:
                available.update(refs(spec.model_id).all())
            except CaxtonError as e:  # an older mirror without the refs route
                log.info("could not list the branches and tags of %s: %s", spec.model_id, e)
        now = format_time(now_utc())
        if self.cache.get(spec.name) is not None:
            with contextlib.suppress(OSError, CaxtonError):
                self.cache.record_update_check(
                    spec.name, tracking=spec.revision, latest_commit=str(info.commit),
                    available=available, last_update_check=now,
                )  # fmt: skip
            self.cache.update_metadata(spec.name, last_update_check=now)
        return info

    def update(
        self,
        name: str,
        *,
        check_only: bool = False,
        switch: bool = True,
        hub: HubLike | None = None,
        automatic: bool = False,
    ) -> UpdateResult:
        """Check, then (unless ``check_only``) stage the newest revision beside
        the current one, validate it in full and (with ``switch``) switch to it.
        An ``automatic`` switch (the background strategies) first checks that
        both revisions embed the probe texts alike; if the space moved, the new
        revision is left staged and the result says a migration is needed."""
        spec = self.specs.get(name)
        if spec.bundled:
            raise ModelNotFound(
                f"{name} is bundled with the package: it has no updates", model=name
            )
        with self.locks.hold(spec.name):
            installed = self.cache.get(spec.name)
            if installed is None or installed.metadata is None:
                raise ModelNotFound(
                    f"model {spec.name!r} is not installed; `caxton model download {spec.name}` "
                    "first",
                    model=spec.name,
                )
            info = self._check(spec, hub)
            v = self.version(spec.name)
            old = installed.metadata.commit
            if check_only or not v.update_available:
                return UpdateResult("checked" if check_only else "none", v, old, v.latest_commit)
            return self._move(spec, installed, info, switch=switch, automatic=automatic)

    def _move(
        self, spec: ModelSpec, installed: InstalledModel, info: Any, *, switch: bool,
        automatic: bool,
    ) -> UpdateResult:  # fmt: skip
        """Stage ``info``'s commit, validate it in full, and switch (see :meth:`update`)."""
        old = installed.metadata.commit if installed.metadata else None
        new = str(info.commit)
        # A cleanup in another thread or process may remove the staged revision
        # between our steps: stage it again (once), then say so in a typed error.
        for attempt in (1, 2):
            staged = self._staged(spec, installed, info, new)
            if staged is None:
                continue
            report = validate_model(staged, spec, mode="full", functional=self.functional)
            if not report.ok:
                self.cache.remove_revision(spec.name, staged.path.name)
                report.raise_for_status()
            if not switch:
                log.info("%s: revision %s staged beside %s (switch with `caxton model update "
                         "%s`)", spec.name, new, old, spec.name)  # fmt: skip
                return UpdateResult("staged", self.version(spec.name), old, new)
            if automatic:
                moved = _probe.space_moved(spec, installed, staged)
                if moved is not None:
                    log.warning("%s: %s", spec.name, moved)
                    return UpdateResult("staged", self.version(spec.name), old, new, moved)
            try:
                self.cache.switch(spec.name, new)
            except ModelNotFound:
                if self.cache.find_revision(spec.name, new) is not None or attempt == 2:
                    raise
                continue  # removed after validation: stage it again
            log.info("%s: switched from %s to %s (roll back with `caxton model rollback %s`)",
                     spec.name, old, new, spec.name)  # fmt: skip
            return UpdateResult("switched", self.version(spec.name), old, new)
        raise RevisionGone(
            f"{spec.name}: revision {new} was removed twice while it was being staged (a "
            "concurrent `caxton model gc` or cleanup?); the current revision "
            f"{old} is unchanged. Run the update again when the cleanup is done.",
            model=spec.name,
        )

    def _staged(
        self, spec: ModelSpec, installed: InstalledModel, info: Any, new: str
    ) -> InstalledModel | None:
        """The verified staged revision ``new``, downloaded beside the current one
        if it is not stored yet; None when it vanished right after staging."""
        staged = self.cache.find_revision(spec.name, new)
        if staged is None or staged.status != "verified":
            self.downloader.download(spec, installed=installed, info=info, switch=False)
            staged = self.cache.find_revision(spec.name, new)
            if staged is None:
                log.warning("%s: staged revision %s was removed before it could be validated",
                            spec.name, new)  # fmt: skip
        return staged

    def rollback(self, name: str) -> InstalledModel:
        """Return to the revision that was current before the last switch."""
        spec = self.specs.get(name)
        with self.locks.hold(spec.name):
            return self.cache.rollback(spec.name)


def wants_update(strategy: str, spec: ModelSpec) -> str | None:
    """What a background check that found a newer revision does: ``switch``,
    ``stage``, or None (only say so)."""
    if strategy == "automatic" or (strategy == "security" and spec.security_update):
        return "switch"
    if strategy == "staged":
        return "stage"
    return None
