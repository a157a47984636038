//! Bindings for the HTTP client and the download engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::download::{self as engine, Item, Options, Report};
use crate::http::{self, Backoff, RequestOptions};

/// A fully read HTTP response. Header names are lower-case.
#[pyclass(name = "HttpResponse", module = "caxton_models._core", frozen)]
pub struct PyHttpResponse {
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    headers: HashMap<String, String>,
    body: Vec<u8>,
    #[pyo3(get)]
    url: String,
}

#[pymethods]
impl PyHttpResponse {
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    fn __repr__(&self) -> String {
        format!(
            "HttpResponse(status={}, url={:?}, {} bytes)",
            self.status,
            http::redact(&self.url),
            self.body.len()
        )
    }
}

/// What a download did.
#[pyclass(name = "DownloadResult", module = "caxton_models._core", frozen)]
pub struct PyDownloadResult {
    #[pyo3(get)]
    sha256: String,
    /// Size of the file.
    #[pyo3(get)]
    bytes: u64,
    /// Bytes received over the network by this call.
    #[pyo3(get)]
    fetched: u64,
    #[pyo3(get)]
    ranges: u64,
    #[pyo3(get)]
    retries: u64,
    #[pyo3(get)]
    resumed_bytes: u64,
    #[pyo3(get)]
    connections: usize,
    #[pyo3(get)]
    url: String,
}

#[pymethods]
impl PyDownloadResult {
    fn __repr__(&self) -> String {
        format!(
            "DownloadResult(sha256={:?}, bytes={}, fetched={}, ranges={}, retries={}, resumed_bytes={}, connections={})",
            self.sha256, self.bytes, self.fetched, self.ranges, self.retries, self.resumed_bytes, self.connections
        )
    }
}

impl From<Report> for PyDownloadResult {
    fn from(r: Report) -> Self {
        PyDownloadResult {
            sha256: r.sha256,
            bytes: r.bytes,
            fetched: r.fetched,
            ranges: r.ranges,
            retries: r.retries,
            resumed_bytes: r.resumed_bytes,
            connections: r.connections,
            url: r.url,
        }
    }
}

fn duration(secs: f64, what: &str) -> PyResult<Duration> {
    if secs.is_finite() && secs > 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a positive number of seconds"
        )))
    }
}

fn headers_vec(h: Option<HashMap<String, String>>) -> Vec<(String, String)> {
    h.map(|m| m.into_iter().collect()).unwrap_or_default()
}

/// Calls `progress(delta)` with the bytes added since the last call.
fn progress_tick(
    counter: Arc<AtomicI64>,
    callback: Option<Py<PyAny>>,
) -> impl FnMut(Python<'_>) -> PyResult<()> {
    let mut last = 0i64;
    move |py| {
        if let Some(cb) = &callback {
            let now = counter.load(Ordering::Relaxed);
            if now != last {
                cb.call1(py, (now - last,))?;
                last = now;
            }
        }
        Ok(())
    }
}

/// One HTTP request with retries on 408/429/5xx and connection errors.
/// Other statuses are returned, not raised. `Authorization` goes only to the
/// host of `url`; https -> http redirects are refused.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (method, url, *, headers=None, timeout=30.0, retries=3, follow_redirects=true, max_bytes=67_108_864))]
fn http_request(
    py: Python<'_>,
    method: String,
    url: String,
    headers: Option<HashMap<String, String>>,
    timeout: f64,
    retries: u32,
    follow_redirects: bool,
    max_bytes: u64,
) -> PyResult<PyHttpResponse> {
    let opts = RequestOptions {
        headers: headers_vec(headers),
        timeout: duration(timeout, "timeout")?,
        retries,
        follow_redirects,
        max_bytes,
        backoff: Backoff::default(),
    };
    let r = super::run_cancellable(
        py,
        move |cancel| http::request(&method, &url, &opts, cancel),
        |_| Ok(()),
    )?;
    Ok(PyHttpResponse {
        status: r.status,
        headers: r.headers.into_iter().collect(),
        body: r.body,
        url: r.url,
    })
}

