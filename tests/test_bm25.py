"""BM25 keyword vectors (caxton_models.keyword, rust/src/bm25.rs).

- ids and weights equal fastembed's ``Bm25`` (built offline from a local
  folder holding the stop word list, as ``specific_model_path`` allows) on
  fastembed's own test strings, the PyPI corpus, other languages and every
  Unicode code point;
- ranking: BM25 scores over the PyPI corpus computed from our sparse vectors
  (with the IDF Qdrant applies) equal ``bm25s``' (method ``lucene``) on the
  same tokens, up to Lucene's missing constant factor ``k1 + 1``, and the top
  10 of 100 queries agree; ``rank_bm25`` (another IDF) is measured too.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models.keyword import KEYWORD_SPACE, Bm25Embedder
from caxton_models.sparse import SparseBatch, SparseVector

#: Why a reference import may be missing.
_REF = "fastembed (with its mmh3), the reference BM25, comes with the test extra"

# fastembed's own test strings (tests/test_sparse_embeddings.py).
FASTEMBED_STRINGS = [
    "Hello World",
    "The quick brown fox is a test sentence . !",
    "THE Quick Brown Fox IS A Test Sentence . !",
    "hello world flag embedding",
    "Name me a couple of cities were the capitals of Germany?",
    "Berlin is the current capital of Germany, Bonn is a former capital of Germany.",
]
# Cases where a tokenizer could differ: apostrophes, numbers, underscores,
# accents, final sigma, dotted capital I, CJK, combining marks, long tokens.
EDGE_STRINGS = [
    "Don't stop-me now: 3.88 (roughly 3,36 euros) in New York.",
    "snake_case __init__ _ __ a_b_c",
    "naïve café RÉSUMÉ Ærø straße STRASSE",
    "ΟΔΟΣ ΟΔΟΣΟΔΟΣ Σ σς",
    "İstanbul DİYARBAKIR",
    "東京は日本の首都です 北京",
    "हिन्दी भाषा",
    "x" * 40 + " " + "y" * 41 + " ok",
    "tab\tnew\nline\x1ccontrol\x1fend",
    "",
    "   ",
    "!!! ... ???",
]


def _fastembed_bm25(tmp: Path, language: str, stopwords: list[str], **kw: Any) -> Any:
    """fastembed's Bm25, offline: the Hub folder it would download holds only
    ``<language>.txt`` (and an empty config.json)."""
    bm25_mod = pytest.importorskip("fastembed.sparse.bm25", reason=_REF)
    folder = tmp / f"qdrant-bm25-{language}"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / f"{language}.txt").write_text("\n".join(stopwords) + "\n", encoding="utf-8")
    return bm25_mod.Bm25("Qdrant/bm25", language=language, specific_model_path=str(folder), **kw)


def _variant(base: Any, language: str, stopwords: list[str], **params: float) -> Any:
    """``base`` as fastembed's constructor would set it up for ``language`` and
    ``k``/``b``/``avg_len`` (a new Bm25 scans all of Unicode for punctuation:
    a second per construction)."""
    from py_rust_stemmers import SnowballStemmer

    ref = copy.copy(base)
    ref.language = language
    ref.stemmer = SnowballStemmer(language)
    ref.stopwords = set(stopwords)
    for name, value in params.items():
        setattr(ref, name, value)
    return ref


def _as_dicts(vectors: Any) -> list[dict[int, float]]:
    return [{int(i): float(v) for i, v in zip(e.indices, e.values, strict=True)} for e in vectors]


def _assert_same(
    ours: list[SparseVector], theirs: list[dict[int, float]], texts: list[str]
) -> None:
    assert len(ours) == len(theirs)
    for text, mine, ref in zip(texts, ours, theirs, strict=True):
        got = mine.as_dict()
        assert got.keys() == ref.keys(), text
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-6), (text, k)


@pytest.fixture(scope="module")
def corpus(corpora_dir: Path) -> list[str]:
    return (corpora_dir / "pypi-summaries-10k.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def english() -> Bm25Embedder:
    return Bm25Embedder("english")


@pytest.fixture(scope="module")
def fastembed_english(tmp_path_factory: pytest.TempPathFactory, english: Bm25Embedder) -> Any:
    return _fastembed_bm25(tmp_path_factory.mktemp("fe"), "english", english.stopwords)


# --------------------------------------------------------------------------- ids


def test_token_ids_equal_mmh3() -> None:
    mmh3 = pytest.importorskip("mmh3", reason=_REF)
    bm25_mod = pytest.importorskip("fastembed.sparse.bm25", reason=_REF)
    terms = ["hello", "world", "", "a", "ab", "abc", "abcd", "abcde", "東京", "οδος", "x" * 99]
    terms += [chr(c) for c in range(0x20, 0x3000, 37)]
    for t in terms:
        want = abs(mmh3.hash(t))
        assert Bm25Embedder.token_id(t) == want == bm25_mod.Bm25.compute_token_id(t), t
    # abs() of the most negative int32 is 2**31, outside int32 but inside Qdrant's u32.
    assert max(Bm25Embedder.token_id(t) for t in terms) < 2**32


def test_vectors_equal_fastembed_on_its_test_strings(
    english: Bm25Embedder, fastembed_english: Any
) -> None:
    texts = FASTEMBED_STRINGS + EDGE_STRINGS
    _assert_same(english.embed(texts), _as_dicts(fastembed_english.embed(texts)), texts)
    queries = _as_dicts(fastembed_english.query_embed(texts))
    _assert_same(english.embed_query(texts), queries, texts)
    # fastembed's expected stems for its _stem tests.
    assert english.terms("The quick brown fox is a test sentence . !") == [
        ["quick", "brown", "fox", "test", "sentenc"]
    ]


def test_vectors_equal_fastembed_on_the_pypi_corpus(
    corpus: list[str], english: Bm25Embedder, fastembed_english: Any
) -> None:
    # A third of it: fastembed takes ~1 ms per summary here.
    texts = corpus[::3]
    _assert_same(english.embed(texts), _as_dicts(fastembed_english.embed(texts)), texts)
    some = corpus[1::10]
    _assert_same(english.embed_query(some), _as_dicts(fastembed_english.query_embed(some)), some)


def test_parameters_equal_fastembed_and_shape_the_weights(
    corpus: list[str], english: Bm25Embedder, fastembed_english: Any
) -> None:
    texts = corpus[:300]
    for k1, b, avg_len in ((2.0, 0.3, 9.5), (0.9, 1.0, 40.0)):
        ours = Bm25Embedder("english", k1=k1, b=b, avg_len=avg_len)
        ref = _variant(fastembed_english, "english", english.stopwords, k=k1, b=b, avg_len=avg_len)
        _assert_same(ours.embed(texts), _as_dicts(ref.embed(texts)), texts)
    # The formula, by hand: "fox" twice and "dog" once in a 3-term document.
    bm = Bm25Embedder("english", k1=1.5, b=0.5, avg_len=6.0)
    vec = bm.embed("fox fox dog")[0].as_dict()
    norm = 1.5 * (1 - 0.5 + 0.5 * 3 / 6.0)
    assert vec[bm.token_id("fox")] == pytest.approx(2 * 2.5 / (2 + norm), rel=1e-6)
    assert vec[bm.token_id("dog")] == pytest.approx(1 * 2.5 / (1 + norm), rel=1e-6)


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("german", "Die Häuser der Straße wurden schöner gebaut und verkauft"),
        ("french", "Les chevaux mangeaient des pommes dans les jardins fleuris"),
        ("russian", "Красивые дома стояли вдоль широкой улицы города"),
        ("greek", "ΟΙ ΜΕΓΑΛΟΙ ΔΡΟΜΟΙ της πόλης ήταν γεμάτοι"),
        ("turkish", "İstanbul'daki evlerin çatıları kırmızıydı"),
        ("arabic", "المكتبات العامة تقدم الكتب للقراء"),
        ("tamil", "தமிழ் மொழி மிகவும் பழமையான மொழி"),
    ],
)
def test_other_languages_equal_fastembed(fastembed_english: Any, language: str, text: str) -> None:
    ours = Bm25Embedder(language)
    ref = _variant(fastembed_english, language, ours.stopwords)
    texts = [text, text.upper(), text.lower()]
    _assert_same(ours.embed(texts), _as_dicts(ref.embed(texts)), texts)
    if language == "tamil":  # Qdrant/bm25 has no tamil.txt: no stop words
        assert ours.stopwords == []
    else:
        assert len(ours.stopwords) > 10


def test_every_code_point_tokenizes_as_fastembed() -> None:
    """Python's ``\\w`` after ``str.lower()`` is the word rule; the Rust side uses
    the General Category table, so all of Unicode is compared (the code points
    this Python's Unicode database has assigned: newer ones differ by design)."""
    import unicodedata

    fe_utils = pytest.importorskip("fastembed.common.utils", reason=_REF)
    tok = pytest.importorskip("fastembed.sparse.utils.tokenizer", reason=_REF)
    chars = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"
    ]
    # Each character alone between two letters, so a split or a merge shows.
    text = " ".join(f"a{c}b" for c in chars)
    plain = Bm25Embedder("english", stem=False, stopwords=[], token_max_length=10**6)
    ours = plain.terms(text)[0]
    ref = tok.SimpleTokenizer.tokenize(fe_utils.remove_non_alphanumeric(text))
    ref = [t for t in ref if t != "_"]  # fastembed drops "_" as punctuation later
    assert ours == ref


