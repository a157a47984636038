"""Pull-through: what is not cached is fetched upstream, through the verified download path.

- **Revisions.** A branch or tag name is resolved upstream (``HubClient.resolve``: the
  commit and the file listing), recorded in the store (:class:`UpstreamRecords`) and
  reused for ``ref_ttl`` seconds. When the upstream cannot answer, the recorded commit
  does (then a ref the cache's own entries record). An operator's ``--ref`` always wins.
  A commit's listing is asked for once and recorded, so ``model_info`` and the tree of a
  repo keep answering while the upstream is down.
- **Files.** A GET of a file not cached joins the pending fetch of its (repo, commit):
  one upstream fetch per file however many clients ask; files asked for while a fetch
  runs go into the next batch. A batch is one job of the library's own download path
  (``acquire._fetch``: ``HubClient.download_files`` -> ``download_many``), every byte
  verified as it streams (LFS SHA-256, or the git blob id of a small file), staged, and
  published as a normal cache entry ``<owner>--<name>--<commit[:12]>`` holding the files
  fetched so far (each batch republishes it, the earlier files hard-linked). Clients wait
  for the verified file, handed to them the moment its last byte checks out (the disk
  syncs and the entry is published after): the Hub's protocol has no per-chunk hashes,
  so no byte of a file is verified before all of it is, and none is sent before.
- **Failures** answer with the Hub's error shape: the upstream's 404s keep their
  ``X-Error-Code``; an unreachable, failing or lying upstream is a 502/504 with
  ``X-Error-Code: UpstreamUnavailable``/``UpstreamTimeout``/``UpstreamCorrupt``. Failed
  transfers leave nothing in the served entry (their resumable parts stay in
  ``downloads/``), and the next request fetches again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from caxton_models._core import git_blob_sha1_file, warm_up
from caxton_models._paths import check_name, safe_join
from caxton_models.acquire import _fetch
from caxton_models.acquire.hub import HubClient, RepoFile, RepoInfo
from caxton_models.acquire.validate import check_file_formats
from caxton_models.config import load_config
from caxton_models.errors import AccessDenied, CaxtonError, ModelNotFound, NetworkTimeout
from caxton_models.ops.server.catalog import (
    HEX40,
    Catalog,
    Missing,
    ServedFile,
    Snapshot,
    cache_entry,
    git_blob_sha1_bytes,
    lfs_pointer,
    now_iso,
    stamp_of,
)
from caxton_models.ops.server.options import Upstream
from caxton_models.store import (
    DIR_MODE,
    FileEntry,
    ListedFile,
    ModelCache,
    UpstreamRecords,
    now_utc,
    rmtree,
)

__all__ = ["PullThrough", "entry_name", "upstream_error"]

log = logging.getLogger("caxton_models.ops.server")

# How long a stopping mirror waits for files it handed out to be published.
_PUBLISH_WAIT = 30.0
# How long files handed out by a batch that then failed stay for their clients to open.
_LINGER = 10.0
_NOT_FOUND = {"repo": "RepoNotFound", "revision": "RevisionNotFound", "file": "EntryNotFound"}


def entry_name(repo_id: str, commit: str) -> str:
    """The cache entry that holds a pulled ``repo_id@commit``."""
    name = f"{repo_id.replace('/', '--')}--{commit[:12]}"
    if len(name) > 120:
        digest = hashlib.sha256(repo_id.encode()).hexdigest()[:16]
        name = f"{name[:80]}-{digest}--{commit[:12]}"
    return check_name(name)


def upstream_error(exc: BaseException) -> Missing:
    """The Hub's error shape for a failed upstream call (messages carry no credentials)."""
    if isinstance(exc, Missing):
        return exc
    msg = f"upstream: {exc}"
    if isinstance(exc, ModelNotFound):
        return Missing(_NOT_FOUND.get(exc.kind or "", "EntryNotFound"), msg)
    if isinstance(exc, AccessDenied):
        return Missing("GatedRepo" if exc.gated else None, msg, status=403)
    if isinstance(exc, NetworkTimeout):
        return Missing("UpstreamTimeout", msg, status=504)
    if isinstance(exc, CaxtonError) and exc.failure_type is not None:
        return Missing("UpstreamCorrupt", msg, status=502)  # bytes failed verification
    if not isinstance(exc, CaxtonError):
        log.exception("pull-through failed unexpectedly", exc_info=exc)
        msg = f"pull-through failed: {type(exc).__name__}"
    return Missing("UpstreamUnavailable", msg, status=502)


