"""BM25 document vectors of the PyPI corpus (10,000 summaries): ours (Rust
core, all cores, CSR out) against Python BM25 packages, interleaved round by
round in one run:

- ``bm25s``: its tokenizer with English stop words and the same Snowball
  stemmer (``py_rust_stemmers``, fastembed's), then ``index`` (method
  ``lucene``): the weights of every document, as a SciPy-backed matrix;
- ``fastembed``: ``Bm25("Qdrant/bm25")`` (built offline from a local folder),
  which makes exactly our vectors.

Real run:
    pytest benches/test_bm25.py --benchmark-enable -s
The smoke run (benchmarks disabled) does one round on 500 summaries.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benches import gating
from caxton_models.keyword import Bm25Embedder


@pytest.fixture(scope="module")
def corpus(corpora_dir: Path, bench_enabled: bool) -> list[str]:
    texts = (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()
    return texts if bench_enabled else texts[:500]


def _bm25s(corpus: list[str]) -> Callable[[], object]:
    bm25s = pytest.importorskip("bm25s", reason="pip install caxton-models[test]")
    stemmers = pytest.importorskip("py_rust_stemmers", reason="fastembed's dependency")
    stem = stemmers.SnowballStemmer("english").stem_words

    def run() -> object:
        tokens = bm25s.tokenize(corpus, stopwords="en", stemmer=stem, show_progress=False)
        index = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        index.index(tokens, show_progress=False)
        return index

    return run


def _fastembed(corpus: list[str], tmp: Path, stopwords: list[str]) -> Callable[[], object]:
    bm25_mod = pytest.importorskip("fastembed.sparse.bm25")
    (tmp / "config.json").write_text("{}")
    (tmp / "english.txt").write_text("\n".join(stopwords) + "\n", encoding="utf-8")
    model: Any = bm25_mod.Bm25("Qdrant/bm25", specific_model_path=str(tmp))
    return lambda: list(model.embed(corpus))


@pytest.mark.gate
def test_bm25_vectors_gate(corpus: list[str], bench_enabled: bool, tmp_path: Path) -> None:
    ours = Bm25Embedder("english")
    contenders = {
        "bm25s": _bm25s(corpus),
        "fastembed": _fastembed(corpus, tmp_path, ours.stopwords),
        "ours": lambda: ours.embed_batch(corpus),
    }
    assert len(ours.embed_batch(corpus)) == len(corpus)
    rounds = gating.rounds_for("bm25_vs_bm25s", bench_enabled)
    times = gating.interleaved(contenders, rounds)
    ratios = gating.round_ratios(times["bm25s"], times["ours"])
    fe = statistics.median(gating.round_ratios(times["fastembed"], times["ours"]))
    n = len(corpus)
    rate = {name: n / statistics.median(ts) for name, ts in times.items()}
    gating.check(
        "bm25_vs_bm25s",
        statistics.median(ratios),
        enabled=bench_enabled,
        rounds=rounds,
        detail=f"{n} texts: ours {rate['ours']:,.0f}/s, bm25s {rate['bm25s']:,.0f}/s, "
        f"fastembed {rate['fastembed']:,.0f}/s ({fe:.1f}x); {gating.spread(ratios)}",
    )