# --------------------------------------------------------------------------- API


def test_embed_returns_sparse_vectors(english: Bm25Embedder) -> None:
    docs = english.embed(["Fast JSON parsing", "A YAML loader", "the"])
    assert all(isinstance(d, SparseVector) for d in docs)
    assert docs[2].nnz == 0  # only a stop word
    assert all(bool((np.diff(d.indices) > 0).all()) for d in docs)
    q = english.embed_query("json JSON parsing parses")[0]
    assert q.nnz == 2 and q.values.tolist() == [1.0, 1.0]  # json, pars
    assert q.dot(docs[0]) > 0 and q.dot(docs[1]) == 0
    batch = english.embed_batch(["a b c fox", "dog"])
    assert isinstance(batch, SparseBatch) and len(batch) == 2
    assert batch.indptr.tolist()[0] == 0 and batch.indptr[-1] == batch.nnz
    assert english.embed([]) == []
    assert english.space == KEYWORD_SPACE and english.degraded is False


def test_average_length_is_the_corpus_mean(english: Bm25Embedder, corpus: list[str]) -> None:
    terms = english.terms(corpus)
    assert english.average_length(corpus) == pytest.approx(sum(map(len, terms)) / len(terms))
    assert english.average_length([]) == 0.0


def test_lone_surrogates_split_like_any_non_word_character(
    english: Bm25Embedder, fastembed_english: Any
) -> None:
    texts = ["broken\ud800text here", "\udfff"]
    _assert_same(english.embed(texts), _as_dicts(fastembed_english.embed(texts)), texts)


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"language": "klingon"}, ValueError, "no Snowball stemmer"),
        ({"k1": -1.0}, ValueError, "k1 must be"),
        ({"b": 1.5}, ValueError, "b must lie in"),
        ({"avg_len": 0.0}, ValueError, "avg_len must be"),
        ({"avg_len": math.nan}, ValueError, "avg_len must be"),
        ({"token_max_length": 0}, ValueError, "token_max_length"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=re.escape(words)):
        Bm25Embedder(**kwargs)


