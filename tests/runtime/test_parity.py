"""Parity with the sentence-transformers reference embeddings, on both real
corpora, for every graph we run: fp32 (ORT-optimised), int8 per-channel, bundled-mini.

The thresholds are the issue's: fp32 cosine >= 0.9999 for every text;
bundled-mini mean >= 0.99 and min >= 0.95; int8 mean >= 0.998 and min >= 0.99
(issue 24's bar; the recipe measured mean 0.9994 / 0.9995, min 0.995 / 0.998 on
PyPI / docs, runtime/_quant.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.runtime.embedder import Embedder

CORPORA = ["pypi-summaries-10k", "python-docs-passages"]


@pytest.fixture(scope="module")
def embedders(minilm_dir: Path, graph_cache_dir: Path) -> dict[str, Embedder]:
    return {
        "fp32": Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir),
        "int8": Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir, quantize=True),
        "bundled-mini": caxton_models.load("bundled-mini"),
    }


def _cosines(emb: Embedder, corpora_dir: Path, reference_dir: Path, corpus: str) -> np.ndarray:
    texts = (corpora_dir / f"{corpus}.txt").read_text(encoding="utf-8").splitlines()
    ref = np.load(reference_dir / f"all-MiniLM-L6-v2.{corpus}.npy")
    got = emb.embed(texts)
    assert got.shape == ref.shape and got.dtype == np.float32
    return (got * ref).sum(axis=1)


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize(
    ("variant", "min_mean", "min_each"),
    [("fp32", 0.9999, 0.9999), ("int8", 0.998, 0.99), ("bundled-mini", 0.99, 0.95)],
)
def test_parity_with_reference(
    embedders, corpora_dir, reference_dir, corpus, variant, min_mean, min_each
):
    cos = _cosines(embedders[variant], corpora_dir, reference_dir, corpus)
    print(f"{variant} {corpus}: mean {cos.mean():.5f} min {cos.min():.5f} (n={cos.size})")
    worst = int(cos.argmin())
    assert cos.mean() >= min_mean
    assert cos.min() >= min_each, f"text #{worst} has cosine {cos[worst]:.5f}"
