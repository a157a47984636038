"""The HTTP side of the mirror: the Hub's routes, answered from the catalog (and upstream).

- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}``: ``sha`` and
  ``siblings`` (size, blobId, LFS sha256).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true``: the tree listing.
- ``GET /api/models/{repo}/refs``: branches with their commits (``targetCommit``).
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (LFS sha256 for
  weights, git blob sha1 for small files), ``X-Linked-Etag``, ``X-Linked-Size``,
  ``Content-Length``, ``Accept-Ranges``, ``Range`` -> 206, ``If-Range``; errors carry
  ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
  ``GatedRepo``, ``RepoNotAllowed``, and ``Upstream*`` for a failed pull-through).
- Optionally LFS files answer with a 302 to a second origin (``/lfs/{sha256}``), as the Hub
  does with its CDN, so clients exercise the cross-origin path (and drop Authorization).
- ``GET /metrics`` (Prometheus text) and ``GET /health`` (JSON; 200, or 503 when a check
  fails) for the operator; neither is part of the Hub's protocol.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from caxton_models._ids import is_commit, is_repo_id
from caxton_models.ops.server.access import AccessRules
from caxton_models.ops.server.catalog import DEFAULT_BRANCH, Catalog, Missing, Snapshot
from caxton_models.ops.server.options import (
    CATALOG,
    OPTIONS,
    ServeOptions,
    error_response,
    printable,
)
from caxton_models.ops.server.pullthrough import PullThrough
from caxton_models.ops.server.sendfile import StaleFile, send_file

__all__ = ["PULL", "REF_SOURCE_HEADER", "AccessLogger", "make_app"]

PULL: web.AppKey[PullThrough] = web.AppKey("pull", PullThrough)
log = logging.getLogger("caxton_models.ops.server")


_REFRESH: web.AppKey[asyncio.Lock] = web.AppKey("refresh", asyncio.Lock)
REF_SOURCE_HEADER = "X-Caxton-Ref-Source"


async def _snapshot(request: web.Request, repo_id: str, revision: str) -> Snapshot:
    """The snapshot a request names, or :class:`Missing` (the Hub's error to answer)."""
    if not is_repo_id(repo_id):
        raise Missing("RepoNotFound", f"Repository {repo_id!r} not found on this mirror.")
    opts: ServeOptions = request.app[OPTIONS]
    if not opts.access.repo_allowed(repo_id):
        # Refused before any lookup: a pull-through mirror never fetches it either.
        msg = f"{repo_id} is not allowed on this mirror (its allow/deny list refuses it)"
        raise Missing("RepoNotAllowed", msg, status=403)
    pull = request.app.get(PULL)
    if pull is not None:
        return await pull.snapshot(repo_id, revision)
    return await _lookup(request.app, repo_id, revision)


async def _mark_ref_source(request: web.Request, response: web.StreamResponse) -> None:
    """Say so when a branch name was answered with the current revision's commit."""
    repo_id = request.match_info.get("repo_id")
    revision = request.match_info.get("revision") or DEFAULT_BRANCH
    if repo_id is None or PULL in request.app or response.status >= 400:
        return
    source = request.app[CATALOG].ref_source(repo_id, revision)
    if source:
        response.headers[REF_SOURCE_HEADER] = source


async def _lookup(app: web.Application, repo_id: str, revision: str) -> Snapshot:
    try:
        return app[CATALOG].lookup(repo_id, revision)
    except Missing:
        opts: ServeOptions = app[OPTIONS]
        if opts.rescan_after is None:
            raise
        if time.monotonic() - opts.last_scan < opts.rescan_after:
            raise
        # A model may have been downloaded into the cache since we started.
        if not await refresh(app):
            raise
        return app[CATALOG].lookup(repo_id, revision)


async def refresh(app: web.Application) -> bool:
    """Rebuild the catalog from its source (off the event loop, one rebuild at a time);
    False when it has none or the rebuild failed (the catalog is then left as it was)."""
    opts: ServeOptions = app[OPTIONS]
    catalog: Catalog = app[CATALOG]
    rebuild = opts.rescan or catalog.rebuild
    if rebuild is None:
        return False
    async with app[_REFRESH]:
        opts.last_scan = time.monotonic()
        try:
            fresh = await asyncio.get_running_loop().run_in_executor(None, rebuild)
        except (OSError, ValueError) as exc:  # CatalogError is a ValueError
            log.warning("cannot rebuild the catalog of %s: %s", catalog.source, exc)
            return False
        catalog.replace_with(fresh)
    return True


async def _model_info(request: web.Request) -> web.StreamResponse:
    repo_id = request.match_info["repo_id"]
    revision = request.match_info.get("revision") or "main"
    try:
        snap = await _snapshot(request, repo_id, revision)
    except Missing as exc:
        return error_response(exc.status, exc.code, str(exc), exc.commit)
    return web.json_response(snap.model_info())


async def _refs(request: web.Request) -> web.StreamResponse:
    """The Hub's refs listing: every branch this mirror knows (an operator's
    ``--ref`` first), each with its commit; a mirror records no tags apart."""
    repo_id = request.match_info["repo_id"]
    catalog: Catalog = request.app[CATALOG]
    try:
        await _snapshot(request, repo_id, "main")  # the same checks as any other route
    except Missing as exc:
        if exc.code != "RevisionNotFound":
            return error_response(exc.status, exc.code, str(exc), exc.commit)
    names = {**catalog.refs.get(repo_id, {}), **catalog.pinned.get(repo_id, {})}
    if catalog.ref_source(repo_id, DEFAULT_BRANCH) is not None:
        names[DEFAULT_BRANCH] = catalog.current[repo_id][0]
    branches = [
        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in sorted(names.items())
    ]
    return web.json_response({"branches": branches, "converts": [], "tags": []})


async def _tree(request: web.Request) -> web.StreamResponse:
    repo_id = request.match_info["repo_id"]
    revision = request.match_info["revision"]
    try:
        snap = await _snapshot(request, repo_id, revision)
    except Missing as exc:
        return error_response(exc.status, exc.code, str(exc), exc.commit)
    recursive = request.query.get("recursive", "").lower() in ("1", "true")
    entries = snap.tree(request.match_info.get("path", ""), recursive)
    if entries is None:
        msg = "No such folder in this revision"
        return error_response(404, "EntryNotFound", msg, snap.commit)
    return web.json_response(entries)


def _authorized(request: BaseRequest, opts: ServeOptions, repo_id: str) -> int | None:
    """None if the request may read ``repo_id``; else the status to answer (401/403)."""
    if repo_id not in opts.gated:
        return None
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return 401
    rules = AccessRules.build(tokens=opts.tokens)
    return None if rules.token_ok(auth) else 403


async def _resolve(request: web.Request) -> web.StreamResponse:
    head = request.method == "HEAD"
    repo_id = request.match_info["repo_id"]
    revision = request.match_info["revision"]
    path = request.match_info["path"]
    for attempt in (1, 2):
        try:
            snap = await _snapshot(request, repo_id, revision)
        except Missing as exc:
            return error_response(exc.status, exc.code, str(exc), exc.commit, head=head)
        try:
            return await _resolve_in(request, snap, path)
        except StaleFile as exc:
            # The file changed under the catalog (a revision switched, a folder edited):
            # look it up once more in a catalog rebuilt from the source.
            if attempt == 1 and await refresh(request.app):
                continue
            msg = f"{path} at {snap.commit} changed on disk since it was verified ({exc})"
            return error_response(404, "EntryNotFound", msg, snap.commit, head)
    raise AssertionError("unreachable")  # pragma: no cover


async def _resolve_in(request: web.Request, snap: Snapshot, path: str) -> web.StreamResponse:
    head = request.method == "HEAD"
    repo_id = snap.repo_id
    opts: ServeOptions = request.app[OPTIONS]
    denied = _authorized(request, opts, repo_id)
    if denied is not None:
        msg = (
            f"Access to model {repo_id} is restricted. "
            "You must have access to it and be authenticated."
        )
        return error_response(denied, "GatedRepo", msg, snap.commit, head=head)
    f = snap.files.get(path)
    if f is None:
        msg = f"{path} does not exist at {snap.commit}"
        return error_response(404, "EntryNotFound", msg, snap.commit, head)
    pull = request.app.get(PULL)
    if f.local is None and pull is not None and (not head or (f.lfs and opts.lfs_origin)):
        # Not fetched yet: wait for the verified file (a HEAD needs only the listing).
        try:
            f = await pull.fetch(snap, path)
        except Missing as exc:
            return error_response(exc.status, exc.code, str(exc), snap.commit, head)
    headers = {
        "X-Repo-Commit": snap.commit,
        "ETag": f'"{f.etag}"',
        "X-Linked-Etag": f'"{f.etag}"',
        "X-Linked-Size": str(f.size),
        "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag",
    }
    if f.lfs and opts.lfs_origin:
        # The commit rides along so the "CDN" can repeat the Hub's metadata headers:
        # huggingface_hub 1.x follows a redirect to the same host name (any port) and
        # reads them from the final response, where the real CDN is another host.
        headers["Location"] = f"{opts.lfs_origin}/lfs/{f.sha256}?commit={snap.commit}"
        return web.Response(status=302, headers=headers)
    if f.local is None:  # HEAD of a file not fetched yet: what the listing says
        resp = web.StreamResponse(status=200, headers={**headers, "Accept-Ranges": "bytes"})
        resp.content_length = f.size
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    return await send_file(request, f, headers, snap.commit)


async def _lfs_blob(request: web.Request) -> web.StreamResponse:
    """The "CDN": LFS objects by sha256, no auth (Authorization must never reach it)."""
    for attempt in (1, 2):
        try:
            return await _lfs_blob_in(request)
        except StaleFile:
            if attempt == 2 or not await refresh(request.app):
                break
    return web.Response(status=404, text="no such object (changed on disk)\n")


async def _lfs_blob_in(request: web.Request) -> web.StreamResponse:
    f = request.app[CATALOG].blob(request.match_info["sha256"])
    if f is None:
        return web.Response(status=404, text="no such object\n")
    headers = {"ETag": f'"{f.sha256}"'}
    commit = request.query.get("commit", "")
    if is_commit(commit):
        headers.update(
            {
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
            }
        )
    return await send_file(request, f, headers, None)


async def _metrics(request: web.Request) -> web.StreamResponse:
    from caxton_models import metrics

    # The cache gauge reads the cache's manifests: not on the event loop.
    text = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": metrics.CONTENT_TYPE})


async def _health(request: web.Request) -> web.StreamResponse:
    """200 when nothing fails (warnings included), 503 otherwise: what a load
    balancer or an orchestrator's probe expects."""
    from caxton_models.ops.health import CheckResult, HealthReport

    catalog: Catalog = request.app[CATALOG]
    opts: ServeOptions = request.app[OPTIONS]
    report = HealthReport()
    if opts.health is not None:
        report = await asyncio.get_running_loop().run_in_executor(None, opts.health)
    repos = catalog.repo_ids
    detail = (
        f"serving {len(repos)} repositories"
        if repos
        else "nothing to serve yet: download or install a model into the served cache"
    )
    served = CheckResult(
        "mirror_catalog", "ok" if repos else "warn", detail, data={"repositories": repos}
    )
    report.checks.insert(0, served)
    pull = request.app.get(PULL)
    if pull is not None:
        report.checks.insert(1, pull.health())
    return web.json_response(report.to_json(), status=200 if report.ok else 503)


async def _not_found(request: web.Request) -> web.StreamResponse:
    msg = "Repository not found on this mirror."
    return error_response(404, "RepoNotFound", msg, head=request.method == "HEAD")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@web.middleware
async def _refuse_control_chars(request: web.Request, handler: Any) -> web.StreamResponse:
    """A path with a control character (``%0A``, ``%00``...) names no repo file: 400."""
    if _CONTROL.search(request.path):
        msg = "the path holds a control character"
        return error_response(400, None, msg, head=request.method == "HEAD")
    resp: web.StreamResponse = await handler(request)
    return resp


@web.middleware
async def _require_token(request: web.Request, handler: Any) -> web.StreamResponse:
    rules = request.app[OPTIONS].access
    if not rules.exempt(request.path) and not rules.token_ok(request.headers.get("Authorization")):
        # The Hub's words for a bad token; the token itself is never logged or echoed.
        msg = "Invalid credentials in Authorization header"
        head = request.method == "HEAD"
        extra = {"WWW-Authenticate": 'Bearer realm="caxton mirror"'}
        return error_response(401, None, msg, head=head, extra=extra)
    resp: web.StreamResponse = await handler(request)
    return resp


async def _close_pull(app: web.Application) -> None:
    app[PULL].close()


class AccessLogger(AbstractAccessLogger):
    """Method, path without the query (which may hold a token), status, bytes, time; what
    a client sent is escaped, so no request can write a line of its own."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3fs',
            request.remote,
            printable(request.method),
            printable(request.path),
            response.status,
            response.body_length,
            time,
        )


def make_app(catalog: Catalog, options: ServeOptions | None = None) -> web.Application:
    """The aiohttp application of the mirror (no sockets yet)."""
    opts = options or ServeOptions()
    middlewares = [_refuse_control_chars]
    if opts.access.needs_token:
        middlewares.append(_require_token)
    app = web.Application(middlewares=middlewares)
    app[CATALOG] = catalog
    app[OPTIONS] = opts
    app[_REFRESH] = asyncio.Lock()
    app.on_response_prepare.append(_mark_ref_source)
    if opts.upstream is not None:
        app[PULL] = PullThrough(opts.upstream, catalog)
        app.on_cleanup.append(_close_pull)
    repo = r"{repo_id:[^/]+(?:/[^/]+)?}"
    r = app.router
    r.add_get(f"/api/models/{repo}/revision/{{revision}}", _model_info)
    r.add_get(f"/api/models/{repo}/tree/{{revision}}", _tree)
    r.add_get(f"/api/models/{repo}/tree/{{revision}}/{{path:.+}}", _tree)
    r.add_get(f"/api/models/{repo}/refs", _refs)
    r.add_get(f"/api/models/{repo}", _model_info)
    r.add_route("HEAD", f"/{repo}/resolve/{{revision}}/{{path:.+}}", _resolve)
    r.add_get(f"/{repo}/resolve/{{revision}}/{{path:.+}}", _resolve, allow_head=False)
    r.add_route("HEAD", "/lfs/{sha256:[0-9a-f]{64}}", _lfs_blob)
    r.add_get("/lfs/{sha256:[0-9a-f]{64}}", _lfs_blob, allow_head=False)
    r.add_get("/metrics", _metrics)
    r.add_get("/health", _health)
    r.add_route("*", "/{tail:.*}", _not_found)
    return app
