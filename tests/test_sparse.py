"""caxton_models.sparse: the invariants of SparseVector and the CSR SparseBatch."""

from __future__ import annotations

import re

import numpy as np
import pytest

from caxton_models.sparse import INDEX_LIMIT, SparseBatch, SparseVector


def test_vector_casts_to_int64_and_float32() -> None:
    v = SparseVector(np.array([1, 5, 2**32 - 1], dtype=np.uint32), [0.5, 1, 2])
    assert v.indices.dtype == np.int64
    assert v.values.dtype == np.float32
    assert v.as_dict() == {1: 0.5, 5: 1.0, 2**32 - 1: 2.0}
    assert len(v) == v.nnz == 3


@pytest.mark.parametrize(
    ("indices", "values", "exc", "words"),
    [
        ([3, 1], [1.0, 1.0], ValueError, "strictly increasing"),
        ([1, 1], [1.0, 1.0], ValueError, "strictly increasing"),
        ([-1], [1.0], ValueError, "[0, 2**32)"),
        ([INDEX_LIMIT], [1.0], ValueError, "[0, 2**32)"),
        ([1, 2], [1.0], ValueError, "pair up"),
        ([1.5], [1.0], TypeError, "integers"),
        ([1], ["a"], TypeError, "numbers"),
        ([1], [float("nan")], ValueError, "finite"),
        ([[1]], [[1.0]], ValueError, "1-D"),
    ],
)
def test_vector_refuses_bad_input(
    indices: object, values: object, exc: type[Exception], words: str
) -> None:
    with pytest.raises(exc, match=re.escape(words)):
        SparseVector(indices, values)


def test_from_unsorted_sorts_and_sums_repeats() -> None:
    v = SparseVector.from_unsorted([7, 2, 7], [1.0, 2.0, 0.5])
    assert v.indices.tolist() == [2, 7]
    assert v.values.tolist() == [2.0, 1.5]


def test_from_dict_round_trip_and_dot() -> None:
    a = SparseVector.from_dict({9: 1.0, 3: 2.0})
    b = SparseVector.from_dict({3: 0.5, 4: 1.0, 9: 2.0})
    assert a.indices.tolist() == [3, 9]
    assert SparseVector.from_dict(a.as_dict()) == a
    assert a.dot(b) == pytest.approx(2.0 * 0.5 + 1.0 * 2.0)
    assert a.dot(SparseVector([], [])) == 0.0
    assert a.to_dense(10).tolist() == [0, 0, 0, 2, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="does not fit"):
        a.to_dense(5)


def test_batch_from_vectors_rows_are_views() -> None:
    vs = [SparseVector([1, 4], [1, 2]), SparseVector([], []), SparseVector([0], [3])]
    batch = SparseBatch.from_vectors(vs)
    assert batch.indptr.tolist() == [0, 2, 2, 3]
    assert batch.indices.tolist() == [1, 4, 0]
    assert len(batch) == 3 and batch.nnz == 3
    assert list(batch) == vs
    assert batch[-1] == vs[2]
    assert np.shares_memory(batch[0].indices, batch.indices)
    assert batch[1:] == SparseBatch.from_vectors(vs[1:])
    with pytest.raises(IndexError):
        batch[3]
    assert len(SparseBatch.from_vectors([])) == 0


def test_batch_constructor_checks_csr() -> None:
    ok = SparseBatch([0, 2, 3], [5, 6, 1], [1, 1, 1])
    assert ok[1].indices.tolist() == [1]
    with pytest.raises(ValueError, match="at least one entry"):
        SparseBatch([], [], [])
    with pytest.raises(ValueError, match="end at"):
        SparseBatch([0, 2], [5, 6, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="within each row"):
        SparseBatch([0, 3], [5, 6, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="indices but"):
        SparseBatch([0, 1], [5], [1, 1])
