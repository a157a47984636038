use std::path::PathBuf;

use pyo3::prelude::*;

use crate::hash::{self, Algorithm};

/// SHA-256 of a file as lowercase hex. Streams with bounded memory and
/// releases the GIL; uses the CPU's SHA extensions where present.
#[pyfunction]
fn sha256_file(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    super::run_cancellable(
        py,
        move |cancel| hash::sha256_file(&path, Some(cancel)),
        |_| Ok(()),
    )
}

/// Files smaller than this hash in a few milliseconds on all cores, less
/// than the ~0.1-0.2 ms a watcher thread for Ctrl-C adds to every call
/// would be worth (the `blake3` package answers a 1 MiB file in ~0.4 ms).
const BLAKE3_CANCELLABLE_MIN: u64 = 64 << 20;

/// BLAKE3 of a file as lowercase hex, hashed on all cores. Releases the GIL;
/// Ctrl-C stops a large file between blocks.
#[pyfunction]
fn blake3_file(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    // A failed stat goes the long way, where open() reports it with the path.
    let small = std::fs::metadata(&path).is_ok_and(|m| m.len() < BLAKE3_CANCELLABLE_MIN);
    if small {
        return Ok(py.detach(move || hash::blake3_file(&path, None))?);
    }
    super::run_cancellable(
        py,
        move |cancel| hash::blake3_file(&path, Some(cancel)),
        |_| Ok(()),
    )
}

/// Git blob id (SHA-1 of `"blob <size>\0"` + bytes) of a file, as the Hub
/// reports it for small files. Releases the GIL.
#[pyfunction]
fn git_blob_sha1_file(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    super::run_cancellable(
        py,
        move |cancel| hash::git_blob_sha1_file(&path, Some(cancel)),
        |_| Ok(()),
    )
}

/// Hashes many files in parallel; returns hex digests in input order.
#[pyfunction]
#[pyo3(signature = (paths, algorithm = "sha256"))]
fn hash_files(py: Python<'_>, paths: Vec<PathBuf>, algorithm: &str) -> PyResult<Vec<String>> {
    let algorithm = Algorithm::parse(algorithm)?;
    super::run_cancellable(
        py,
        move |cancel| hash::hash_files(&paths, algorithm, Some(cancel)),
        |_| Ok(()),
    )
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sha256_file, m)?)?;
    m.add_function(wrap_pyfunction!(blake3_file, m)?)?;
    m.add_function(wrap_pyfunction!(hash_files, m)?)?;
    m.add_function(wrap_pyfunction!(git_blob_sha1_file, m)?)?;
    Ok(())
}
