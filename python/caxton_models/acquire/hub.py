"""A Hugging Face Hub client: resolve a revision, list files with hashes, download verified.

Policy lives here; every byte goes through the Rust core (``http_request`` for the
API, ``download_many`` for files). What it does, in the Hub's protocol (HUB-PROTOCOL.md):

- ``resolve(repo_id, revision)``: ``GET /api/models/{repo}/revision/{rev}`` gives the
  commit, then ``GET /api/models/{repo}/tree/{commit}?recursive=true`` lists every file with
  its size, git blob id and, for LFS files, SHA-256. That listing is *the manifest*.
- Endpoints are tried in order: ``HF_ENDPOINT`` or the ones given (mirrors), then the Hub.
  Whatever endpoint serves a file, its bytes are checked against the same manifest (LFS
  SHA-256 by the core; git blob SHA-1 of small files here, hashed by the core), so a
  mirror can make a download fail but never make it wrong.
- The token (``token=``, else ``HF_TOKEN``) goes only to the hosts in ``token_endpoints``
  (by default the first endpoint and huggingface.co), never over plain HTTP to another
  machine, and never into a message, ``repr`` or log: it shows as ``<TOKEN>``.
- Errors: a missing repository, revision or file each raise :class:`ModelNotFound` with
  ``kind`` = ``"repo"``/``"revision"``/``"file"``; a gated or private repository raises
  :class:`AccessDenied`; offline mode raises :class:`OfflineError`. 429/5xx are retried
  by the core with backoff that honours ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from caxton_models._core import (
    DEFAULT_RETRY_DELAY_MS,
    DEFAULT_TIMEOUT_SECS,
    DownloadItem,
    __version__,
    download_many,
    git_blob_sha1_file,
    http_request,
    sha256_file,
)
from caxton_models._ids import check_repo_id, check_revision, is_commit
from caxton_models.config import env_endpoint, env_offline, env_token
from caxton_models.errors import (
    AccessDenied,
    CaxtonError,
    ChecksumMismatch,
    DownloadError,
    InsufficientDiskSpace,
    InvalidPath,
    ModelNotFound,
    NetworkError,
    NetworkTimeout,
    OfflineError,
    PermissionDenied,
    ServerError,
)

__all__ = [
    "HF_HUB",
    "FileMetadata",
    "HubClient",
    "RepoFile",
    "RepoInfo",
    "RepoRefs",
    "default_endpoints",
    "redact_url",
]

from caxton_models.acquire._endpoints import (
    HF_HUB,
    _normalize_endpoint,
    _origin,
    _Token,
    default_endpoints,
    redact_url,
)
from caxton_models.acquire._listing import (
    FileMetadata,
    RepoFile,
    RepoInfo,
    RepoRefs,
    _check_repo_path,
    _files_from_siblings,
    _json,
    _next_link,
    _Target,
    _tree_entry,
    parse_refs,
)

log = logging.getLogger("caxton_models.acquire.hub")

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_MAX_TREE_PAGES = 1000


class HubClient:
    """Resolves and downloads Hub repositories through an ordered list of endpoints.

    ``endpoints`` defaults to ``HF_ENDPOINT`` (if set), else the Hub. ``token`` defaults to
    ``HF_TOKEN``; it is sent only to ``token_endpoints`` (default: the first endpoint and
    the Hub), and to a plain-HTTP endpoint only if it is this machine (loopback) or
    ``allow_http_token=True``. ``offline`` defaults to ``HF_HUB_OFFLINE``/``CAXTON_OFFLINE``.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | None = None,
        *,
        token: str | None = None,
        offline: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECS,
        retries: int = 5,
        token_endpoints: Sequence[str] | None = None,
        allow_http_token: bool = False,
        connections: int | None = None,
        chunk_size: int | None = None,
        retry_delay: float = DEFAULT_RETRY_DELAY_MS / 1000,
    ) -> None:
        # connections / chunk_size go to the Rust engine (None: its adaptive defaults).
        self.connections = connections
        self.chunk_size = chunk_size
        # The first retry's wait in seconds (the core doubles it up to 30 s).
        self.retry_delay = retry_delay
        if endpoints is None:
            env = env_endpoint()
            endpoints = [env] if env else [HF_HUB]
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        eps: list[str] = []
        for ep in endpoints:
            n = _normalize_endpoint(ep)
            if n not in eps:
                eps.append(n)
        if not eps:
            raise ValueError("no endpoint to download from: pass endpoints= or set HF_ENDPOINT")
        self.endpoints: tuple[str, ...] = tuple(eps)
        raw = token if token is not None else env_token()
        self._token = _Token(raw.strip()) if raw and raw.strip() else None
        if offline is None:
            offline = env_offline()
        self.offline = offline
        self.timeout = timeout
        self.retries = retries
        trusted = token_endpoints if token_endpoints is not None else [eps[0], HF_HUB]
        self._token_origins = frozenset(_origin(_normalize_endpoint(t)) for t in trusted)
        self.allow_http_token = allow_http_token

    def __repr__(self) -> str:
        token = "<TOKEN>" if self._token else None
        return (
            f"HubClient(endpoints={list(self.endpoints)!r}, token={token}, offline={self.offline})"
        )

    __str__ = __repr__

    @property
    def authenticated(self) -> bool:
        return self._token is not None

    # -- requests ------------------------------------------------------------------------------

    def _headers(self, url: str) -> dict[str, str]:
        headers = {
            "User-Agent": f"caxton-models/{__version__}",
            "Accept-Encoding": "identity",
        }
        if self._token is not None and self._token_allowed(url):
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return headers

    def _token_allowed(self, url: str) -> bool:
        origin = _origin(url)
        if origin not in self._token_origins:
            return False
        return origin[0] == "https" or origin[1] in _LOOPBACK or self.allow_http_token

    def _get(self, url: str, *, follow_redirects: bool = True, method: str = "GET") -> Any:
        headers = self._headers(url)
        log.debug("%s %s (authenticated: %s)", method, redact_url(url), "Authorization" in headers)
        return http_request(
            method,
            url,
            headers=headers,
            timeout=self.timeout,
            retries=self.retries,
            follow_redirects=follow_redirects,
            retry_delay=self.retry_delay,
        )

    def _raise_for(
        self,
        resp: Any,
        *,
        endpoint: str,
        repo_id: str,
        revision: str,
        path: str | None = None,
    ) -> None:
        status = int(resp.status)
        if 200 <= status < 300 or (path is not None and status in (301, 302, 303, 307, 308)):
            return
        code = resp.headers.get("x-error-code", "")
        where = f"on {redact_url(endpoint)}"
        fields: dict[str, Any] = {
            "repo_id": repo_id,
            "revision": revision,
            "path": path,
            "endpoint": redact_url(endpoint),
            "status": status,
        }
        if code == "RepoNotFound" or (status == 404 and not code and path is None):
            hint = "" if self._token else " (if it is private, set HF_TOKEN)"
            raise ModelNotFound(
                f"model repository {repo_id} not found {where}: check the id{hint}",
                kind="repo",
                **fields,
            )
        if code == "RevisionNotFound":
            raise ModelNotFound(
                f"revision {revision!r} of {repo_id} not found {where}: "
                "use a branch, tag or full commit sha that exists",
                kind="revision",
                **fields,
            )
        if code == "EntryNotFound" or status == 404:
            raise ModelNotFound(
                f"file {path!r} not found in {repo_id} at {revision} {where}",
                kind="file",
                **fields,
            )
        if status in (401, 403):
            gated = code == "GatedRepo"
            what = "is gated" if gated else "needs authorization"
            if self._token is None:
                fix = "set HF_TOKEN (or token in the config) to a token with access"
            elif not self._token_allowed(endpoint):
                fix = "the token is not sent to this endpoint (it is not a trusted Hub host)"
            else:
                fix = "the token was refused: request access to the model on its Hub page"
            raise AccessDenied(
                f"{repo_id} {what} {where} (HTTP {status}): {fix}", gated=gated, **fields
            )
        raise ServerError(
            f"HTTP {status} from {where} for {repo_id}"
            + (f" file {path}" if path else "")
            + ": the server refused the request",
            **fields,
        )

    # -- API ----------------------------------------------------------------------------------

    def resolve(self, repo_id: str, revision: str = "main") -> RepoInfo:
        """Resolve ``revision`` to a commit and list its files (the download manifest)."""
        check_repo_id(repo_id)
        check_revision(revision)
        self._ensure_online(f"resolve {repo_id}@{revision}")
        errors: list[Exception] = []
        for ep in self.endpoints:
            try:
                return self._resolve_on(ep, repo_id, revision)
            except (
                ModelNotFound,
                PermissionDenied,
                ServerError,
                NetworkError,
                NetworkTimeout,
            ) as e:
                log.info("endpoint %s could not resolve %s: %s", redact_url(ep), repo_id, e)
                errors.append(e)
            except DownloadError as e:  # any other transport failure: try the next endpoint
                errors.append(e)
        self._raise_best(errors, f"resolve {repo_id}@{revision}")

    def _resolve_on(self, ep: str, repo_id: str, revision: str) -> RepoInfo:
        rev = quote(revision, safe="")
        resp = self._get(f"{ep}/api/models/{repo_id}/revision/{rev}")
        self._raise_for(resp, endpoint=ep, repo_id=repo_id, revision=revision)
        info = _json(resp, ep)
        commit = info.get("sha") if isinstance(info, dict) else None
        if not is_commit(commit):
            raise ServerError(
                f"{redact_url(ep)} gave no valid commit for {repo_id}@{revision} "
                f"(sha={commit!r}): is it a Hugging Face Hub endpoint?",
                status=int(resp.status),
                endpoint=redact_url(ep),
            )
        if is_commit(revision) and commit != revision:
            raise ServerError(
                f"{redact_url(ep)} answered commit {commit} for {repo_id}@{revision}",
                status=int(resp.status),
                endpoint=redact_url(ep),
            )
        files = self._tree(ep, repo_id, revision, commit)
        if files is None:  # an older mirror without the tree API: siblings with sizes
            files = _files_from_siblings(info.get("siblings"), repo_id)
        return RepoInfo(repo_id, revision, commit, files, ep)

    def refs(self, repo_id: str) -> RepoRefs:
        """The repository's branches and tags with their commits (the first
        endpoint that answers)."""
        check_repo_id(repo_id)
        self._ensure_online(f"list the refs of {repo_id}")
        errors: list[Exception] = []
        for ep in self.endpoints:
            try:
                resp = self._get(f"{ep}/api/models/{repo_id}/refs")
                self._raise_for(resp, endpoint=ep, repo_id=repo_id, revision="main")
                return parse_refs(_json(resp, ep), repo_id, redact_url(ep))
            except (ModelNotFound, PermissionDenied, DownloadError) as e:
                log.info("endpoint %s could not list refs of %s: %s", redact_url(ep), repo_id, e)
                errors.append(e)
        self._raise_best(errors, f"list the refs of {repo_id}")

    def _tree(
        self, ep: str, repo_id: str, revision: str, commit: str
    ) -> tuple[RepoFile, ...] | None:
        url: str | None = f"{ep}/api/models/{repo_id}/tree/{commit}?recursive=true&expand=false"
        files: dict[str, RepoFile] = {}
        pages = 0
        while url is not None:
            pages += 1
            if pages > _MAX_TREE_PAGES:
                raise ServerError(f"{redact_url(ep)}: tree of {repo_id} has too many pages")
            resp = self._get(url)
            if resp.status == 404 and pages == 1 and not resp.headers.get("x-error-code"):
                return None
            self._raise_for(resp, endpoint=ep, repo_id=repo_id, revision=revision)
            entries = _json(resp, ep)
            if not isinstance(entries, list):
                raise ServerError(f"{redact_url(ep)}: tree of {repo_id} is not a JSON list")
            for entry in entries:
                f = _tree_entry(entry, repo_id)
                if f is None:
                    continue
                if f.path in files:
                    raise InvalidPath(
                        f"the listing of {repo_id} names {f.path!r} twice: refusing it",
                        path=f.path,
                        repo_id=repo_id,
                    )
                files[f.path] = f
            url = _next_link(resp.headers.get("link", ""), ep)
        return tuple(sorted(files.values(), key=lambda f: f.path))

    def file_url(self, repo_id: str, commit: str, path: str, endpoint: str | None = None) -> str:
        ep = _normalize_endpoint(endpoint) if endpoint else self.endpoints[0]
        return f"{ep}/{repo_id}/resolve/{quote(commit, safe='')}/{quote(path, safe='/')}"

    def file_metadata(self, repo_id: str, revision: str, path: str) -> FileMetadata:
        """``HEAD`` one file: its commit, ETag and size, as huggingface_hub reads them."""
        check_repo_id(repo_id)
        check_revision(revision)
        _check_repo_path(path, repo_id)
        self._ensure_online(f"look up {repo_id}/{path}")
        errors: list[Exception] = []
        for ep in self.endpoints:
            url = self.file_url(repo_id, revision, path, ep)
            try:
                resp = self._get(url, follow_redirects=False, method="HEAD")
                self._raise_for(resp, endpoint=ep, repo_id=repo_id, revision=revision, path=path)
                h = resp.headers
                commit = h.get("x-repo-commit", "")
                etag = (h.get("x-linked-etag") or h.get("etag") or "").removeprefix("W/")
                etag = etag.strip('"')
                if not is_commit(commit) or not etag:
                    raise ServerError(
                        f"{redact_url(ep)} sent no X-Repo-Commit/ETag for {path}: "
                        "is it a Hugging Face Hub endpoint?",
                        status=int(resp.status),
                    )
                size_h = h.get("x-linked-size") or (
                    h.get("content-length") if resp.status < 300 else None
                )
                size = _size_header(size_h, ep, path, int(resp.status))
                location = h.get("location") or url
                return FileMetadata(commit, etag, size, location)
            except (ModelNotFound, PermissionDenied, DownloadError) as e:
                errors.append(e)
        self._raise_best(errors, f"look up {repo_id}/{path}")

    def download_file(
        self,
        info: RepoInfo,
        path: str,
        dest: str | os.PathLike[str],
        *,
        progress: Callable[[int], object] | None = None,
    ) -> str:
        """Download one file of ``info`` to ``dest``; returns its SHA-256.
        See :meth:`download_files`."""
        return self.download_files(info, {path: Path(dest)}, progress=progress)[path]

    def download_files(
        self,
        info: RepoInfo,
        targets: Mapping[str, Path],
        *,
        expected: Mapping[str, str | None] | None = None,
        progress: Callable[[int], object] | None = None,
        max_concurrent: int = 3,
        time_limit: float | None = None,
        sync: bool = True,
    ) -> dict[str, str]:
        """Download the files ``targets`` names (repo path -> destination) in one
        transfer of the core's: one cancel flag (Ctrl-C stops every file at once,
        leaving resumable parts), one connection budget shared by the files.

        Each file is verified once, while it streams: its SHA-256 against
        ``expected`` or the manifest's LFS SHA-256 (by the core), or, for a small
        file the manifest knows only by git blob id, that id before the file is
        moved into place. Returns each file's SHA-256 as the core computed it.
        Endpoints are tried in order, starting with the one that resolved
        ``info``; what one endpoint did not finish, the next one fetches.
        ``time_limit`` (seconds) bounds the whole call, however large the
        files: past it the core stops and ``NetworkTimeout`` is raised, with
        the bytes kept for the next attempt to resume. ``sync=False``: files are
        renamed into place without an fsync; the caller syncs them before
        recording them anywhere.
        """
        wanted = {p: (info.file(p), Path(d)) for p, d in targets.items()}
        for f, _ in wanted.values():
            _check_repo_path(f.path, info.repo_id)
        self._ensure_online(f"download {info.repo_id}")
        digests: dict[str, str] = {}
        errors: list[Exception] = []
        until = None if time_limit is None else time.monotonic() + time_limit
        for ep in [info.endpoint, *(e for e in self.endpoints if e != info.endpoint)]:
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:  # the time limit is the caller's, not an endpoint's
                if errors:
                    raise errors[-1]
                raise NetworkTimeout(f"download {info.repo_id}: its {time_limit:g} s limit is up")
            todo = [_Target(f, d, (expected or {}).get(p) or f.sha256) for p, (f, d) in
                    wanted.items() if p not in digests]  # fmt: skip
            try:
                digests.update(
                    self._fetch_from(ep, info, todo, progress, max_concurrent, left, sync)
                )
                return digests
            except (InsufficientDiskSpace, PermissionDenied, KeyboardInterrupt):
                raise  # this machine's disk or folder: no other endpoint can fix that
            except (AccessDenied, ServerError) as e:
                errors.append(self._explain(e, ep, info, todo[0].file.path))
            except DownloadError as e:  # network, checksum, size, incomplete: next endpoint
                log.info("download from %s failed: %s", redact_url(ep), e)
                errors.append(e)
            digests.update(self._finished(info, todo))
        self._raise_best(errors, f"download {info.repo_id}")

    def _fetch_from(
        self,
        ep: str,
        info: RepoInfo,
        todo: list[_Target],
        progress: Callable[[int], object] | None,
        max_concurrent: int,
        time_limit: float | None = None,
        sync: bool = True,
    ) -> dict[str, str]:
        items: list[DownloadItem] = []
        for t in todo:
            t.dest.parent.mkdir(parents=True, exist_ok=True)
            url = self.file_url(info.repo_id, info.commit, t.file.path, ep)
            items.append({"url": url, "dest": t.landing, "size": t.file.size, "sha256": t.sha256})
        # One origin for every file of this endpoint: the core sends these
        # headers only to it, never to a host a redirect leads to.
        headers = self._headers(self.file_url(info.repo_id, info.commit, "x", ep))
        log.debug("GET %d file(s) from %s (authenticated: %s)", len(items),
                  redact_url(ep), "Authorization" in headers)  # fmt: skip
        results = download_many(
            items,
            max_concurrent=max_concurrent,
            connections=self.connections,
            headers=headers,
            chunk_size=self.chunk_size,
            timeout=self.timeout,
            retries=self.retries,
            progress=progress,
            retry_delay=self.retry_delay,
            time_limit=time_limit,
            sync=sync,
        )
        out: dict[str, str] = {}
        for t, result in zip(todo, results, strict=True):
            self._settle(info, t, ep)
            out[t.file.path] = str(result.sha256)
        return out

    def _settle(self, info: RepoInfo, t: _Target, ep: str) -> None:
        """A file known only by git blob id: check the id, then move it into place."""
        if t.landing == t.dest:
            return
        actual = git_blob_sha1_file(t.landing)
        if actual != t.file.git_oid:
            t.landing.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"git blob id mismatch for {t.file.path} of {info.repo_id} from "
                f"{redact_url(ep)}: expected {t.file.git_oid}, got {actual}; the file was removed",
                expected=t.file.git_oid,
                actual=actual,
                path=t.file.path,
            )
        os.replace(t.landing, t.dest)

    def _finished(self, info: RepoInfo, todo: list[_Target]) -> dict[str, str]:
        """After a failed transfer: the files that arrived whole anyway (the
        core renames a file into place only once it is verified)."""
        done: dict[str, str] = {}
        for t in todo:
            with contextlib.suppress(OSError):
                if os.lstat(t.landing).st_size != t.file.size:
                    continue
                with contextlib.suppress(ChecksumMismatch):
                    self._settle(info, t, info.endpoint)
                    if t.sha256 is not None:
                        done[t.file.path] = t.sha256
                    else:  # never recorded: hash it once, here
                        done[t.file.path] = sha256_file(t.dest)
        return done

    def _explain(self, err: Exception, ep: str, info: RepoInfo, path: str) -> Exception:
        """Turn a bare HTTP 401/403/404 from a download into the Hub's error, via a HEAD."""
        status = getattr(err, "status", None)
        if status not in (401, 403, 404):
            return err
        try:
            resp = self._get(
                self.file_url(info.repo_id, info.commit, path, ep),
                follow_redirects=False,
                method="HEAD",
            )
            self._raise_for(
                resp, endpoint=ep, repo_id=info.repo_id, revision=info.commit, path=path
            )
        except CaxtonError as better:
            return better
        return err

    def _ensure_online(self, what: str) -> None:
        if self.offline:
            raise OfflineError(
                f"cannot {what}: offline mode is on (HF_HUB_OFFLINE/CAXTON_OFFLINE); "
                "use a model that is already in the cache, or turn offline mode off"
            )

    def _raise_best(self, errors: list[Exception], what: str) -> NoReturn:
        """Raise the most useful of the endpoints' errors, naming every endpoint tried."""

        def rank(e: Exception) -> int:
            if isinstance(e, AccessDenied):
                return 0
            if isinstance(e, ModelNotFound):
                return {"file": 1, "revision": 2, "repo": 4}.get(getattr(e, "kind", ""), 4)
            if isinstance(e, CaxtonError) and e.failure_type is not None:
                return 3  # checksum/size/format: the bytes were wrong somewhere
            return 5

        if not errors:
            raise RuntimeError(f"cannot {what}: no endpoint was tried")
        best = min(errors, key=rank)
        if len(errors) > 1 and isinstance(best, CaxtonError):
            others = "; ".join(str(e) for e in errors if e is not best)
            best.message = f"{best.message} (other endpoints: {others})"
            best.args = (best.message,)
        raise best


def _size_header(value: str | None, endpoint: str, path: str, status: int) -> int | None:
    """A size header as a number, None when absent. ASCII digits only: "²" and
    "٣" pass ``str.isdigit`` but are no size (int() would raise a bare ValueError)."""
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 20):
        raise ServerError(
            f"{redact_url(endpoint)} sent a size header {value[:40]!r} for {path} that is "
            "not a number of bytes: is it a Hugging Face Hub endpoint?",
            status=status,
        )
    return int(value)
