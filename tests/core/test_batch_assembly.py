"""The Rust batch assembly and pooling, on small hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from caxton_models import _core


def test_batches_are_length_sorted_and_cut_by_token_budget():
    seqs = [[1] * n for n in (3, 50, 4, 5, 49, 2)]
    plan = _core.BatchPlan(seqs, token_budget=100, batch_overhead=10)
    assert plan.order.tolist() == [1, 4, 3, 2, 0, 5]  # longest first, stable
    shapes = [plan.batch(k)[1].shape for k in range(len(plan))]
    assert shapes[0] == (2, 50)
    assert all(r * c <= 100 for r, c in shapes)
    assert plan.padded_tokens < 2 * plan.real_tokens


def test_arrays_are_moved_into_numpy_not_copied():
    _, ids, mask, types = _core.BatchPlan([[5, 6], [7]], token_budget=64).batch(0)
    for a in (ids, mask, types):
        assert a.flags.c_contiguous and a.flags.writeable and a.flags.owndata is False
        assert a.base is not None  # owned by the Rust allocation, no numpy copy
    assert ids.tolist() == [[5, 6], [7, 0]]
    assert mask.tolist() == [[1, 1], [1, 0]]


def test_pad_id_and_multiple():
    _, ids, mask, _ = _core.BatchPlan(
        [[9, 9, 9]], token_budget=64, pad_id=-1, pad_to_multiple_of=4
    ).batch(0)
    assert ids.tolist() == [[9, 9, 9, -1]]
    assert mask.tolist() == [[1, 1, 1, 0]]


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="token_budget"):
        _core.BatchPlan([[1]], token_budget=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        _core.BatchPlan([[1]], token_budget=8, max_batch_size=0)
    plan = _core.BatchPlan([[1]], token_budget=8)
    with pytest.raises(IndexError, match="out of range"):
        plan.batch(1)
    with pytest.raises(OverflowError):
        _core.BatchPlan([[-1]], token_budget=8)


def test_empty_input_gives_no_batches():
    plan = _core.BatchPlan([], token_budget=8)
    assert len(plan) == 0 and plan.padded_tokens == 0 and plan.order.size == 0


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean", [2.0, 3.0]),
        ("max", [3.0, 4.0]),
        ("cls", [1.0, 2.0]),
        ("lasttoken", [3.0, 4.0]),
        ("mean_sqrt_len", [4.0 / np.sqrt(2), 6.0 / np.sqrt(2)]),
    ],
)
def test_pooling_modes_ignore_padding(mode, expected):
    hidden = np.array([[[1, 2], [3, 4], [100, 100]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]], dtype=np.int64)
    out = np.zeros((1, 2), dtype=np.float32)
    _core.pool_into(hidden, mask, np.array([0]), out, mode=mode, normalize=False)
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def test_pooling_normalises_and_matches_numpy():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(5, 7, 16)).astype(np.float32)
    mask = (np.arange(7)[None, :] < rng.integers(1, 8, size=5)[:, None]).astype(np.int64)
    rows = np.array([4, 0, 2, 1, 3])
    out = np.zeros((5, 16), dtype=np.float32)
    _core.pool_into(hidden, mask, rows, out)
    ref = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(out[rows], ref, rtol=1e-5, atol=1e-6)
    # Non-contiguous hidden states (a view) give the same answer.
    wide = np.zeros((5, 7, 32), dtype=np.float32)
    wide[:, :, ::2] = hidden
    out2 = np.zeros_like(out)
    _core.pool_into(wide[:, :, ::2], mask, rows, out2)
    np.testing.assert_array_equal(out, out2)


def test_pool_rejects_mismatched_shapes():
    hidden = np.zeros((2, 3, 4), dtype=np.float32)
    mask = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="out of range"):
        _core.pool_into(hidden, mask, np.array([0, 5]), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="columns"):
        _core.pool_into(hidden, mask, np.array([0, 1]), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="mask"):
        _core.pool_into(hidden, mask[:, :2], np.array([0, 1]), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="pooling mode"):
        _core.pool_into(hidden, mask, np.array([0, 1]), np.zeros((2, 4), np.float32), mode="x")
