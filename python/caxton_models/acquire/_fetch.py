"""One model's download, steps 4 to 7 of the spec: fetch into a private
folder in ``downloads/``, check the set, stage, publish.

Bytes are verified once, while they stream (the core's SHA-256, or the git
blob id of a small file); afterwards only recorded digests are compared.
Per-file resume belongs to the core (its ``.part`` files and state); this
module claims only the model's own folder ``downloads/<name>@<commit>``, by
renaming it to a private name, so two processes never write the same files
even when the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from caxton_models._core import hash_files
from caxton_models._paths import safe_join
from caxton_models.acquire._upkeep import cache_limits
from caxton_models.acquire.validate import check_file_formats
from caxton_models.config import Config, hf_hub_cache_dir
from caxton_models.errors import (
    ChecksumMismatch,
    DownloadError,
    InsufficientDiskSpace,
    NetworkTimeout,
    PermissionDenied,
    SizeMismatch,
)
from caxton_models.store import (
    DIR_MODE,
    FileEntry,
    FileLock,
    InstalledModel,
    ModelCache,
    boot_id,
    fsync_dir,
    owner_token,
    rmtree,
    write_json_atomic,
)

log = logging.getLogger("caxton_models.acquire")

#: Digests of the files an interrupted attempt finished, as they streamed.
FETCHED = ".caxton_fetched"


class HubLike(Protocol):
    """What a download needs from :class:`~caxton_models.acquire.hub.HubClient`."""

    def resolve(self, repo_id: str, revision: str = "main") -> Any: ...

    def download_files(
        self,
        info: Any,
        targets: Mapping[str, Path],
        *,
        expected: Mapping[str, str | None] | None = None,
        progress: Callable[[int], object] | None = None,
        max_concurrent: int = 3,
        time_limit: float | None = None,
        sync: bool = True,
    ) -> dict[str, str]: ...


@dataclass
class Job:
    """Everything one download needs, decided by its caller (the manager for a
    model of the registry, a pull-through mirror for any repo): which files of
    which commit, their digests, and the cache entry they are published as."""

    cache: ModelCache
    config: Config
    hub: HubLike
    #: The cache entry the files are published as.
    name: str
    #: The repo id and the revision (branch, tag or commit) its metadata records.
    model_id: str
    revision: str
    info: Any
    files: list[Any]
    expected: dict[str, str | None]
    installed: InstalledModel | None
    #: Files fetched in a transfer of their own, after the small ones are checked.
    weights: Collection[str] = ()
    only: Sequence[str] | None = None
    progress: Callable[[int], object] | None = None
    fresh: bool = False
    source: str = "unknown"
    #: False: stage the new revision beside the current one, not switched to.
    switch: bool = True
    #: False: the caller checks the formats itself, once the model is whole (a
    #: pull-through mirror fetches a model in batches; an ONNX file's external data
    #: may come in a later batch than the graph).
    check_formats: bool = True
    #: Called with the private folder and the manifest once every byte is verified,
    #: before publishing (several fsyncs): a mirror hands the files to its waiting
    #: clients from there. It must not raise.
    on_verified: Callable[[Path, Mapping[str, FileEntry]], None] | None = None
    #: True: the core renames each verified file into place without its fsync, and
    #: the fetched files are synced here after ``on_verified``, before publishing:
    #: a mirror's clients get verified bytes without waiting for the disk (a
    #: hundred ms and more for a model's weights), and the entry is durable when
    #: it is published, as ever.
    late_sync: bool = False

    @property
    def commit(self) -> str:
        return str(self.info.commit)


def run(job: Job) -> Path:
    """Download, check and publish ``job``; returns the installed folder."""
    job.cache.ensure_dirs()
    stable = job.cache.downloads / f"{job.name}@{job.commit}"
    lock = FileLock(stable.with_name(stable.name + ".lock"), timeout=3600.0, transient=True)
    with lock.hold():
        done = _finished_meanwhile(job)
        if done is not None:
            return done
        work = _claim(stable, job.cache.root)
        try:
            return _into(job, work)
        except BaseException:
            # Hand the finished files back for the next attempt to resume.
            if os.path.isdir(work) and not os.path.lexists(stable):
                with contextlib.suppress(OSError):
                    os.rename(work, stable)
            if os.path.lexists(work):
                rmtree(work)
            raise


def _finished_meanwhile(job: Job) -> Path | None:
    """Another process may have installed this commit while we waited."""
    if job.only is not None:
        return None
    again = job.cache.get(job.name)
    before = (
        job.installed.metadata.download_date if job.installed and job.installed.metadata else None
    )
    if (
        again is not None
        and again.metadata is not None
        and again.metadata.commit == job.commit
        and again.status == "verified"
        and again.metadata.download_date != before
    ):
        return again.path
    return None


def _claim(stable: Path, root: Path) -> Path:
    """Take ``downloads/<name>@<commit>`` (a previous attempt's files) by an
    atomic rename to a private name; a fresh private folder otherwise."""
    private = stable.with_name(f"{stable.name}.{owner_token(root)}.{secrets.token_hex(4)}")
    if os.path.islink(stable) or (os.path.lexists(stable) and not os.path.isdir(stable)):
        rmtree(stable)  # never follow a link planted there
    try:
        try:
            os.rename(stable, private)
        except FileNotFoundError:
            os.mkdir(private, DIR_MODE)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise PermissionDenied(
            f"cannot write to {stable.parent} ({e.strerror}): the model cache is read-only "
            "here. Installed models still load; point CAXTON_CACHE_DIR at a writable folder "
            "to download.",
            path=str(stable.parent),
        ) from None
    return private


def _into(job: Job, work: Path) -> Path:
    known = {} if job.fresh else _reuse_installed(job, work)
    known.update({} if job.fresh else _recorded(job, work, known))
    known.update(_from_hf_cache(job, work, known))
    todo = [f for f in job.files if f.path not in known]
    for f in todo:  # a bad file from a previous attempt must not block the retry
        p = safe_join(work, f.path)
        if os.path.lexists(p):
            rmtree(p)
    limits = cache_limits(job.config)
    if limits.bounded:
        job.cache.make_room(
            limits, incoming_bytes=sum(f.size for f in job.files), incoming_name=job.name
        )
    ensure_space(job, sum(f.size for f in todo))
    known.update(_fetch(job, work, todo))
    entries = _entries(job, work, known)
    if job.on_verified is not None:
        job.on_verified(work, entries)
    if job.late_sync:
        _make_durable(job, work, [f.path for f in todo])
    return _publish(job, work, entries)


def _make_durable(job: Job, work: Path, paths: Iterable[str]) -> None:
    """What the core left unsynced (``late_sync``): each fetched file's bytes,
    then the folders it was renamed in, reach the disk before the entry is
    published; a power cut never leaves a published file full of zeros."""
    folders = {work}
    for rel in paths:
        path = safe_join(work, rel)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise DownloadError(
                f"{rel} of {job.name}@{job.commit}: cannot write it to disk ({e.strerror}); "
                "check the disk, then retry (the verified bytes are kept for it)",
                model=job.name,
                path=rel,
            ) from None
        folders.update(path.parents[: len(Path(rel).parts)])
    for folder in folders:
        fsync_dir(folder)


def _reuse_installed(job: Job, work: Path) -> dict[str, str]:
    """Good files of the installed copy, hard-linked: a repair fetches only
    the bad files and never edits the live folder; an update fetches only the
    files that changed."""
    inst = job.installed
    if inst is None or inst.manifest is None or inst.metadata is None:
        return {}
    same_commit = inst.metadata.commit == job.commit
    bad = set(job.only or ())
    out: dict[str, str] = {}
    for f in job.files:
        entry = inst.manifest.get(f.path)
        if f.path in bad or entry is None:
            continue
        # Another commit: only a file the listing shows to be identical (same
        # git blob id, or the same LFS SHA-256) is reused, never fetched again.
        if not same_commit and not (
            (entry.git_oid is not None and entry.git_oid == f.git_oid and entry.size == f.size)
            or (f.sha256 is not None and entry.sha256 == f.sha256)
        ):
            continue
        dst = safe_join(work, f.path)
        if not os.path.lexists(dst):
            dst.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            try:
                os.link(safe_join(inst.path, f.path), dst, follow_symlinks=False)
            except OSError:
                continue
        out[f.path] = entry.sha256
    return out


def _from_hf_cache(job: Job, work: Path, known: Mapping[str, str]) -> dict[str, str]:
    """Files the Hugging Face cache holds at this commit, checked byte for byte
    against the listing and hard-linked in: fetched by no one. A blob that
    does not check out is left where it is, and the file is fetched."""
    from caxton_models.acquire._hfcache import HfCacheSource, describing_hub

    if describing_hub(job.hub):
        return {}  # the HF cache is the source already
    source = HfCacheSource(hf_hub_cache_dir())
    targets = {f.path: safe_join(work, f.path) for f in job.files if f.path not in known}
    if not targets or not source.has(job.info.repo_id, job.commit):
        return {}
    done = source.link(job.info, targets, job.expected)
    if done:
        log.info("%s: %d of %d files from the Hugging Face cache at %s, verified",
                 job.name, len(done), len(targets), source.hub_cache)  # fmt: skip
    return done


def _recorded(job: Job, work: Path, known: Mapping[str, str]) -> dict[str, str]:
    """Files an interrupted attempt finished: kept when their size is right and
    the digest recorded as they streamed is the expected one, if the record
    was written since this machine booted (a killed process loses nothing
    the kernel has; a power cut can leave a file of the right size whose
    blocks never reached the disk, zeros). Any other finished file (no
    record, an older boot, or no way to tell) is hashed again before reuse."""
    try:
        record = json.loads((work / FETCHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    trusted: dict[str, Any] = {}
    if isinstance(record, dict) and isinstance(record.get("files"), dict):
        boot = boot_id()
        if boot is not None and record.get("boot") == boot:
            trusted = record["files"]
    out: dict[str, str] = {}
    unrecorded = []
    for f in job.files:
        if f.path in known or (job.only is not None and f.path in job.only):
            continue
        try:
            st = os.lstat(safe_join(work, f.path))
        except FileNotFoundError:
            continue
        want = job.expected.get(f.path)
        if not (stat.S_ISREG(st.st_mode) and st.st_size == f.size and want):
            continue
        if trusted.get(f.path) == want:
            out[f.path] = want
        else:
            unrecorded.append(f)
    if unrecorded:
        digests = hash_files([work / f.path for f in unrecorded], "sha256")
        for f, digest in zip(unrecorded, digests, strict=True):
            if digest == job.expected.get(f.path):
                out[f.path] = digest
    return out


def ensure_space(job: Job, need: int) -> None:
    job.cache.ensure_disk_space(need, cache_limits(job.config), incoming_name=job.name)


def _fetch(job: Job, work: Path, todo: list[Any]) -> dict[str, str]:
    """Small files first, checked, then the weights: each group in one transfer."""
    if not todo:
        return {}
    deadline = time.monotonic() + job.config.download.timeout_minutes * 60.0
    on_plan = getattr(job.progress, "plan", None)
    if on_plan is not None:
        on_plan([(f.path, f.size) for f in todo])
    small = [f for f in todo if not (f.lfs or f.path in job.weights)]
    large = [f for f in todo if f not in small]
    digests: dict[str, str] = {}
    for group in (small, large):
        if not group:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise _overtime(job)
        try:
            # The core enforces what is left, so one large file is bounded too.
            digests.update(_transfer(job, work, group, left))
        except NetworkTimeout as e:
            if time.monotonic() < deadline:
                raise  # a stall, not the time limit
            raise _overtime(job) from e
        if group is small and large:
            # For a resume after a crash; after the last group the publish follows at
            # once, and a retry hashes finished files it has no record of (_recorded).
            _record(work, digests)
        if group is small and job.check_formats:  # checked before the large download starts
            check_file_formats(work, [f.path for f in small], model=job.name)
    return digests


def _overtime(job: Job) -> NetworkTimeout:
    return NetworkTimeout(
        f"downloading {job.name} took longer than download.timeout_minutes "
        f"({job.config.download.timeout_minutes:g}); the bytes fetched so far are kept "
        "and the next attempt resumes",
        model=job.name,
    )


def _transfer(job: Job, work: Path, group: list[Any], time_limit: float) -> dict[str, str]:
    targets = {f.path: safe_join(work, f.path) for f in group}
    for attempt in (1, 2):
        try:
            return job.hub.download_files(
                job.info,
                targets,
                expected={f.path: job.expected.get(f.path) for f in group},
                progress=job.progress,
                max_concurrent=max(1, job.config.download.max_concurrent),
                time_limit=time_limit,
                sync=not job.late_sync,
            )
        except InsufficientDiskSpace:
            if attempt == 2:
                raise
            ensure_space(job, sum(f.size for f in group))  # evict by policy, then retry once
    raise AssertionError("unreachable")  # pragma: no cover


def _record(work: Path, digests: Mapping[str, str]) -> None:
    """What this attempt finished (the core fsyncs each file before its
    rename), with the boot it happened in: see :func:`_recorded`."""
    with contextlib.suppress(OSError):
        write_json_atomic(work / FETCHED, {"boot": boot_id(), "files": dict(digests)})


def _entries(job: Job, work: Path, digests: Mapping[str, str]) -> dict[str, FileEntry]:
    """The manifest of the set: sizes from the file system, digests as recorded
    while streaming (compared, never re-read)."""
    entries: dict[str, FileEntry] = {}
    for f in job.files:
        size = os.lstat(safe_join(work, f.path)).st_size
        if size != f.size:
            raise SizeMismatch(
                f"{f.path} of {job.name}@{job.commit}: {size} bytes, the Hub lists {f.size}",
                expected=f.size,
                actual=size,
                path=f.path,
            )
        digest = digests[f.path]
        want = job.expected.get(f.path)
        if want and digest != want:
            with contextlib.suppress(OSError):
                os.unlink(work / f.path)
            raise ChecksumMismatch(
                f"{f.path} of {job.name}@{job.commit}: sha256 {digest}, expected {want}; "
                "file removed, retry the download",
                expected=want,
                actual=digest,
                path=f.path,
            )
        entries[f.path] = FileEntry(f.size, digest, f.git_oid, bool(f.lfs))
    if job.check_formats:
        check_file_formats(work, list(entries), model=job.name)
    return entries


def _publish(job: Job, work: Path, entries: dict[str, FileEntry]) -> Path:
    """Steps 6 and 7: stage (metadata written last), rename into place, and
    rewrite registry.json."""
    cache = job.cache
    staging = cache.new_staging(job.name)
    try:
        os.rmdir(staging)
        os.rename(work, staging)
        cache.finalize(
            staging,
            name=job.name,
            files=entries,
            model_id=job.model_id,
            revision=job.revision,
            commit=job.commit,
            source=job.source,
            previous=job.installed.metadata if job.installed else None,
        )
        return cache.publish(job.name, staging, switch=job.switch).path
    except BaseException:
        rmtree(staging)
        raise
