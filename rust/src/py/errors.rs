//! The one place where `CoreError` becomes a Python exception.
//!
//! Domain errors are classes defined in `caxton_models/errors.py` (so they can
//! carry typed fields such as `expected`/`actual`); OS errors map onto the
//! builtin `OSError` subclasses with `errno` and `filename` set, as Python's
//! own `open()` would raise them.

use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyKeyboardInterrupt, PyOSError, PyPermissionError,
    PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::CoreError;

/// Builds `caxton_models.errors.<class_name>(message, **fields)`.
#[allow(dead_code)] // first used by the download engine
pub(crate) fn domain_error<'py>(
    py: Python<'py>,
    class_name: &str,
    message: String,
    fields: &[(&str, Bound<'py, PyAny>)],
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import("caxton_models.errors")?.getattr(class_name)?;
        let kwargs = PyDict::new(py);
        for (k, v) in fields {
            kwargs.set_item(*k, v)?;
        }
        let exc = class.call((message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| {
        PyRuntimeError::new_err(format!("{message} (and building {class_name} failed: {e})"))
    })
}

fn int(py: Python<'_>, v: u64) -> Bound<'_, PyAny> {
    v.into_pyobject(py)
        .map(|o| o.into_any())
        .unwrap_or_else(|_| py.None().into_bound(py))
}

fn string<'py>(py: Python<'py>, v: &str) -> Bound<'py, PyAny> {
    pyo3::types::PyString::new(py, v).into_any()
}

fn os_error(err: &std::io::Error, msg: String, path: String) -> PyErr {
    let errno = err.raw_os_error().unwrap_or(0);
    let args = (errno, msg, path);
    match err.kind() {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(args),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(args),
        _ if errno == 21 => PyIsADirectoryError::new_err(args),
        _ => PyOSError::new_err(args),
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        let msg = e.to_string();
        match e {
            CoreError::Io { source, path, .. } => {
                os_error(&source, msg, path.display().to_string())
            }
            CoreError::IsADirectory { path } => {
                PyIsADirectoryError::new_err((21, msg, path.display().to_string()))
            }
            CoreError::UnknownAlgorithm(_) => PyValueError::new_err(msg),
            CoreError::Cancelled => PyKeyboardInterrupt::new_err("cancelled"),
            CoreError::Worker(_) => PyRuntimeError::new_err(msg),
            CoreError::InvalidArgument(_) => PyValueError::new_err(msg),
            CoreError::Http { status, .. } => Python::attach(|py| {
                domain_error(
                    py,
                    "ServerError",
                    msg,
                    &[("status", int(py, status as u64))],
                )
            }),
            CoreError::AccessDenied { status, .. } => Python::attach(|py| {
                domain_error(
                    py,
                    "AccessDenied",
                    msg,
                    &[("status", int(py, status as u64))],
                )
            }),
            CoreError::Network { .. } => {
                Python::attach(|py| domain_error(py, "NetworkError", msg, &[]))
            }
            CoreError::Redirect { .. } => {
                Python::attach(|py| domain_error(py, "NetworkError", msg, &[]))
            }
            CoreError::Timeout { .. } => {
                Python::attach(|py| domain_error(py, "NetworkTimeout", msg, &[]))
            }
            CoreError::Checksum {
                expected, actual, ..
            } => Python::attach(|py| {
                domain_error(
                    py,
                    "ChecksumMismatch",
                    msg,
                    &[
                        ("expected", string(py, &expected)),
                        ("actual", string(py, &actual)),
                    ],
                )
            }),
            CoreError::Size {
                expected, actual, ..
            } => Python::attach(|py| {
                domain_error(
                    py,
                    "SizeMismatch",
                    msg,
                    &[("expected", int(py, expected)), ("actual", int(py, actual))],
                )
            }),
            CoreError::Incomplete { have, total, .. } => Python::attach(|py| {
                domain_error(
                    py,
                    "DownloadIncomplete",
                    msg,
                    &[("have", int(py, have)), ("total", int(py, total))],
                )
            }),
            CoreError::DiskSpace {
                required,
                available,
                ..
            } => Python::attach(|py| {
                domain_error(
                    py,
                    "InsufficientDiskSpace",
                    msg,
                    &[
                        ("required", int(py, required)),
                        ("available", int(py, available)),
                    ],
                )
            }),
            CoreError::NotWritable { .. } => {
                Python::attach(|py| domain_error(py, "PermissionDenied", msg, &[]))
            }
            CoreError::Batch(_) => PyValueError::new_err(msg),
        }
    }
}
