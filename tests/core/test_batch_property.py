"""Batch assembly round-trips: any sequences, any budget, every row comes
back exactly, and pooling puts every row in its caller-order slot."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from caxton_models import _core

seqs_st = st.lists(st.lists(st.integers(1, 2**31 - 1), max_size=40), max_size=60)


@given(
    seqs=seqs_st,
    budget=st.integers(1, 600),
    max_rows=st.integers(1, 70),
    multiple=st.integers(1, 9),
    overhead=st.integers(0, 200),
)
@settings(deadline=None, max_examples=300)
def test_rows_come_back_exactly_and_in_order(seqs, budget, max_rows, multiple, overhead):
    plan = _core.BatchPlan(
        seqs,
        token_budget=budget,
        max_batch_size=max_rows,
        pad_id=0,
        pad_to_multiple_of=multiple,
        batch_overhead=overhead,
    )
    got: list[list[int] | None] = [None] * len(seqs)
    padded = 0
    for k in range(len(plan)):
        rows, ids, mask, types = plan.batch(k)
        assert ids.dtype == mask.dtype == types.dtype == np.int64
        assert ids.shape == mask.shape == types.shape == (len(rows), ids.shape[1])
        assert ids.shape[1] % multiple == 0
        assert 1 <= len(rows) <= max_rows
        # The budget holds unless a single row alone exceeds it.
        assert len(rows) == 1 or ids.size <= budget
        assert not types.any()
        for r, i in enumerate(rows):
            n = int(mask[r].sum())
            assert mask[r, :n].all() and not mask[r, n:].any()  # right padding
            assert not ids[r, n:].any()  # pad id
            assert got[i] is None
            got[i] = ids[r, :n].tolist()
        padded += ids.size
    assert got == seqs
    assert plan.padded_tokens == padded
    assert plan.real_tokens == sum(map(len, seqs))
    assert sorted(plan.order.tolist()) == list(range(len(seqs)))


@given(seqs=seqs_st.filter(bool), budget=st.integers(1, 300), dim=st.integers(1, 8))
@settings(deadline=None, max_examples=150)
def test_pooling_restores_caller_order(seqs, budget, dim):
    plan = _core.BatchPlan(seqs, token_budget=budget)
    out = np.full((len(seqs), dim), np.nan, dtype=np.float32)
    for k in range(len(plan)):
        rows, ids, mask, _ = plan.batch(k)
        # Each real token's hidden state encodes its input row; padding is junk.
        hidden = np.where(mask[:, :, None] == 1, rows[:, None, None], 1e6)
        hidden = np.broadcast_to(hidden, (*ids.shape, dim)).astype(np.float32)
        _core.pool_into(hidden, mask, rows, out, mode="mean", normalize=False)
    for i, s in enumerate(seqs):
        expected = float(i) if s else 0.0  # an empty row pools to zeros
        np.testing.assert_allclose(out[i], expected, rtol=1e-6)