def test_bad_texts_are_refused(english: Bm25Embedder) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is int, expected str"):
        english.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="kind must be"):
        english.embed("x", kind="document")  # type: ignore[arg-type]


def test_unknown_language_without_stemming_has_no_stop_words() -> None:
    bm = Bm25Embedder("klingon", stem=False)
    assert bm.stopwords == []
    assert bm.terms("The Foxes") == [["the", "foxes"]]


# --------------------------------------------------------------------------- ranking


def _idf(batch: SparseBatch) -> dict[int, float]:
    """Qdrant's ``modifier: idf`` (Lucene's): ln(1 + (N - n + 0.5) / (n + 0.5))."""
    ids, df = np.unique(batch.indices, return_counts=True)
    n_docs = len(batch)
    values = np.log1p((n_docs - df + 0.5) / (df + 0.5))
    return dict(zip(ids.tolist(), values.tolist(), strict=True))


def _scores(batch: SparseBatch, idf: dict[int, float], query: SparseVector) -> np.ndarray:
    rows = np.repeat(np.arange(len(batch)), np.diff(batch.indptr))
    hit = np.isin(batch.indices, query.indices)
    weights = np.array([idf[i] for i in batch.indices[hit].tolist()], dtype=np.float64)
    out = np.zeros(len(batch), dtype=np.float64)
    np.add.at(out, rows[hit], batch.values[hit].astype(np.float64) * weights)
    return out


