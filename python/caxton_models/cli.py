"""The ``caxton`` command line.

Exit codes: 0 success, 1 operation failed (a CaxtonError or OSError, one
clear line on stderr), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from caxton_models import __version__
from caxton_models._core import hash_files

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _cmd_hash(args: argparse.Namespace) -> int:
    digests = hash_files(args.files, algorithm=args.algorithm)
    for path, digest in zip(args.files, digests, strict=True):
        if args.json:
            print(json.dumps({"path": path, "algorithm": args.algorithm, "digest": digest}))
        else:
            print(f"{digest}  {path}")
    return EXIT_OK


def _default_cache_dir() -> str:
    env = os.environ.get("CAXTON_CACHE_DIR")
    if env:
        return env
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "caxton", "models")


def _cmd_model_serve(args: argparse.Namespace) -> int:
    # Imported here: aiohttp is only needed by this command.
    from caxton_models.server import Catalog, ServeOptions, serve

    options = ServeOptions()
    if args.repos:
        catalog = Catalog.from_repos(args.repos)
        source = f"repos in {args.repos}"
    else:
        cache = args.cache or _default_cache_dir()
        catalog = Catalog.from_cache(cache)
        # Models downloaded after start-up appear on the first request that misses.
        options.rescan = lambda: Catalog.from_cache(cache)
        options.rescan_after = 5.0
        source = f"verified models of the cache {cache}"
    if not catalog.snapshots:
        print(f"caxton: warning: nothing to serve yet from {source}", file=sys.stderr)

    def ready(url: str, lfs_url: str | None) -> None:
        repos = ", ".join(catalog.repo_ids) or "none"
        print(f"Serving {source} at {url} (repositories: {repos})")
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


def _add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_model = sub.add_parser("model", help="manage models: serve the cache as a Hub mirror")
    model_sub = p_model.add_subparsers(dest="model_command", metavar="MODEL_COMMAND")
    p_serve = model_sub.add_parser(
        "serve",
        help="serve cached models to any Hugging Face Hub client (HF_ENDPOINT=...)",
        description="Serve the verified models of a caxton cache (or a folder of repos in the "
        "Hub's layout) over the Hugging Face Hub's HTTP protocol, as a read-only mirror.",
        epilog="examples:\n  caxton model serve --port 8080\n"
        "  caxton model serve --repos ./repos   # ./repos/<owner>/<name>/...\n"
        "  HF_ENDPOINT=http://127.0.0.1:8080 python -c 'import huggingface_hub as h; "
        'h.snapshot_download("sentence-transformers/all-MiniLM-L6-v2")\'',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p_serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any)")
    src = p_serve.add_mutually_exclusive_group()
    src.add_argument("--cache", metavar="DIR", help="caxton cache to serve (default: the cache)")
    src.add_argument("--repos", metavar="DIR", help="serve DIR/<owner>/<name>/ folders instead")
    p_serve.add_argument(
        "--lfs-redirect",
        action="store_true",
        help="redirect LFS files to a second port, as the Hub redirects to its CDN",
    )
    p_serve.set_defaults(func=_cmd_model_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caxton",
        description="Get embedding models onto this machine, keep them verified, embed text.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"caxton {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_hash = sub.add_parser(
        "hash",
        help="hash files (SHA-256 or BLAKE3), in parallel",
        description="Hash files in parallel with the Rust core.",
        epilog="example:\n  caxton hash --algorithm blake3 model.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_hash.add_argument("files", nargs="+", metavar="FILE")
    p_hash.add_argument("--algorithm", choices=["sha256", "blake3"], default="sha256")
    p_hash.add_argument("--json", action="store_true", help="one JSON object per line")
    p_hash.set_defaults(func=_cmd_hash)
    _add_model_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("caxton: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, LookupError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"caxton: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