#[allow(clippy::too_many_arguments)]
fn options(
    size: Option<u64>,
    sha256: Option<String>,
    headers: Option<HashMap<String, String>>,
    connections: Option<usize>,
    chunk_size: Option<u64>,
    timeout: f64,
    retries: u32,
) -> PyResult<Options> {
    if connections == Some(0) {
        return Err(PyValueError::new_err("connections must be at least 1"));
    }
    Ok(Options {
        size,
        sha256,
        headers: headers_vec(headers),
        connections,
        chunk_size,
        timeout: duration(timeout, "timeout")?,
        retries,
        backoff: Backoff::default(),
    })
}

/// Downloads `url` to `dest` (atomically, after size and SHA-256 match),
/// over several connections, resuming an interrupted earlier attempt.
/// `progress(delta_bytes)` is called on this thread up to 10 times a second.
#[pyfunction]
#[pyo3(signature = (url, dest, *, size=None, sha256=None, headers=None, connections=None, chunk_size=None, timeout=30.0, retries=8, progress=None))]
#[allow(clippy::too_many_arguments)]
fn download(
    py: Python<'_>,
    url: String,
    dest: PathBuf,
    size: Option<u64>,
    sha256: Option<String>,
    headers: Option<HashMap<String, String>>,
    connections: Option<usize>,
    chunk_size: Option<u64>,
    timeout: f64,
    retries: u32,
    progress: Option<Py<PyAny>>,
) -> PyResult<PyDownloadResult> {
    let opts = options(
        size,
        sha256,
        headers,
        connections,
        chunk_size,
        timeout,
        retries,
    )?;
    let counter = Arc::new(AtomicI64::new(0));
    let c2 = Arc::clone(&counter);
    let report = super::run_cancellable(
        py,
        move |cancel| engine::download(&url, &dest, opts, c2, cancel),
        progress_tick(counter, progress),
    )?;
    Ok(report.into())
}

fn item_from_dict(d: &Bound<'_, PyDict>) -> PyResult<Item> {
    let url: String = d
        .get_item("url")?
        .ok_or_else(|| PyValueError::new_err("each item needs a 'url'"))?
        .extract()?;
    let dest: PathBuf = d
        .get_item("dest")?
        .ok_or_else(|| PyValueError::new_err("each item needs a 'dest'"))?
        .extract()?;
    let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        Ok(d.get_item(k)?.filter(|v| !v.is_none()))
    };
    Ok(Item {
        url,
        dest,
        size: get("size")?.map(|v| v.extract()).transpose()?,
        sha256: get("sha256")?.map(|v| v.extract()).transpose()?,
        headers: headers_vec(get("headers")?.map(|v| v.extract()).transpose()?),
    })
}

/// Downloads several files, `max_concurrent` at a time, sharing one budget
/// of `connections` connections. Results are in the items' order.
#[pyfunction]
#[pyo3(signature = (items, *, max_concurrent=3, connections=None, headers=None, chunk_size=None, timeout=30.0, retries=8, progress=None))]
#[allow(clippy::too_many_arguments)]
fn download_many(
    py: Python<'_>,
    items: Vec<Bound<'_, PyDict>>,
    max_concurrent: usize,
    connections: Option<usize>,
    headers: Option<HashMap<String, String>>,
    chunk_size: Option<u64>,
    timeout: f64,
    retries: u32,
    progress: Option<Py<PyAny>>,
) -> PyResult<Vec<PyDownloadResult>> {
    let items = items
        .iter()
        .map(item_from_dict)
        .collect::<PyResult<Vec<_>>>()?;
    if max_concurrent == 0 {
        return Err(PyValueError::new_err("max_concurrent must be at least 1"));
    }
    let opts = options(
        None,
        None,
        headers,
        connections,
        chunk_size,
        timeout,
        retries,
    )?;
    let counter = Arc::new(AtomicI64::new(0));
    let c2 = Arc::clone(&counter);
    let reports = super::run_cancellable(
        py,
        move |cancel| engine::download_many(items, max_concurrent, opts, c2, cancel),
        progress_tick(counter, progress),
    )?;
    Ok(reports.into_iter().map(Into::into).collect())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHttpResponse>()?;
    m.add_class::<PyDownloadResult>()?;
    m.add_function(wrap_pyfunction!(http_request, m)?)?;
    m.add_function(wrap_pyfunction!(download, m)?)?;
    m.add_function(wrap_pyfunction!(download_many, m)?)?;
    Ok(())
}
