"""``caxton model update|rollback|migrate``: moving a model between revisions,
and re-embedding a corpus when it changes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from caxton_models.errors import EXIT_OK
from caxton_models.ops.cli._common import _emit, _manager, _sub


def _short(commit: str | None) -> str:
    return commit[:12] if commit else "-"


def _cmd_update(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    if args.model:
        names = [mgr.spec(args.model).name]
    else:  # every installed model the registry knows (bundled ones never change)
        names = [m.name for m in mgr.installed() if m.name in mgr.registry]
    results = [mgr.update(n, check_only=args.check) for n in names]
    data = [
        {"name": r.version.name, "action": r.action, "from": r.from_commit, "to": r.to_commit,
         **r.version.to_json()}
        for r in results
    ]  # fmt: skip

    def text() -> Iterator[str]:
        if not results:
            yield f"no installed models to update in {mgr.cache.root}"
        for r in results:
            v = r.version
            name = f"{v.name} ({v.tracking})"
            if r.action == "switched":
                yield (f"{name}: updated {_short(r.from_commit)} -> {_short(r.to_commit)}; "
                       f"roll back with `caxton model rollback {v.name}`")  # fmt: skip
            elif r.action == "staged":
                yield f"{name}: {_short(r.to_commit)} staged beside {_short(r.from_commit)}"
            elif v.update_available:
                yield (f"{name}: update available {_short(v.current_commit)} -> "
                       f"{_short(v.latest_commit)} (`caxton model update {v.name}`)")  # fmt: skip
            else:
                yield f"{name}: up to date at {_short(v.current_commit)}"

    _emit(args, data, text)
    return EXIT_OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    before = mgr.cache.get(mgr.spec(args.model).name)
    m = mgr.rollback(args.model)
    old = before.metadata.commit if before and before.metadata else None
    new = m.metadata.commit if m.metadata else None
    data = {"name": m.name, "from": old, "to": new, "path": str(m.path)}

    def text() -> Iterator[str]:
        yield (f"{m.name}: rolled back {_short(old)} -> {_short(new)} "
               f"(`caxton model rollback {m.name}` again returns to {_short(old)})")  # fmt: skip

    _emit(args, data, text)
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    from caxton_models.ops.migrate import migrate

    def progress(done: int, total: int) -> None:
        if not args.json:
            print(f"\r  {done}/{total} texts", end="", file=sys.stderr, flush=True)

    report = migrate(
        args.corpus,
        new=args.to,
        old=args.old,
        output=args.output,
        batch_size=args.batch_size,
        sample=args.sample,
        progress=progress,
        config=_manager(args).config,
    )
    if not args.json:
        print(file=sys.stderr)

    def text() -> Iterator[str]:
        yield from report.lines()

    _emit(args, report.to_json(), text)
    return EXIT_OK


def add_lifecycle_commands(msub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        msub,
        "update",
        "check for a newer revision; stage, validate and switch to it",
        "caxton model update all-MiniLM-L6-v2 --check",
        description="Without --check: the newest revision of the tracked branch is downloaded "
        "beside the current one (unchanged files are hard links), validated in full, then "
        "switched in atomically; the old one is kept for `caxton model rollback` until "
        "`caxton model gc`. Processes that loaded the old revision keep using it.",
        func=_cmd_update,
        json=True,
    )
    p.add_argument("model", metavar="MODEL", nargs="?", help="default: every installed model")
    p.add_argument("--check", action="store_true", help="only ask the Hub; change nothing")

    p = _sub(msub, "rollback", "return a model to the revision it had before the last update",
             "caxton model rollback all-MiniLM-L6-v2", func=_cmd_rollback, json=True)  # fmt: skip
    p.add_argument("model", metavar="MODEL")

    p = _sub(
        msub,
        "migrate",
        "re-embed a corpus with a new model or revision (resumable), and compare",
        "caxton model migrate corpus.txt --to all-MiniLM-L6-v2 --old bundled-mini "
        "--output vectors.npy",
        description="Reads one text per line, embeds them in batches into OUTPUT (.npy, "
        "written through a memory map; OUTPUT.state.json records the finished batches, so a "
        "killed run resumes where it stopped), then compares old and new on a sample: the "
        "overlap of each text's 10 nearest neighbours.",
        func=_cmd_migrate,
        json=True,
    )
    p.add_argument("corpus", metavar="CORPUS.txt", help="one text per line")
    p.add_argument("--to", required=True, metavar="MODEL|DIR", help="the new model, or a folder")
    p.add_argument("--old", metavar="MODEL|DIR", help="the model the stored vectors came from")
    p.add_argument("--output", required=True, metavar="VECTORS.npy")
    p.add_argument("--batch-size", type=int, default=256, metavar="N")
    p.add_argument("--sample", type=int, default=1000, metavar="N",
                   help="texts compared between old and new (0: no comparison)")  # fmt: skip
