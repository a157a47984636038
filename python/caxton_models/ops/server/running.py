"""Running the mirror: in a background thread (tests, embedding) or in the foreground (CLI).

TLS: pass ``ServeOptions(ssl=ssl_context)`` (``caxton model serve --tls-cert/--tls-key``);
bytes then go through user space instead of ``sendfile(2)``. Behind a reverse proxy that
terminates TLS, serve plain HTTP on 127.0.0.1 instead (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from os import PathLike
from typing import Any

from aiohttp import web

from caxton_models.ops.server.catalog import Catalog
from caxton_models.ops.server.handlers import AccessLogger, make_app
from caxton_models.ops.server.options import ServeOptions

__all__ = ["ServerThread", "serve", "tls_context"]

log = logging.getLogger("caxton_models.ops.server")


def tls_context(cert: str | PathLike[str], key: str | PathLike[str]) -> ssl.SSLContext:
    """A server context for ``cert`` (PEM, the chain) and ``key`` (PEM); TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class ServerThread:
    """Runs the mirror on 127.0.0.1 (port 0 by default) in a background thread.

    ``with ServerThread(catalog) as srv: hf_hub_download(..., endpoint=srv.url)``.
    ``lfs_redirect=True`` opens a second origin (``srv.lfs_url``) that LFS files redirect to.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lfs_redirect: bool = False,
        options: ServeOptions | None = None,
    ) -> None:
        self.catalog = catalog
        self.host = host
        self.port = port
        self.lfs_redirect = lfs_redirect
        self.options = options or ServeOptions()
        self.url = ""
        self.lfs_url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="caxton-serve", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise RuntimeError("caxton model server did not start within 30 s")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            loop.close()

    async def _start(self) -> None:
        self._runner = await _setup_runner(self.catalog, self.options)
        self.url, self.lfs_url = await _open_sites(
            self._runner, self.host, self.port, self.lfs_redirect, self.options
        )

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)


async def _setup_runner(catalog: Catalog, options: ServeOptions) -> web.AppRunner:
    # aiohttp's keep-alive timer runs from a connection's start and from the end of each
    # response until a whole request head has arrived (never while a response is sent):
    # the header-read timeout of a server that may listen on 0.0.0.0.
    runner = web.AppRunner(
        make_app(catalog, options),
        access_log_class=AccessLogger,
        keepalive_timeout=options.header_timeout,
    )
    await runner.setup()
    server = runner.server
    assert server is not None
    _cap_connections(server, options.max_connections)
    return runner


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"X-Error-Message: too many connections to this mirror\r\nConnection: close\r\n\r\n"
)


def _cap_connections(server: web.Server, limit: int) -> None:
    """Past ``limit`` open connections, a new one is answered 503 and closed at once."""
    admit = server.connection_made

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        admit(handler, transport)
        if len(server.connections) > limit:
            log.warning("refusing a connection: %d open (limit %d)", limit + 1, limit)
            with contextlib.suppress(Exception):
                transport.pause_reading()  # its request, if any, is never parsed
                transport.write(_BUSY)
            # Closed once the handler's task has started (it is scheduled after this
            # call): closing it before would leave that task without its server.
            asyncio.get_running_loop().call_later(0, handler.force_close)

    server.connection_made = connection_made  # type: ignore[method-assign]


async def _open_sites(
    runner: web.AppRunner, host: str, port: int, lfs_redirect: bool, options: ServeOptions
) -> tuple[str, str | None]:
    site = web.TCPSite(
        runner, host, port, backlog=1024, reuse_address=True, ssl_context=options.ssl
    )
    await site.start()
    url = _site_url(site, host, options.ssl is not None)
    lfs_url = None
    if lfs_redirect:
        # Another port is another origin, so clients treat it like the Hub's CDN.
        cdn = web.TCPSite(runner, host, 0, backlog=1024, ssl_context=options.ssl)
        await cdn.start()
        lfs_url = _site_url(cdn, host, options.ssl is not None)
        options.lfs_origin = lfs_url
    return url, lfs_url


def _site_url(site: web.TCPSite, host: str, tls: bool = False) -> str:
    # The asyncio Server: aiohttp has no public way to learn one site's bound port.
    server = site._server  # noqa: SLF001
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def serve(
    catalog: Catalog,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    lfs_redirect: bool = False,
    options: ServeOptions | None = None,
    on_ready: Any = None,
) -> None:
    """Serve until interrupted (Ctrl-C). ``on_ready(url, lfs_url)`` is called once listening."""
    opts = options or ServeOptions()

    async def main() -> None:
        runner = await _setup_runner(catalog, opts)
        try:
            url, lfs_url = await _open_sites(runner, host, port, lfs_redirect, opts)
            if on_ready is not None:
                on_ready(url, lfs_url)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
