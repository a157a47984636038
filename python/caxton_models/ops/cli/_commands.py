"""``caxton embed``, ``health``, ``metrics`` and ``hash``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models.errors import (
    EXIT_OFFLINE,
    EXIT_OK,
    EXIT_VERIFY_FAILED,
    CaxtonError,
)

if TYPE_CHECKING:
    pass

from caxton_models.ops.cli._common import (
    _config,
    _emit,
    _manager,
    _sub,
)


def _cmd_hash(args: argparse.Namespace) -> int:
    from caxton_models._core import hash_files

    digests = hash_files(args.files, algorithm=args.algorithm)
    for path, digest in zip(args.files, digests, strict=True):
        if args.json:
            print(json.dumps({"path": path, "algorithm": args.algorithm, "digest": digest}))
        else:
            print(f"{digest}  {path}")
    return EXIT_OK


def _cmd_health(args: argparse.Namespace) -> int:
    from caxton_models.ops.health import check_health, lines

    report = check_health(manager=_manager(args), network=not args.skip_network,
                          timeout=args.timeout)  # fmt: skip
    _emit(args, report.to_json(), lambda: lines(report))
    failed = {c.name for c in report.failed}
    if not failed:
        return EXIT_OK
    # Only the network is down: the documented "unreachable" code, not corruption.
    return EXIT_OFFLINE if failed == {"download_connectivity"} else EXIT_VERIFY_FAILED


def _cmd_metrics(args: argparse.Namespace) -> int:
    from caxton_models import metrics
    from caxton_models.store import ModelCache

    metrics.watch_cache(ModelCache(_config(args).cache.directory))
    sys.stdout.write(metrics.exposition())
    return EXIT_OK


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if args.input:
        if args.input == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = Path(args.input).read_text(encoding="utf-8").splitlines()
        texts.extend(lines)
    if not texts:
        raise ValueError("nothing to embed: give TEXT arguments or --input FILE (one per line)")
    return texts


def _choose_embedder(args: argparse.Namespace) -> Any:
    """The model to embed with: --model (downloaded if needed and allowed), or
    the configured default when it is cached, else the bundled model, said so."""
    from caxton_models._load import load
    from caxton_models.resolve import default_or_bundled

    cfg = _config(args)
    if args.model:
        return load(args.model, config=cfg)
    try:
        resolved, note = default_or_bundled(_manager(args))
    except CaxtonError:
        if cfg.degraded is None:
            raise
        # Not even the bundled model: the chain decides, and degraded mode ends it.
        return load(cfg.embedding_model, config=cfg)
    if note:
        print(f"caxton: {note}", file=sys.stderr)
    return load(resolved.name, config=cfg)


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from caxton_models.ops._progress import RateProgress

    texts = _read_texts(args)
    emb = _choose_embedder(args)
    if emb.degraded:
        return _embed_keyword(args, texts, emb)
    chunk = 4096
    show = len(texts) > chunk or (args.progress and len(texts) > 1)
    rate = RateProgress(len(texts)) if show else None
    parts = []
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        parts.append(emb.embed(batch, kind=args.kind, normalize=not args.no_normalize))
        if rate is not None:
            rate.update(len(batch))
    if rate is not None:
        rate.close()
    vectors = np.concatenate(parts) if parts else np.zeros((0, emb.dimensions), np.float32)
    if args.output:
        out = Path(args.output)
        if out.suffix != ".npy":
            raise ValueError(f"--output {out}: only .npy is written; JSON lines go to stdout")
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.save(f, vectors)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        print(
            f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 embeddings of "
            f"{emb.model_id} to {out}",
            file=sys.stderr,
        )
        return EXIT_OK
    w = sys.stdout.write
    for i, (text, vec) in enumerate(zip(texts, vectors, strict=True)):
        row = {"index": i, "model": emb.model_id, "space": emb.space, "text": text,
               "embedding": [round(float(x), 7) for x in vec]}  # fmt: skip
        w(json.dumps(row, ensure_ascii=False) + "\n")
    return EXIT_OK


def _embed_keyword(args: argparse.Namespace, texts: list[str], emb: Any) -> int:
    """Degraded mode: BM25 keyword vectors, said on stderr, never passed off
    as embeddings (sparse rows in JSON, or CSR arrays in a .npz)."""
    import numpy as np

    print(
        f"caxton: DEGRADED MODE: no embedding model could be loaded for {emb.requested}; "
        f"writing BM25 keyword vectors (space {emb.space}), not embeddings. "
        "`caxton health` shows why; `caxton model install` or allowing downloads ends it.",
        file=sys.stderr,
    )
    batch = emb.embed_batch(texts, kind=args.kind)
    if args.output:
        out = Path(args.output)
        if out.suffix != ".npz":
            raise ValueError(
                f"--output {out}: degraded mode writes sparse vectors; use FILE.npz "
                "(CSR arrays indptr, indices, values) or JSON lines on stdout"
            )
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, indptr=batch.indptr, indices=batch.indices, values=batch.values,
                         space=np.array(emb.space))  # fmt: skip
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        print(f"wrote {len(batch)} sparse {emb.space} vectors to {out}", file=sys.stderr)
        return EXIT_OK
    w = sys.stdout.write
    for i, (text, vec) in enumerate(zip(texts, batch, strict=True)):
        row = {"index": i, "model": emb.model_id, "space": emb.space, "degraded": True,
               "text": text, "indices": vec.indices.tolist(),
               "values": [round(float(x), 7) for x in vec.values]}  # fmt: skip
        w(json.dumps(row, ensure_ascii=False) + "\n")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """embed, health, metrics and hash."""
    p = _sub(sub, "embed", "embed texts; JSON lines on stdout or a .npy file",
             'caxton embed "Hello world" "Bonjour"   |   caxton embed --input docs.txt '
             "--output vecs.npy", func=_cmd_embed)  # fmt: skip
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--input", metavar="FILE", help="one text per line ('-' for stdin)")
    p.add_argument(
        "--output", metavar="FILE.npy", help="write a float32 .npy array (degraded mode: .npz)"
    )
    p.add_argument("--model", help="model name or folder (default: the configured default)")
    p.add_argument("--kind", choices=["passage", "query"], default="passage")
    p.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")
    p.add_argument("--progress", action="store_true", help="show texts/s on stderr")

    p = _sub(
        sub,
        "health",
        "check the model system: cache integrity, disk, connectivity, loading, embedding",
        "caxton health --json --skip-network",
        description="Check the model system the way the spec's health checks do: quick "
        "validation of every installed model, the cache against its size limits, free disk, "
        "one request to each download endpoint (skipped offline), loading the default model "
        '(or bundled-mini when the default is not installed) and embedding "Hello world". '
        "Nothing is downloaded or changed. Exit 0 when no check fails (warnings and skipped "
        "checks included), 3 when one does, 5 when only the network check fails.",
        func=_cmd_health,
        json=True,
    )
    p.add_argument("--skip-network", action="store_true", help="do not probe the endpoints")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per-endpoint timeout of the connectivity check (default 5)")  # fmt: skip

    p = _sub(
        sub,
        "metrics",
        "print the model-management metrics in Prometheus' text format",
        "caxton metrics | grep caxton_model_cache_size_bytes",
        description="Print this process's model-management metrics in the Prometheus text "
        "format 0.0.4. A fresh process has only the cache size to report; counters and "
        "histograms (downloads, validation failures, load times) accumulate in long-running "
        "processes: scrape GET /metrics of `caxton model serve`, or call "
        "caxton_models.metrics.exposition() in your application.",
        func=_cmd_metrics,
    )

    p = _sub(sub, "hash", "hash files (SHA-256 or BLAKE3) in parallel",
             "caxton hash --algorithm blake3 model.safetensors", func=_cmd_hash)  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--algorithm", choices=["sha256", "blake3"], default="sha256")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
