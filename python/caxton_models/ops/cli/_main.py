"""The parser and ``main``: one error handler for every command (exit codes
come from the error classes, messages are scrubbed of tokens)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from caxton_models._core import __version__
from caxton_models.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    pass

from caxton_models.errors import exit_code
from caxton_models.ops.cli._commands import add_commands
from caxton_models.ops.cli._common import _EXIT_CODES
from caxton_models.ops.cli._models import add_model_commands
from caxton_models.ops.cli._rerank import add_rerank_command
from caxton_models.ops.cli._serve import add_serve_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caxton",
        description="Get embedding models onto this machine, keep them verified, embed text.",
        epilog='example:\n  caxton embed "Hello world"\n\n' + _EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"caxton {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--config", metavar="FILE", help="caxton.yaml to use (else CAXTON_CONFIG, "
                        "./caxton.yaml, the user config dir)")  # fmt: skip
    parser.add_argument("--cache-dir", metavar="DIR", help="model cache (overrides the config)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_model = sub.add_parser(
        "model",
        help="list, download, install, export, verify, remove models; serve a mirror",
        description="Manage the models in the cache.",
        epilog=f"example:\n  caxton model list\n\n{_EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # `caxton model` alone prints this parser's help (argparse keeps no public handle).
    parser.set_defaults(model_parser=p_model)
    msub = p_model.add_subparsers(dest="model_command", metavar="MODEL_COMMAND")
    add_model_commands(msub)
    add_serve_command(msub)
    add_commands(sub)
    add_rerank_command(sub)
    return parser


def _scrub(text: str, args: argparse.Namespace) -> str:
    """Belt and braces: no message ever carries a token, even a foreign one."""
    from caxton_models.config import env_token
    from caxton_models.errors import scrub_tokens

    token = env_token() or getattr(getattr(args, "loaded_config", None), "token", None)
    return scrub_tokens(text, token)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        target = args.model_parser if args.command == "model" else parser
        target.print_help()
        return EXIT_USAGE
    from caxton_models.errors import CaxtonError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("caxton: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `caxton embed ... | head`: the reader left; not an error.
        sys.stderr.close()
        return EXIT_OK
    except (CaxtonError, OSError, ValueError, LookupError, RuntimeError) as exc:
        if args.verbose:
            import traceback

            print(_scrub("".join(traceback.format_exception(exc)), args), file=sys.stderr)
        kind = type(exc).__name__
        print(_scrub(f"caxton: error: {kind}: {exc}", args), file=sys.stderr)
        return exit_code(exc)
