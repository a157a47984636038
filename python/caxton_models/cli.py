"""The ``caxton`` command line.

Exit codes: 0 success, 1 operation failed (a CaxtonError or OSError, one
clear line on stderr), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
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


def _cmd_embed(args: argparse.Namespace) -> int:
    # Lazy: numpy/onnxruntime load only for this command.
    from caxton_models import load

    texts = list(args.texts) or [line.rstrip("\n") for line in sys.stdin]
    emb = load(args.model)
    vecs = emb.embed(texts, kind=args.kind)
    for text, vec in zip(texts, vecs, strict=True):
        row = {"model": emb.model_id, "space": emb.space, "text": text}
        print(json.dumps({**row, "embedding": [round(float(x), 7) for x in vec]}))
    return EXIT_OK


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

    p_embed = sub.add_parser(
        "embed",
        help="embed texts (one JSON line each); works offline with the bundled model",
        description="Embed texts given as arguments, or one per line on stdin.",
        epilog='example:\n  caxton embed "Hello world"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_embed.add_argument("texts", nargs="*", metavar="TEXT")
    p_embed.add_argument(
        "--model", default="bundled-mini", help="model name or folder (default: bundled-mini)"
    )
    p_embed.add_argument("--kind", choices=["passage", "query"], default="passage")
    p_embed.set_defaults(func=_cmd_embed)
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
