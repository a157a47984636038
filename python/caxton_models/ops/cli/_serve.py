"""``caxton model serve``: the Hub-protocol mirror, its pull-through and access options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models.errors import (
    EXIT_OK,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    pass

from caxton_models.ops.cli._common import (
    _config,
    _sub,
)


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535; 0 = any free port)")
    return port


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of seconds")
    return seconds


def _count(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number of at least 1")
    return int(value)


def _serve_health(args: argparse.Namespace, cache: Path) -> Callable[[], Any]:
    """What ``GET /health`` of the mirror checks: the served cache (integrity,
    size, disk). The mirror neither embeds nor downloads, so no model is
    loaded and no endpoint probed on every poll."""
    from dataclasses import replace

    from caxton_models import metrics
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.ops.health import check_health

    cfg = _config(args)
    cfg = replace(cfg, cache=replace(cfg.cache, directory=cache))
    mgr = ModelManager(cfg)  # also points caxton_model_cache_size_bytes at this cache
    metrics.watch_cache(mgr.cache)
    return lambda: check_health(manager=mgr, network=False, load=False)


def _serve_options(args: argparse.Namespace, cache: str | None) -> Any:
    """ServeOptions from the serve flags; a bad flag is a ConfigError naming it (exit 2)."""
    from caxton_models.errors import ConfigError
    from caxton_models.ops.server import (
        AccessRules,
        ServeOptions,
        Upstream,
        read_tokens,
        tls_context,
    )

    tokens: list[str] = []
    if args.token_file:
        try:
            tokens = read_tokens(args.token_file)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--token-file: {e}") from None
    if tokens and args.lfs_redirect:
        raise ConfigError(
            "--token-file and --lfs-redirect do not mix: clients drop the token on the "
            "redirect to the second origin, which would then refuse them"
        )
    opts = ServeOptions(
        access=AccessRules.build(allow=args.allow, deny=args.deny, tokens=tokens),
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
    )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together (PEM certificate chain and key)")
    if args.tls_cert:
        try:
            opts.ssl = tls_context(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise ConfigError(f"--tls-cert/--tls-key: cannot load them: {e}") from None
    if args.upstream:
        if cache is None:
            raise ConfigError("--upstream needs a cache to fill: use --cache, not --repos")
        upstream_token = None
        if args.upstream_token_file:
            try:
                upstream_token = read_tokens(args.upstream_token_file)[0]
            except (OSError, ValueError) as e:
                raise ConfigError(f"--upstream-token-file: {e}") from None
        try:
            opts.upstream = Upstream(
                endpoints=_upstream_urls(args.upstream),
                cache_dir=cache,
                ref_ttl=args.ref_ttl,
                timeout=args.upstream_timeout,
                token=upstream_token,
                config=_config(args),
            )
        except ValueError as e:
            raise ConfigError(f"--upstream: {e}") from None
    return opts


def _parse_ref(value: str) -> tuple[str, str, str]:
    from caxton_models.errors import ConfigError
    from caxton_models.ops.server import Catalog, CatalogError

    repo_rev, _, commit = value.partition("=")
    repo_id, _, rev = repo_rev.rpartition("@")
    try:
        Catalog().pin_ref(repo_id, rev, commit)  # checks the three parts
    except CatalogError as e:
        raise ConfigError(f"{e} (expected --ref OWNER/NAME@REF=COMMIT)", key="--ref") from None
    return repo_id, rev, commit


def _upstream_urls(urls: list[str]) -> list[str]:
    from caxton_models.acquire.hub import HubClient

    return list(HubClient(urls, token="", offline=False).endpoints)  # checks each URL


def _cmd_model_serve(args: argparse.Namespace) -> int:
    from caxton_models.errors import ConfigError

    try:
        return _model_serve(args)
    except ConfigError as e:  # a bad flag: usage, like argparse's own errors
        print(f"caxton model serve: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _model_serve(args: argparse.Namespace) -> int:
    # Imported here: aiohttp is only needed by this command.
    import logging

    from caxton_models.ops.server import Catalog, serve

    if args.verbose:  # one access-log line per request on stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    cache = None if args.repos else (args.cache or str(_config(args).cache.directory))
    options = _serve_options(args, cache)
    refs = [_parse_ref(r) for r in args.ref]
    if cache is None:
        catalog = Catalog.from_repos(args.repos)
        source = f"repos in {args.repos}"
    else:
        if options.upstream is not None:  # an empty pull-through mirror starts from nothing
            Path(cache).mkdir(parents=True, exist_ok=True)
        catalog = Catalog.from_cache(cache)
        # Models downloaded after start-up appear on the first request that misses
        # (Catalog.rebuild reads the cache again).
        options.rescan_after = 5.0
        source = f"verified models of the cache {cache}"
        options.health = _serve_health(args, Path(cache))
    for repo_id, rev, commit in refs:
        catalog.pin_ref(repo_id, rev, commit)
    if not catalog.snapshots and options.upstream is None:
        print(f"caxton: warning: nothing to serve yet from {source}", file=sys.stderr)

    def ready(url: str, lfs_url: str | None) -> None:
        repos = ", ".join(catalog.repo_ids) or "none"
        print(f"Serving {source} at {url} (repositories: {repos})")
        if options.upstream is not None:
            print(f"Fetching what is not cached from {', '.join(options.upstream.endpoints)}")
        if lfs_url:
            print(f"LFS files redirect to {lfs_url}")
        print(f"Point clients at it: HF_ENDPOINT={url}  (Ctrl-C stops)", flush=True)

    serve(
        catalog,
        host=args.host,
        port=args.port,
        lfs_redirect=args.lfs_redirect,
        options=options,
        on_ready=ready,
    )
    return EXIT_OK


def add_serve_command(msub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        msub,
        "serve",
        "serve cached models to any Hugging Face Hub client (HF_ENDPOINT=...)",
        "caxton model serve --port 8080   # then HF_ENDPOINT=http://127.0.0.1:8080",
        description="Serve the verified models of a caxton cache (or a folder of repos in the "
        "Hub's layout) over the Hugging Face Hub's HTTP protocol, as a read-only mirror.",
        func=_cmd_model_serve,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 = any)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cache", metavar="DIR", help="caxton cache to serve (default: the cache)")
    src.add_argument("--repos", metavar="DIR", help="serve DIR/<owner>/<name>/ folders instead")
    p.add_argument(
        "--lfs-redirect",
        action="store_true",
        help="redirect LFS files to a second port, as the Hub redirects to its CDN",
    )
    up = p.add_argument_group("pull-through (fetch what is not cached, keep it)")
    up.add_argument(
        "--upstream", action="append", default=[], metavar="URL",
        help="the Hub or another mirror; repeat for several, tried in order",
    )  # fmt: skip
    up.add_argument(
        "--ref-ttl", type=float, default=300.0, metavar="S",
        help="reuse a branch's upstream commit this long (default 300 s)",
    )  # fmt: skip
    up.add_argument(
        "--upstream-timeout", type=float, default=10.0, metavar="S",
        help="per upstream request (default 10 s)",
    )  # fmt: skip
    up.add_argument(
        "--upstream-token-file", metavar="FILE",
        help="the mirror's own Hub token, for gated repos upstream",
    )  # fmt: skip
    up.add_argument(
        "--ref", action="append", default=[], metavar="REPO@REF=COMMIT",
        help="answer REF of REPO with COMMIT, whatever was recorded",
    )  # fmt: skip
    acc = p.add_argument_group("access")
    acc.add_argument(
        "--allow", action="append", default=[], metavar="GLOB",
        help="serve only repos matching one of these (e.g. 'sentence-transformers/*')",
    )  # fmt: skip
    acc.add_argument(
        "--deny", action="append", default=[], metavar="GLOB",
        help="never serve repos matching these (wins over --allow)",
    )  # fmt: skip
    acc.add_argument(
        "--token-file", metavar="FILE",
        help="clients must send one of these tokens (one a line) as their HF_TOKEN",
    )  # fmt: skip
    acc.add_argument(
        "--header-timeout", type=_positive, default=30.0, metavar="S",
        help="close a connection that sends no whole request head for S seconds (default 30)",
    )  # fmt: skip
    acc.add_argument(
        "--max-connections", type=_count, default=1024, metavar="N",
        help="answer 503 to connections past N open at once (default 1024)",
    )  # fmt: skip
    acc.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    acc.add_argument("--tls-key", metavar="PEM", help="... and this private key")