def _listed(info: RepoInfo) -> list[ListedFile]:
    return [ListedFile(f.path, f.size, f.sha256, f.git_oid, f.lfs) for f in info.files]


def _matches(have: ServedFile | None, listed: RepoFile) -> bool:
    """Whether a local file is the one the upstream lists: the same size and hashes (a
    file installed from an archive claims its repo and commit; the listing decides)."""
    if have is None or have.local is None or have.size != listed.size:
        return False
    if listed.sha256:
        return have.sha256 == listed.sha256
    return bool(listed.git_oid) and have.git_oid == listed.git_oid


def _served(f: RepoFile) -> ServedFile:
    sha = f.sha256 or ""
    oid = f.git_oid or (git_blob_sha1_bytes(lfs_pointer(sha, f.size)) if f.lfs else "")
    return ServedFile(f.path, None, f.size, sha, oid, f.lfs)


class PullThrough:
    """The pull-through state of one app; its methods run on the app's event loop."""

    def __init__(self, upstream: Upstream, catalog: Catalog) -> None:
        self.up = upstream
        self.catalog = catalog
        self.hub = HubClient(
            list(upstream.endpoints),
            token=upstream.token or "",  # "": never the mirror's HF_TOKEN by accident
            offline=False,
            timeout=upstream.timeout,
            retries=upstream.retries,
            connections=upstream.connections,
        )
        self.cache = ModelCache(upstream.cache_path)
        self.records = UpstreamRecords(self.cache.root)
        cfg = upstream.config or load_config()
        self.config = replace(cfg, cache=replace(cfg.cache, directory=self.cache.root))
        # Fetches (up to download.timeout_minutes each) and lookups have a pool each, so a
        # slow transfer never keeps a client from learning a revision.
        self.pool = ThreadPoolExecutor(upstream.workers, thread_name_prefix="caxton-pull")
        self.lookups = ThreadPoolExecutor(4, thread_name_prefix="caxton-lookup")
        self.recorder = ThreadPoolExecutor(1, thread_name_prefix="caxton-record")
        # The network runtime and HTTP client are built now (tens of ms loading TLS
        # roots), not while the first client waits; nothing is sent.
        self.lookups.submit(_warm_up)
        self._infos: dict[tuple[str, str], RepoInfo] = {}
        self._refs: dict[tuple[str, str], tuple[str, float]] = {}  # -> (commit, wall time)
        self._resolving: dict[tuple[str, str], asyncio.Future[RepoInfo]] = {}
        self._waiting: dict[tuple[str, str, str], asyncio.Future[ServedFile]] = {}
        self._queued: dict[tuple[str, str], list[str]] = {}
        self._draining: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs
        self.files_fetched = 0
        self.failures = 0
        self.format_problems: dict[str, str] = {}  # "repo@commit" -> what the check found
        self._publishing = threading.Condition()
        self._publish_count = 0  # jobs between handing files over and publishing them

    def close(self) -> None:
        # Files already handed to clients are still being published: let that finish
        # (seconds at most), so a restart finds them in the cache. Transfers still
        # running are not waited for; their bytes stay in downloads/ for a resume.
        with self._publishing:
            self._publishing.wait_for(lambda: not self._publish_count, timeout=_PUBLISH_WAIT)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.lookups.shutdown(wait=False, cancel_futures=True)
        self.recorder.shutdown(wait=True)  # what was learned upstream is kept

    # -- revisions ----------------------------------------------------------------------------

    async def snapshot(self, repo_id: str, revision: str) -> Snapshot:
        """``repo_id@revision`` with every file the upstream lists (fetched or not)."""
        if HEX40.fullmatch(revision):
            commit: str | None = revision
        else:
            commit = self.catalog.pinned.get(repo_id, {}).get(revision)
        info: RepoInfo | None = None
        if commit is None:
            commit, info = await self._commit_for(repo_id, revision)
        info = info or await self._listing(repo_id, commit)
        if info is None:  # the upstream cannot list it: what the cache fetched, if anything
            return self._fetched_only(repo_id, commit)
        local = self.catalog.snapshots.get((repo_id, commit))
        files: dict[str, ServedFile] = {}
        for f in info.files:
            have = local.files.get(f.path) if local is not None else None
            files[f.path] = have if have is not None and _matches(have, f) else _served(f)
        when = local.last_modified if local is not None else now_iso()
        return Snapshot(repo_id, commit, files, when)

    def _fetched_only(self, repo_id: str, commit: str) -> Snapshot:
        """The cached files of ``repo_id@commit`` that came from a hub; an installed
        model's word alone never stands for the upstream's commit."""
        snap = self.catalog.lookup(repo_id, commit)
        files = {p: f for p, f in snap.files.items() if not f.claimed}
        if not files:
            raise Missing(
                "UpstreamUnavailable",
                f"{repo_id}@{commit}: the upstream cannot list it, and this mirror holds it "
                "only from an install whose hashes the upstream never confirmed",
                status=502,
            )
        return Snapshot(repo_id, commit, files, snap.last_modified)

    async def _commit_for(self, repo_id: str, ref: str) -> tuple[str, RepoInfo | None]:
        recorded = self._recorded_ref(repo_id, ref)
        if recorded is not None and time.time() - recorded[1] < self.up.ref_ttl:
            return recorded[0], None
        try:
            info = await self._resolve(repo_id, ref)
            return info.commit, info
        except Missing as exc:
            # Upstream unreachable, or it does not have the repo: what we recorded, then
            # what the cache's own entries say, answers; else the upstream's error.
            fallback = recorded[0] if recorded else self.catalog.commit_of(repo_id, ref)
            if fallback is None:
                raise
            log.info("%s@%s: upstream failed (%s); using %s", repo_id, ref, exc, fallback)
            return fallback, None

    def _recorded_ref(self, repo_id: str, ref: str) -> tuple[str, float] | None:
        got = self._refs.get((repo_id, ref))
        if got is None:
            rec = self.records.ref(repo_id, ref)
            if rec is None:
                return None
            got = (rec.commit, time.time() - (now_utc() - rec.recorded) / timedelta(seconds=1))
            self._refs[(repo_id, ref)] = got
        return got

    async def _listing(self, repo_id: str, commit: str) -> RepoInfo | None:
        info = self._infos.get((repo_id, commit))
        if info is not None:
            return info
        recorded = self.records.listing(repo_id, commit)
        if recorded is not None:
            files = tuple(RepoFile(f.path, f.size, f.sha256, f.git_oid, f.lfs) for f in recorded)
            info = RepoInfo(repo_id, commit, commit, files, self.hub.endpoints[0])
            self._infos[(repo_id, commit)] = info
            return info
        try:
            return await self._resolve(repo_id, commit)
        except Missing:
            if (repo_id, commit) in self.catalog.snapshots:
                return None
            raise

    async def _resolve(self, repo_id: str, revision: str) -> RepoInfo:
        """One upstream resolve per (repo, revision) at a time, however many ask."""
        key = (repo_id, revision)
        fut = self._resolving.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self.lookups, self._resolve_blocking, repo_id, revision)
            self._resolving[key] = fut
            fut.add_done_callback(lambda _: self._resolving.pop(key, None))
        try:
            info = await asyncio.shield(fut)
        except Exception as exc:
            raise upstream_error(exc) from None
        self._infos[(repo_id, info.commit)] = info
        if not HEX40.fullmatch(revision):
            self._refs[key] = (info.commit, time.time())
        return info

    def _resolve_blocking(self, repo_id: str, revision: str) -> RepoInfo:
        info = self.hub.resolve(repo_id, revision)
        ref = None if HEX40.fullmatch(revision) else revision
        # Written behind the answer (a locked, fsynced file): this process keeps the
        # answer in memory meanwhile, and close() waits for the writes.
        self.recorder.submit(self._record, info, revision, ref)
        return info

    def _record(self, info: RepoInfo, revision: str, ref: str | None) -> None:
        try:
            self.records.record(info.repo_id, info.commit, _listed(info), ref=ref)
        except (OSError, CaxtonError, ValueError) as exc:  # serving goes on; only memory
            log.warning("cannot record %s@%s in the cache: %s", info.repo_id, revision, exc)

    # -- files --------------------------------------------------------------------------------

    async def fetch(self, snap: Snapshot, path: str) -> ServedFile:
        """The verified local copy of ``path``, fetched (once for all who ask) if needed."""
        key = (snap.repo_id, snap.commit)
        local = self.catalog.snapshots.get(key)
        have = local.files.get(path) if local is not None else None
        listed = self._infos.get(key)
        listing = listed.files if listed is not None else ()
        if have is not None and any(f.path == path and _matches(have, f) for f in listing):
            return have
        wkey = (*key, path)
        fut = self._waiting.get(wkey)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_retrieve)
            self._waiting[wkey] = fut
            self._queued.setdefault(key, []).append(path)
            if key not in self._draining:
                self._draining.add(key)
                task = asyncio.create_task(self._drain(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(fut)

    async def _drain(self, key: tuple[str, str]) -> None:
        """Fetch the queued files of ``key`` in batches until none is left."""
        try:
            await self._drain_batches(key)
        finally:
            self._draining.discard(key)

    async def _drain_batches(self, key: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        while self._queued.get(key):
            paths = self._queued.pop(key)
            info = self._infos[key]
            try:
                snap = await loop.run_in_executor(
                    self.pool, self._fetch_blocking, info, paths, loop
                )
            except BaseException as exc:
                self.failures += 1
                err = upstream_error(exc) if isinstance(exc, Exception) else Missing(
                    "UpstreamUnavailable", "the mirror is shutting down", status=503
                )  # fmt: skip
                for p in paths:
                    self._settle((*key, p), None, err)
                if not isinstance(exc, Exception):
                    raise
                continue
            self.catalog.add(snap, ())  # before any waiter wakes: later asks find it local
            for p in paths:
                got = snap.files.get(p)
                self._settle((*key, p), got, None if got else Missing(
                    "UpstreamCorrupt", f"{p} was fetched but is not servable", status=502
                ))  # fmt: skip

    def _settle(
        self, wkey: tuple[str, str, str], f: ServedFile | None, err: Missing | None
    ) -> None:
        fut = self._waiting.pop(wkey, None)
        if fut is None or fut.done():
            return
        if f is not None:
            fut.set_result(f)
        else:
            fut.set_exception(err or Missing(None, "fetch failed", status=502))

    def _fetch_blocking(
        self, info: RepoInfo, paths: list[str], loop: asyncio.AbstractEventLoop | None = None
    ) -> Snapshot:
        name = entry_name(info.repo_id, info.commit)
        installed = self.cache.get(name)
        have: dict[str, Any] = {}
        meta = installed.metadata if installed is not None else None
        same = meta is not None and meta.commit == info.commit
        if installed is not None and installed.manifest and same and installed.status == "verified":
            have = dict(installed.manifest)
        new = sorted(set(paths) - set(have))
        if new:
            self.cache.ensure_dirs()
            # A dead owner's "trash" folder is removed by the cache's crash recovery.
            ready = self.cache.downloads / f"{name}.trash.{os.getpid()}.{secrets.token_hex(4)}"
            early = None
            handed: list[bool] = []
            if loop is not None:
                early = functools.partial(self._hand_over, (info.repo_id, info.commit), new,
                                          ready, loop, handed)  # fmt: skip
            done = False
            try:
                self._fetch_job(name, info, have, new, installed, early)
                done = True
            finally:
                if handed:
                    with self._publishing:
                        self._publish_count -= 1
                        self._publishing.notify_all()
                if done or not handed or loop is None:
                    # Published by now: the waiters have opened their files (or will find
                    # the published entry). Removed before the entry is read below, so
                    # the stamps it gives are the ones the files keep.
                    rmtree(ready)
                else:
                    # The sync or the publish failed after the waiters were answered: they
                    # may not have opened their verified files yet, and nothing published
                    # stands in for them. Removed a little later.
                    loop.call_soon_threadsafe(loop.call_later, _LINGER, self._remove, ready)
        snap, _ = cache_entry(self.cache.model_dir(name))
        if snap is None:
            raise Missing("UpstreamCorrupt", f"{name} was not published", status=502)
        if new and set(snap.files) >= {f.path for f in info.files}:
            self._check_whole(name, info)
        return snap

    def _remove(self, folder: Path) -> None:
        with contextlib.suppress(RuntimeError):  # stopping: the cache's recovery removes it
            self.lookups.submit(rmtree, folder)

    def _check_whole(self, name: str, info: RepoInfo) -> None:
        """Formats are checked once, on the whole model: a batch may hold an ONNX graph
        without its external data. The bytes are the upstream's (every one verified
        against its listing), so a finding is reported, not hidden from clients."""
        try:
            check_file_formats(self.cache.model_dir(name), [f.path for f in info.files], model=name)
        except CaxtonError as exc:
            log.warning("pull-through: %s@%s: %s", info.repo_id, info.commit, exc)
            self.format_problems[f"{info.repo_id}@{info.commit}"] = str(exc)

    def _hand_over(
        self,
        key: tuple[str, str],
        new: list[str],
        ready: Path,
        loop: asyncio.AbstractEventLoop,
        handed: list[bool],
        work: Path,
        entries: Mapping[str, FileEntry],
    ) -> None:
        """Every byte verified, not yet published (its fsyncs take a while): the new
        files are hard-linked into ``ready``, where no rename moves them, and their
        waiting clients are answered from there at once."""
        served: list[ServedFile] = []
        try:
            os.mkdir(ready, DIR_MODE)
            for rel in new:
                e = entries[rel]
                dst = safe_join(ready, rel)
                dst.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
                os.link(safe_join(work, rel), dst, follow_symlinks=False)
                oid = e.git_oid or (
                    git_blob_sha1_bytes(lfs_pointer(e.sha256, e.size))
                    if e.lfs
                    else git_blob_sha1_file(dst)
                )
                stamp = stamp_of(os.lstat(dst))
                served.append(ServedFile(rel, dst, e.size, e.sha256, oid, e.lfs, stamp))
        except (OSError, CaxtonError) as exc:  # the waiters get the published entry instead
            log.info("pull-through: cannot hand over before publishing: %s", exc)
            return
        with self._publishing:
            self._publish_count += 1
            handed.append(True)
        for f in served:
            loop.call_soon_threadsafe(self._settle, (*key, f.path), f, None)

    def _fetch_job(
        self,
        name: str,
        info: RepoInfo,
        have: dict[str, Any],
        new: list[str],
        installed: Any,
        on_verified: Callable[[Path, Mapping[str, FileEntry]], None] | None = None,
    ) -> None:
        files = [info.file(p) for p in sorted({*have, *new})]
        for f in files:
            if f.path in new and not (f.sha256 or f.git_oid):
                raise Missing(
                    "UpstreamCorrupt",
                    f"the upstream lists {f.path} without a hash: it cannot be verified",
                    status=502,
                )
        # A byte mirror never loads what it serves (pickle weights are just bytes to it): its
        # job names the entry, the repo and the commit, with no registry model behind them.
        expected = {f.path: f.sha256 or getattr(have.get(f.path), "sha256", None) for f in files}
        job = _fetch.Job(
            cache=self.cache,
            config=self.config,
            hub=self.hub,
            name=name,
            model_id=info.repo_id,
            revision=info.commit,
            info=info,
            files=files,
            expected=expected,
            installed=installed,
            only=new,  # the others are hard-linked from the published entry
            source=urlsplit(info.endpoint).hostname or "upstream",
            check_formats=False,  # per model, once it is whole (_check_whole)
            on_verified=on_verified,
            # Waiting clients are answered from the verified bytes; the disk syncs after.
            late_sync=True,
        )
        log.info("pull-through: fetching %d file(s) of %s@%s", len(new), info.repo_id, info.commit)
        _fetch.run(job)
        self.files_fetched += len(new)

    def health(self) -> Any:
        from caxton_models.ops.health import CheckResult

        detail = (
            f"pull-through from {', '.join(self.hub.endpoints)}: "
            f"{self.files_fetched} file(s) fetched, {self.failures} failed batch(es)"
        )
        data = {
            "upstreams": list(self.hub.endpoints),
            "files_fetched": self.files_fetched,
            "format_problems": dict(self.format_problems),
        }
        if self.format_problems:
            detail += f"; {len(self.format_problems)} model(s) failed their format check"
        return CheckResult(
            "mirror_upstream", "warn" if self.format_problems else "ok", detail, data=data
        )


def _warm_up() -> None:
    try:
        warm_up()
    except (CaxtonError, RuntimeError) as exc:  # the first request builds them instead
        log.info("pull-through: cannot prepare the network client: %s", exc)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # A waiter may have gone away (client disconnected): mark the error as seen.
    if not fut.cancelled():
        fut.exception()
