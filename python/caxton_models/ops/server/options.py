"""The mirror's settings, the app's shared objects, and the Hub's error shape."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from caxton_models.ops.server.access import AccessRules
from caxton_models.ops.server.catalog import Catalog

__all__ = ["CATALOG", "OPTIONS", "ServeOptions", "Upstream", "error_response", "printable"]


@dataclass
class Upstream:
    """Pull-through: where misses are fetched from, and into which cache."""

    endpoints: Sequence[str]  # the Hub, or other mirrors, tried in order
    cache_dir: str | os.PathLike[str]
    # A branch or tag name resolved upstream is reused this long (s) before asking again;
    # when the upstream cannot be reached, the last recorded commit answers regardless.
    ref_ttl: float = 300.0
    # Per upstream request; retries are the core's (backoff, Retry-After).
    timeout: float = 10.0
    retries: int = 2
    connections: int | None = None  # per file, for the core (None: its adaptive default)
    # The mirror's own credential upstream (default: none sent); never in a repr or a log.
    token: str | None = field(default=None, repr=False)
    config: Any = None  # caxton_models.config.Config (download/cache policy); None: defaults
    workers: int = 4  # threads fetching (resolves and batches of files) at once

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir)


@dataclass
class ServeOptions:
    """Knobs of the app that are not the catalog."""

    # When set, LFS files answer 302 to ``{lfs_origin}/lfs/{sha256}`` (like the Hub's CDN).
    lfs_origin: str | None = None
    # Repos whose files need ``Authorization: Bearer <one of tokens>`` (the Hub's gated repos).
    gated: frozenset[str] = frozenset()
    tokens: frozenset[str] = field(default=frozenset(), repr=False)
    # Who may fetch what (allow/deny globs, a token every client must send).
    access: AccessRules = field(default_factory=AccessRules)
    # Fetch what is not cached from here (None: serve only what is cached).
    upstream: Upstream | None = None
    # TLS for the listening sockets (an ``ssl.SSLContext``); None: plain HTTP.
    ssl: Any = None
    # Rescan a cache on a miss at most this often (seconds); None: never.
    rescan_after: float | None = None
    rescan: Any = None  # Callable[[], Catalog]
    # ``GET /health`` runs this (Callable[[], health.HealthReport]) off the event loop.
    health: Any = None
    # A connection must deliver a whole request head this long (s) after it opens or after
    # its last response, else it is closed: an idle or slow-loris client holds no socket.
    header_timeout: float = 30.0
    # Connections open at once; past it a new one gets a 503 and is closed.
    max_connections: int = 1024
    last_scan: float = field(default=0.0, repr=False)  # when a rescan last started


CATALOG: web.AppKey[Catalog] = web.AppKey("catalog", Catalog)
OPTIONS: web.AppKey[ServeOptions] = web.AppKey("options", ServeOptions)


def printable(text: str) -> str:
    """``text`` with control and non-ASCII characters escaped: what may go into a header
    or a log line (a client's path could otherwise end a header or forge a log line)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text
    )


def error_response(
    status: int,
    code: str | None,
    message: str,
    commit: str | None = None,
    head: bool = False,
    extra: dict[str, str] | None = None,
) -> web.Response:
    """The Hub's error: ``X-Error-Code`` (what clients map to exceptions), the message."""
    headers = {"X-Error-Message": printable(message), **(extra or {})}
    if code:
        headers["X-Error-Code"] = code
    if commit:
        headers["X-Repo-Commit"] = commit
    if head:
        return web.Response(status=status, headers=headers)
    return web.json_response({"error": message}, status=status, headers=headers)
