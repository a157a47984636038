//! Thin wrappers over `crate::batch`: arrays move into numpy without copies.

use numpy::ndarray::{Array1, Array2};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3,
    PyReadwriteArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;

use crate::batch::{self, Plan, Pooling, Shape3};
use crate::error::CoreError;

type BatchArrays<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<i64>>,
);

/// Token sequences sorted by length and cut into batches under a budget of
/// padded tokens. `batch(k)` returns `(rows, input_ids, attention_mask,
/// token_type_ids)`: `rows` are the input positions of the batch's rows.
#[pyclass(name = "BatchPlan", module = "caxton_models._core", frozen)]
struct PyBatchPlan {
    seqs: Vec<Vec<u32>>,
    plan: Plan,
    pad_id: i64,
    pad_to_multiple_of: usize,
}

#[pymethods]
impl PyBatchPlan {
    #[new]
    #[pyo3(signature = (seqs, *, token_budget, max_batch_size = 1024, pad_id = 0, pad_to_multiple_of = 1, batch_overhead = 16))]
    fn new(
        py: Python<'_>,
        seqs: Vec<Vec<u32>>,
        token_budget: usize,
        max_batch_size: usize,
        pad_id: i64,
        pad_to_multiple_of: usize,
        batch_overhead: usize,
    ) -> PyResult<Self> {
        let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let plan = py.detach(|| {
            batch::plan(
                &lengths,
                token_budget,
                max_batch_size,
                pad_to_multiple_of,
                batch_overhead,
            )
        })?;
        Ok(Self {
            seqs,
            plan,
            pad_id,
            pad_to_multiple_of,
        })
    }

    fn __len__(&self) -> usize {
        self.plan.len()
    }

    /// Input positions in batch order (longest first).
    #[getter]
    fn order<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        Array1::from_iter(self.plan.order.iter().map(|&i| i as i64)).into_pyarray(py)
    }

    /// Batch `k` is `order[offsets[k]:offsets[k + 1]]`.
    #[getter]
    fn offsets(&self) -> Vec<usize> {
        self.plan.offsets.clone()
    }

    /// Tokens the model runs, padding included.
    #[getter]
    fn padded_tokens(&self) -> usize {
        self.plan.padded_tokens()
    }

    /// Real (unpadded) tokens across all sequences.
    #[getter]
    fn real_tokens(&self) -> usize {
        self.seqs.iter().map(Vec::len).sum()
    }

    fn batch<'py>(&self, py: Python<'py>, k: usize) -> PyResult<BatchArrays<'py>> {
        let pick = self.plan.batch(k).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "batch {k} out of range ({} batches)",
                self.plan.len()
            ))
        })?;
        let padded =
            py.detach(|| batch::assemble(&self.seqs, pick, self.pad_id, self.pad_to_multiple_of))?;
        let shape = (padded.rows, padded.cols);
        let to2 = |v: Vec<i64>| {
            Array2::from_shape_vec(shape, v).map_err(|e| PyValueError::new_err(e.to_string()))
        };
        let rows = Array1::from_iter(pick.iter().map(|&i| i as i64));
        Ok((
            rows.into_pyarray(py),
            to2(padded.input_ids)?.into_pyarray(py),
            to2(padded.attention_mask)?.into_pyarray(py),
            to2(padded.token_type_ids)?.into_pyarray(py),
        ))
    }
}

/// Pools `hidden` (batch, seq, dim) float32 under `attention_mask` (batch,
/// seq) and writes row r into `out[rows[r]]`, L2-normalised if asked.
#[pyfunction]
#[pyo3(signature = (hidden, attention_mask, rows, out, *, mode = "mean", normalize = true))]
fn pool_into(
    py: Python<'_>,
    hidden: PyReadonlyArray3<'_, f32>,
    attention_mask: PyReadonlyArray2<'_, i64>,
    rows: PyReadonlyArray1<'_, i64>,
    mut out: PyReadwriteArray2<'_, f32>,
    mode: &str,
    normalize: bool,
) -> PyResult<()> {
    let mode = Pooling::parse(mode)?;
    let &[b, s, d] = hidden.shape() else {
        return Err(PyValueError::new_err("hidden must be 3-D"));
    };
    if out.shape()[1] != d {
        return Err(PyValueError::new_err(format!(
            "out has {} columns, hidden states have {d}",
            out.shape()[1]
        )));
    }
    // Non-contiguous inputs (rare: ORT returns contiguous arrays) are copied once.
    let h_owned: Vec<f32>;
    let h = match hidden.as_slice() {
        Ok(h) => h,
        Err(_) => {
            h_owned = hidden.as_array().iter().copied().collect();
            &h_owned
        }
    };
    let m_owned: Vec<i64>;
    let m = match attention_mask.as_slice() {
        Ok(m) => m,
        Err(_) => {
            m_owned = attention_mask.as_array().iter().copied().collect();
            &m_owned
        }
    };
    let rows: Vec<usize> = rows
        .as_array()
        .iter()
        .map(|&r| usize::try_from(r))
        .collect::<Result<_, _>>()
        .map_err(|_| PyValueError::new_err("rows must be non-negative"))?;
    let out = out
        .as_slice_mut()
        .map_err(|_| PyValueError::new_err("out must be a C-contiguous float32 array"))?;
    let shape = Shape3 {
        batch: b,
        seq: s,
        dim: d,
    };
    py.detach(|| batch::pool_into(h, shape, m, &rows, out, mode, normalize))
        .map_err(|e: CoreError| e.into())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBatchPlan>()?;
    m.add_function(wrap_pyfunction!(pool_into, m)?)?;
    Ok(())
}
