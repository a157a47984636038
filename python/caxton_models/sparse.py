"""Sparse vectors: one text's ``SparseVector`` and a batch's ``SparseBatch`` (CSR).

Shared by every sparse producer (BM25 keyword vectors, SPLADE heads), so the
invariants live here once:

- ``indices`` are ``int64``, strictly increasing, in ``[0, 2**32)``: the id
  space of Qdrant's sparse vectors (``u32``), and the dtype fastembed's
  ``SparseEmbedding`` hands out, so arrays pass to either without a cast;
- ``values`` are ``float32`` and finite, one per index.

``SparseBatch`` is the compressed-sparse-row form of a list of vectors
(``indptr``, ``indices``, ``values`` as numpy arrays, the same three arrays
``scipy.sparse.csr_matrix`` takes) without depending on SciPy. Row ``i`` is
``indices[indptr[i]:indptr[i+1]]``; rows are views into the batch's arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

__all__ = ["INDEX_LIMIT", "SparseBatch", "SparseVector"]

#: Indices are below this (Qdrant's sparse vector ids are ``u32``).
INDEX_LIMIT = 1 << 32

IndexArray = npt.NDArray[np.int64]
ValueArray = npt.NDArray[np.float32]


def _as_indices(indices: Any, what: str) -> IndexArray:
    arr = np.asarray(indices)
    if arr.ndim != 1:
        raise ValueError(f"{what}: indices must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what}: indices must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64, copy=False)
    if out.size and (int(out.min()) < 0 or int(out.max()) >= INDEX_LIMIT):
        raise ValueError(
            f"{what}: indices must lie in [0, 2**32), got {int(out.min())}..{int(out.max())}"
        )
    return out


def _as_values(values: Any, what: str) -> ValueArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what}: values must be 1-D, got shape {arr.shape}")
    if arr.size and not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{what}: values must be numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float32, copy=False)
    if out.size and not np.isfinite(out).all():
        raise ValueError(f"{what}: values must be finite (no NaN or inf)")
    return out


def _check_increasing(indices: IndexArray, what: str) -> None:
    if indices.size > 1 and not bool((np.diff(indices) > 0).all()):
        raise ValueError(
            f"{what}: indices must be strictly increasing (sorted, no duplicates); "
            "build it with SparseVector.from_dict or SparseVector.from_unsorted"
        )


def _as_pairs(indices: Any, values: Any) -> tuple[IndexArray, ValueArray]:
    idx = _as_indices(indices, "SparseVector")
    val = _as_values(values, "SparseVector")
    if idx.shape != val.shape:
        raise ValueError(
            f"SparseVector: {idx.size} indices but {val.size} values; they pair up one to one"
        )
    return idx, val


class SparseVector:
    """One text's sparse vector: ``indices`` (int64, strictly increasing) and
    ``values`` (float32), the same length."""

    __slots__ = ("indices", "values")

    indices: IndexArray
    values: ValueArray

    def __init__(self, indices: Any, values: Any) -> None:
        idx, val = _as_pairs(indices, values)
        _check_increasing(idx, "SparseVector")
        self.indices = idx
        self.values = val

    @classmethod
    def from_unsorted(cls, indices: Any, values: Any) -> SparseVector:
        """From pairs in any order; a repeated index sums its values."""
        idx, val = _as_pairs(indices, values)
        uniq, inverse = np.unique(idx, return_inverse=True)
        summed = np.zeros(uniq.shape, dtype=np.float64)
        np.add.at(summed, inverse, val)
        return unchecked_vector(uniq.astype(np.int64, copy=False), summed.astype(np.float32))

    @classmethod
    def from_dict(cls, weights: Mapping[int, float]) -> SparseVector:
        """From ``{index: value}`` (fastembed's ``SparseEmbedding.as_dict()`` form)."""
        items = sorted(weights.items())
        return cls(
            np.fromiter((k for k, _ in items), dtype=np.int64, count=len(items)),
            np.fromiter((v for _, v in items), dtype=np.float32, count=len(items)),
        )

    def as_dict(self) -> dict[int, float]:
        """``{index: value}`` with Python numbers (JSON- and Qdrant-ready)."""
        return dict(zip(self.indices.tolist(), self.values.tolist(), strict=True))

    def to_dense(self, dim: int) -> npt.NDArray[np.float32]:
        """A dense float32 array of length ``dim`` (for small vocabularies, e.g. SPLADE)."""
        if self.indices.size and int(self.indices[-1]) >= dim:
            raise ValueError(
                f"to_dense: index {int(self.indices[-1])} does not fit in dim={dim}; "
                "hashed ids (BM25) span 2**32 and have no dense form"
            )
        out = np.zeros(dim, dtype=np.float32)
        out[self.indices] = self.values
        return out

    def dot(self, other: SparseVector) -> float:
        """The inner product with ``other`` (BM25 score of a query against a document)."""
        common, ia, ib = np.intersect1d(
            self.indices, other.indices, assume_unique=True, return_indices=True
        )
        if not common.size:
            return 0.0
        return float(np.dot(self.values[ia].astype(np.float64), other.values[ib]))

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseVector):
            return NotImplemented
        return bool(
            np.array_equal(self.indices, other.indices)
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def __repr__(self) -> str:
        head = ", ".join(
            f"{i}: {v:.4g}"
            for i, v in zip(self.indices[:4].tolist(), self.values[:4].tolist(), strict=True)
        )
        more = ", ..." if self.nnz > 4 else ""
        return f"SparseVector(nnz={self.nnz}, {{{head}{more}}})"


class SparseBatch(Sequence[SparseVector]):
    """A batch of sparse vectors in CSR form: ``indptr`` (int64, ``len(batch) + 1``),
    ``indices`` (int64) and ``values`` (float32). Indexing gives a
    :class:`SparseVector` whose arrays are views into the batch."""

    __slots__ = ("indices", "indptr", "values")

    indptr: IndexArray
    indices: IndexArray
    values: ValueArray

    def __init__(self, indptr: Any, indices: Any, values: Any) -> None:
        ptr_in = np.asarray(indptr)
        if ptr_in.ndim != 1 or ptr_in.size < 1:
            raise ValueError("SparseBatch: indptr needs at least one entry (0 for an empty batch)")
        if not np.issubdtype(ptr_in.dtype, np.integer):
            raise TypeError(f"SparseBatch: indptr must be integers, got dtype {ptr_in.dtype}")
        ptr = ptr_in.astype(np.int64, copy=False)
        idx = _as_indices(indices, "SparseBatch")
        val = _as_values(values, "SparseBatch")
        if idx.shape != val.shape:
            raise ValueError(f"SparseBatch: {idx.size} indices but {val.size} values")
        if int(ptr[0]) != 0 or int(ptr[-1]) != idx.size or bool((np.diff(ptr) < 0).any()):
            raise ValueError(
                "SparseBatch: indptr must start at 0, never decrease and end at "
                f"len(indices)={idx.size}"
            )
        # Strictly increasing within each row: a step down or a repeat is allowed only
        # where a new row starts.
        if idx.size > 1:
            bad = np.diff(idx) <= 0
            starts = ptr[1:-1]
            starts = starts[(starts > 0) & (starts < idx.size)]
            bad[starts - 1] = False
            if bool(bad.any()):
                raise ValueError("SparseBatch: indices must be strictly increasing within each row")
        self.indptr = ptr
        self.indices = idx
        self.values = val

    @classmethod
    def from_vectors(cls, vectors: Iterable[SparseVector]) -> SparseBatch:
        """Stacks vectors (already checked) into one CSR batch."""
        vecs = list(vectors)
        for v in vecs:
            if not isinstance(v, SparseVector):
                raise TypeError(f"SparseBatch.from_vectors takes SparseVector, got {type(v)!r}")
        indptr = np.zeros(len(vecs) + 1, dtype=np.int64)
        np.cumsum([v.nnz for v in vecs], out=indptr[1:])
        if not vecs:
            return unchecked_batch(indptr, np.zeros(0, np.int64), np.zeros(0, np.float32))
        return unchecked_batch(
            indptr,
            np.concatenate([v.indices for v in vecs]),
            np.concatenate([v.values for v in vecs]),
        )

    def __len__(self) -> int:
        return int(self.indptr.size - 1)

    @overload
    def __getitem__(self, i: int) -> SparseVector: ...
    @overload
    def __getitem__(self, i: slice) -> SparseBatch: ...
    def __getitem__(self, i: int | slice) -> SparseVector | SparseBatch:
        n = len(self)
        if isinstance(i, slice):
            return SparseBatch.from_vectors(self[j] for j in range(*i.indices(n)))
        if not -n <= i < n:
            raise IndexError(f"SparseBatch index {i} out of range for {n} rows")
        i %= n
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        return unchecked_vector(self.indices[lo:hi], self.values[lo:hi])

    def __iter__(self) -> Iterator[SparseVector]:
        for j in range(len(self)):
            yield self[j]

    def to_vectors(self) -> list[SparseVector]:
        return list(self)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def to_scipy(self, dim: int = INDEX_LIMIT) -> Any:
        """A ``scipy.sparse.csr_matrix`` of shape ``(len(batch), dim)``; needs SciPy
        (not a dependency of caxton-models)."""
        try:
            from scipy.sparse import csr_matrix
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("SparseBatch.to_scipy needs SciPy: pip install scipy") from exc
        return csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), dim))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseBatch):
            return NotImplemented
        return bool(
            np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.indices, other.indices)
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SparseBatch(rows={len(self)}, nnz={self.nnz})"


# For arrays that already hold the invariants (sorted, unique, in range): rows of a
# checked batch, or the BM25 core's output. Not public: nothing is checked here.
def unchecked_vector(indices: IndexArray, values: ValueArray) -> SparseVector:
    vec = SparseVector.__new__(SparseVector)
    vec.indices = indices
    vec.values = values
    return vec


def unchecked_batch(indptr: IndexArray, indices: IndexArray, values: ValueArray) -> SparseBatch:
    batch = SparseBatch.__new__(SparseBatch)
    batch.indptr = indptr
    batch.indices = indices
    batch.values = values
    return batch
