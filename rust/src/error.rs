//! One error type for the whole core; `exceptions` decides what each one
//! becomes in Python and `py::errors` builds it, nowhere else.

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
    // ---- network and download errors (see download/, http/) ----
    /// An argument that cannot work (bad URL, bad sha256 string, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The server answered with an HTTP error status that is not retried
    /// (or kept answering with a retryable one until retries ran out).
    #[error("HTTP {status} for {url}: {hint}")]
    Http {
        status: u16,
        url: String,
        hint: String,
    },
    /// 401/403: not retried, the caller needs a token or access.
    #[error("HTTP {status} for {url}: access denied; {hint}")]
    AccessDenied {
        status: u16,
        url: String,
        hint: String,
    },
    /// Connection refused/reset, DNS, TLS, protocol errors, after retries.
    #[error("network error for {url}: {msg}")]
    Network { url: String, msg: String },
    /// No byte arrived within the stall timeout, after retries.
    #[error("timed out for {url}: {msg}")]
    Timeout { url: String, msg: String },
    /// The caller's `time_limit` for a whole transfer ran out; what was
    /// fetched stays for a resume, as after Ctrl-C.
    #[error("the transfer took longer than its time limit of {limit:.1} s; the bytes fetched so far are kept and the next attempt resumes")]
    TimeLimit { limit: f64 },
    /// A redirect we refuse to follow (https -> http, too many, bad scheme).
    #[error("refused redirect from {from} to {to}: {why}")]
    Redirect {
        from: String,
        to: String,
        why: String,
    },
    #[error("sha256 mismatch for {url} (saved to {path}): expected {expected}, got {actual}; the file was removed, retry the download or check the expected hash")]
    Checksum {
        url: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {url}: expected {expected} bytes, server has {actual}; nothing was saved")]
    Size {
        url: String,
        expected: u64,
        actual: u64,
    },
    /// The transfer kept failing; the bytes so far stay in a `.part` file.
    #[error("download of {url} incomplete ({have} of {total} bytes kept for resume): {msg}")]
    Incomplete {
        url: String,
        have: u64,
        total: u64,
        msg: String,
    },
    #[error("not enough disk space in {path}: {required} bytes needed, {available} available; free some space or choose another cache directory")]
    DiskSpace {
        path: PathBuf,
        required: u64,
        available: u64,
    },
    #[error("cannot write {path}: {msg}; check the directory's permissions or choose another cache directory")]
    NotWritable { path: PathBuf, msg: String },
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
