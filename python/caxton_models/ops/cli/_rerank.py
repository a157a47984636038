"""``caxton rerank``: score documents against a query with a cross-encoder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from caxton_models.errors import EXIT_OK
from caxton_models.ops.cli._common import _config, _sub

#: The reranker used without --model.
DEFAULT_RERANKER = "ms-marco-MiniLM-L6-v2"


def _read_documents(source: str) -> list[str]:
    if source == "-":
        docs = sys.stdin.read().splitlines()
    else:
        docs = Path(source).read_text(encoding="utf-8").splitlines()
    if not docs:
        raise ValueError(f"--input {source}: no documents (one per line)")
    return docs


def _cmd_rerank(args: argparse.Namespace) -> int:
    from caxton_models._load_tasks import load_reranker

    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k {args.top_k}: give a number of documents, 1 or more")
    docs = _read_documents(args.input)
    ranker = load_reranker(args.model, config=_config(args))
    ranked = ranker.rerank(args.query, docs, top_k=args.top_k)
    w = sys.stdout.write
    for rank, (index, score) in enumerate(ranked, 1):
        if args.json:
            row = {"rank": rank, "index": index, "score": round(score, 7),
                   "model": ranker.model_id, "document": docs[index]}  # fmt: skip
            w(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            text = docs[index] if len(docs[index]) <= 100 else docs[index][:99] + "…"
            w(f"{rank:>4}  {score:>10.5f}  {index:>6}  {text}\n")
    return EXIT_OK


def add_rerank_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(
        sub,
        "rerank",
        "order documents by relevance to a query with a cross-encoder",
        'caxton rerank "how do I install it?" --input docs.txt --top-k 5',
        description="Score each line of --input against QUERY with a cross-encoder reranker "
        f"(default {DEFAULT_RERANKER}; downloaded and verified like any model) and print them "
        "best first: rank, score, the document's line number (from 0) and the document. "
        "Scores are what sentence-transformers' CrossEncoder.predict gives for the model.",
        func=_cmd_rerank,
    )
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="the documents, one per line ('-' for stdin)")  # fmt: skip
    p.add_argument("--top-k", type=int, metavar="N", help="print only the N best")
    p.add_argument(
        "--model",
        default=DEFAULT_RERANKER,
        help=f"reranker name, Hub repo id or folder (default {DEFAULT_RERANKER})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per document: rank, index, score, model, document",
    )
