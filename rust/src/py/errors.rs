//! The one place where a core error becomes a Python exception.
//!
//! Every error goes through [`python_kind`], which says which class it
//! becomes and which fields it carries; [`raise`] builds that. Domain errors
//! are classes of `caxton_models/errors.py` (so they carry typed fields such
//! as `expected`/`actual`), named by [`Class`] rather than by strings, so the
//! list of names the core can raise is a value the tests check against
//! `errors.py` (`_error_classes`, `_error_samples`). OS errors map onto the
//! builtin `OSError` subclasses with `errno` and `filename` set, as Python's
//! own `open()` would raise them.

use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyKeyError, PyKeyboardInterrupt, PyOSError,
    PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::CoreError;
use crate::exceptions::{
    onnx_kind, python_kind, safetensors_kind, samples, Builtin, Class, Kind, OsClass, Value,
};
use crate::onnx::OnnxError;
use crate::safetensors::SafetensorsError;

fn value<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Str(s) => pyo3::types::PyString::new(py, s).into_any(),
    })
}

/// Builds `caxton_models.errors.<class>(message, **fields)`.
fn domain_error(py: Python<'_>, class: Class, message: &str, fields: &[(&str, Value)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("caxton_models.errors")?.getattr(class.name())?;
        let kwargs = PyDict::new(py);
        for (k, v) in fields {
            kwargs.set_item(*k, value(py, v)?)?;
        }
        Ok(PyErr::from_value(cls.call((message,), Some(&kwargs))?))
    };
    build().unwrap_or_else(|e| {
        PyRuntimeError::new_err(format!(
            "{message} (and building {} failed: {e})",
            class.name()
        ))
    })
}

/// The Python exception for `kind` with `message`.
pub(crate) fn raise(kind: Kind, message: String) -> PyErr {
    match kind {
        Kind::Os { class, errno, path } => {
            let args = (errno, message, path);
            match class {
                OsClass::FileNotFoundError => PyFileNotFoundError::new_err(args),
                OsClass::PermissionError => PyPermissionError::new_err(args),
                OsClass::IsADirectoryError => PyIsADirectoryError::new_err(args),
                OsClass::OSError => PyOSError::new_err(args),
            }
        }
        Kind::Builtin(Builtin::ValueError) => PyValueError::new_err(message),
        Kind::Builtin(Builtin::KeyError) => PyKeyError::new_err(message),
        Kind::Builtin(Builtin::RuntimeError) => PyRuntimeError::new_err(message),
        Kind::Builtin(Builtin::KeyboardInterrupt) => PyKeyboardInterrupt::new_err(message),
        Kind::Domain(class, fields) => {
            Python::attach(|py| domain_error(py, class, &message, &fields))
        }
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        raise(python_kind(&e), e.to_string())
    }
}

impl From<SafetensorsError> for PyErr {
    fn from(e: SafetensorsError) -> PyErr {
        raise(safetensors_kind(&e), e.to_string())
    }
}

impl From<OnnxError> for PyErr {
    fn from(e: OnnxError) -> PyErr {
        raise(onnx_kind(&e), e.to_string())
    }
}

fn describe<'py>(py: Python<'py>, kind: &Kind) -> PyResult<(String, String, Bound<'py, PyDict>)> {
    let fields = PyDict::new(py);
    let (module, class) = match kind {
        Kind::Os { class, errno, path } => {
            fields.set_item("errno", errno)?;
            fields.set_item("filename", path)?;
            ("builtins", format!("{class:?}"))
        }
        Kind::Builtin(b) => ("builtins", format!("{b:?}")),
        Kind::Domain(class, fs) => {
            for (k, v) in fs {
                fields.set_item(*k, value(py, v)?)?;
            }
            ("caxton_models.errors", class.name().to_string())
        }
    };
    Ok((module.to_string(), class, fields))
}

/// `(module, class, fields)` of each sample: what `_raise_error_sample(i)`
/// must raise. For the test of the seam, not for callers.
#[pyfunction]
fn _error_samples(py: Python<'_>) -> PyResult<Vec<(String, String, Bound<'_, PyDict>)>> {
    samples().iter().map(|(k, _)| describe(py, k)).collect()
}

/// Raises sample `index` through the seam.
#[pyfunction]
fn _raise_error_sample(index: usize) -> PyResult<()> {
    let (kind, msg) = samples()
        .into_iter()
        .nth(index)
        .ok_or_else(|| PyValueError::new_err(format!("no error sample {index}")))?;
    Err(raise(kind, msg))
}

/// The names of every `caxton_models.errors` class the core can raise.
#[pyfunction]
fn _error_classes() -> Vec<&'static str> {
    Class::ALL.iter().map(|c| c.name()).collect()
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_error_samples, m)?)?;
    m.add_function(wrap_pyfunction!(_raise_error_sample, m)?)?;
    m.add_function(wrap_pyfunction!(_error_classes, m)?)?;
    Ok(())
}