def _queries(corpus: list[str], bm: Bm25Embedder) -> Iterator[tuple[str, list[str]]]:
    """100 queries, the first four words of every 100th summary: the text and
    its distinct terms (what the reference packages are given)."""
    for line in corpus[7::100][:100]:
        text = " ".join(line.split()[:4])
        terms = list(dict.fromkeys(bm.terms(text)[0]))
        assert terms, text
        yield text, terms


def _top(scores: np.ndarray, k: int = 10) -> list[int]:
    # Score, then index: equal scores (repeated summaries) in a fixed order.
    order = np.lexsort((np.arange(len(scores)), -np.round(scores, 5)))
    return [int(i) for i in order[:k] if scores[i] > 0]


def test_ranking_agrees_with_bm25s_and_rank_bm25(corpus: list[str]) -> None:
    bm25s = pytest.importorskip("bm25s", reason="pip install caxton-models[test]")
    rank_bm25 = pytest.importorskip("rank_bm25", reason="pip install caxton-models[test]")
    probe = Bm25Embedder("english")
    tokens = probe.terms(corpus)
    avg = probe.average_length(corpus)
    bm = Bm25Embedder("english", avg_len=avg)
    batch = bm.embed_batch(corpus)
    idf = _idf(batch)

    ref = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    ref.index(tokens, show_progress=False)
    okapi = rank_bm25.BM25Okapi(tokens, k1=1.2, b=0.75)

    queries = list(_queries(corpus, bm))
    assert len(queries) == 100
    same_s = same_o = total_s = total_o = 0
    worst = 0.0
    for text, q in queries:
        ours = _scores(batch, idf, bm.embed_query(text)[0])
        theirs = np.asarray(ref.get_scores(q))
        # Lucene's BM25 drops the constant (k1 + 1) of fastembed's numerator.
        ours = ours / (1.2 + 1)
        worst = max(worst, float(np.max(np.abs(ours - theirs))))
        top_s, top_o = _top(theirs), _top(np.asarray(okapi.get_scores(q)))
        same_s += len(set(_top(ours)) & set(top_s))
        same_o += len(set(_top(ours)) & set(top_o))
        total_s, total_o = total_s + len(top_s), total_o + len(top_o)
    # The same formula on the same tokens: the same scores, up to float32 weights.
    assert worst < 1e-3
    overlap_s, overlap_o = same_s / total_s, same_o / total_o
    print(
        f"top-10 overlap over {len(queries)} queries: bm25s(lucene) {overlap_s:.3f}, "
        f"rank_bm25(Okapi idf) {overlap_o:.3f}; max |score diff| vs bm25s {worst:.2e}"
    )
    assert overlap_s >= 0.99
    assert overlap_o >= 0.95
