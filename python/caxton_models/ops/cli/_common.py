"""Helpers every ``caxton`` command shares: the config and manager of a run,
output as text or JSON, and the parser's conventions."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.config import Config
    from caxton_models.store import CacheLimits

_EXIT_CODES = """exit codes:
  0 success, 1 failed, 2 bad usage, 3 verification found problems,
  4 model unknown or not installed, 5 network needed but offline/unreachable,
  130 interrupted"""


def _config(args: argparse.Namespace) -> Config:
    cached = getattr(args, "loaded_config", None)
    if cached is None:
        from caxton_models.config import load_config

        cached = load_config(args.config)
        if getattr(args, "cache_dir", None):
            from dataclasses import replace

            cached = replace(
                cached, cache=replace(cached.cache, directory=Path(args.cache_dir).expanduser())
            )
        args.loaded_config = cached
    return cached


def _manager(args: argparse.Namespace) -> ModelManager:
    from caxton_models.acquire.manager import ModelManager

    return ModelManager(_config(args))


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], Iterator[str]]) -> None:
    """Print ``data`` as JSON with --json, else the human lines ``text`` yields."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in text():
            print(line)


def _human(n: float) -> str:
    from caxton_models.ops._progress import human_bytes

    return human_bytes(n)


def _installed_json(m: Any, limits: CacheLimits) -> dict[str, Any]:
    """``m`` as JSON; ``pinned`` by the rule eviction applies (``limits``: the
    config's pins, or a pin on the cache), not the metadata's flag alone."""
    meta = m.metadata
    return {
        "name": m.name,
        "path": str(m.path),
        "status": m.status,
        "size_bytes": m.size_bytes,
        "pinned": limits.keeps(m),
        "problem": m.problem,
        "metadata": meta.to_json() if meta is not None else None,
        "files": (
            {p: {"size": e.size, "sha256": e.sha256} for p, e in sorted(m.manifest.items())}
            if m.manifest is not None
            else None
        ),
    }


def _sub(
    parent: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    example: str,
    description: str | None = None,
    *,
    func: Callable[[argparse.Namespace], int] | None = None,
    json: bool = False,
) -> argparse.ArgumentParser:
    """A sub-command's parser in the CLI's conventions: help, an example and
    the exit codes below it, ``func`` to run, and ``--json`` when it has a
    JSON form."""
    p = parent.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}\n\n{_EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if func is not None:
        p.set_defaults(func=func)
    if json:
        _json_flag(p)
    return p


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")
