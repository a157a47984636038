//! `onnx_external_data(path)`: the ONNX format check (rust/src/onnx.rs).

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::onnx;

/// Checks that an ONNX file is a well-formed `ModelProto` protobuf as far as
/// the walk to its tensors reads, and returns the files its tensors keep
/// their bytes in: `[(location, end, tensor)]`, each location once (as the
/// graph spells it, not checked as a path), `end` the furthest byte any
/// tensor reads from it (`offset + length`) and `tensor` the name of that
/// tensor. Raises `InvalidModelFormat` naming the file and the fault, or
/// `OSError` when it cannot be read. The GIL is released for the scan.
#[pyfunction]
fn onnx_external_data(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(String, u64, String)>> {
    let files = py.detach(move || onnx::read_external_data(&path))?;
    Ok(files
        .into_iter()
        .map(|f| (f.location, f.end, f.tensor))
        .collect())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(onnx_external_data, m)?)?;
    Ok(())
}
