"""A process that loaded a model gets the new revision from ``load()`` after
``update()`` and the old one again after ``rollback()``: the loaded-model key
names the commit installed in the folder, not just the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import caxton_models
from caxton_models._load import loaded_models
from tests.support import versions
from tests.support.versions import NEW, OLD

# Longer than the new revision's max_seq_length (64 tokens): its vectors differ.
LONG = " ".join(f"word{i} of a long passage about model revisions" for i in range(40))


def test_load_follows_update_and_rollback_in_one_process(
    tmp_path: Path, publisher_repo: Path
) -> None:
    mgr, _ = versions.setup(tmp_path, publisher_repo, "manual")
    cfg = mgr.config
    first = caxton_models.load("tiny", config=cfg, fallback=False)
    assert first.revision == OLD
    old_vec = first.embed([LONG])
    assert caxton_models.load("tiny", config=cfg) is first  # no change: the same session
    caxton_models.load("tiny", config=cfg, threads=1)  # other options: a second session

    mgr.update("tiny")
    updated = caxton_models.load("tiny", config=cfg, fallback=False)
    assert updated.revision == NEW and updated.max_sequence_length == 64
    assert float(np.dot(updated.embed([LONG])[0], old_vec[0])) < 0.9999
    assert len(loaded_models(cfg).loaded()) == 1  # both of the old revision's were dropped

    mgr.rollback("tiny")
    back = caxton_models.load("tiny", config=cfg, fallback=False)
    assert back.revision == OLD and back is not updated
    np.testing.assert_allclose(back.embed([LONG]), old_vec, atol=1e-6)
