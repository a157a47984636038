//! One error type for the whole core; `py::errors` is the single place that
//! turns it into Python exceptions.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An I/O failure tied to a path, so the message can name the file.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a directory, not a file: pass the path of a regular file")]
    IsADirectory { path: PathBuf },
    #[error("unknown hash algorithm {0:?}: use \"sha256\" or \"blake3\"")]
    UnknownAlgorithm(String),
    #[error("cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Worker(String),
    /// Bad arguments to batch assembly or pooling (shapes, budgets, modes).
    #[error("{0}")]
    Batch(String),
}

impl CoreError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
