"""Whether an update moves the embedding space: both revisions embed the same
few fixed texts, and an automatic switch happens only when every pair of
vectors agrees (cosine >= :data:`MIN_COSINE`). Otherwise an application's
stored vectors (from the current revision) and new queries (from the next)
would silently live in two spaces: the update stays staged and the operator
migrates (``caxton model migrate``) before switching.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import numpy as np

from caxton_models.registry import ModelSpec
from caxton_models.store import InstalledModel

log = logging.getLogger("caxton_models.acquire.versions")

#: Below this, two revisions do not share one embedding space (a re-export of
#: the same weights stays above 0.9999; a fine-tune falls far below).
MIN_COSINE = 0.999

#: Short, varied texts: words, a sentence, digits and punctuation, non-ASCII.
PROBE_TEXTS = (
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Invoice 2024-117: 3 items, total 42.50 EUR",
    "Les modèles d'embedding transforment le texte en vecteurs.",
)


def embed_probe(folder: Any, spec: ModelSpec) -> np.ndarray:
    """The probe texts embedded by the model in ``folder`` (rows unit length)."""
    from caxton_models.runtime.embedder import Embedder

    # A private graph cache: a graph derived from safetensors is built for this
    # comparison only, and nothing is written beside a stored revision.
    with tempfile.TemporaryDirectory(prefix="caxton-probe-") as graphs:
        emb: Any = Embedder.from_dir(
            folder, model_id=spec.model_id, optimize=False, threads=1, graph_cache_dir=graphs
        )
        try:
            vecs = np.asarray(emb.embed(list(PROBE_TEXTS)), dtype=np.float64)
        finally:
            emb.close()
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1.0, norms)


def min_cosine(old: np.ndarray, new: np.ndarray) -> float:
    """The smallest cosine between the rows of ``old`` and ``new`` (-1 when
    their shapes differ: another dimension is another space)."""
    if old.shape != new.shape:
        return -1.0
    return float(np.min(np.sum(old * new, axis=1)))


def space_moved(spec: ModelSpec, current: InstalledModel, staged: InstalledModel) -> str | None:
    """None when ``staged`` embeds like ``current``; else why an automatic
    switch must not happen (the message names the way forward)."""
    old_c = current.metadata.commit if current.metadata else None
    new_c = staged.metadata.commit if staged.metadata else None
    try:
        cos = min_cosine(embed_probe(current.path, spec), embed_probe(staged.path, spec))
    except Exception as e:  # no engine, a model that does not run: never switch blindly
        log.debug("probe embedding of %s failed", spec.name, exc_info=True)
        return (
            f"revision {new_c} is staged, not switched: its embeddings could not be compared "
            f"with revision {old_c}'s ({type(e).__name__}: {e}). Switch by hand with "
            f"`caxton model update {spec.name}` once you know the vectors are compatible."
        )
    if cos >= MIN_COSINE:
        return None
    return (
        f"revision {new_c} is staged, not switched: it moves the embedding space (min cosine "
        f"{cos:.4f} < {MIN_COSINE} against revision {old_c} on {len(PROBE_TEXTS)} probe "
        "texts), so vectors stored with the current revision would not match new ones. "
        "A migration is needed: re-embed your corpus with `caxton model migrate CORPUS.txt "
        f"--old {spec.name} --to {staged.path} --output VECTORS.npy`, then switch with "
        f"`caxton model update {spec.name}`."
    )
