//! Bindings for the HTTP client and the download engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::download::{self as engine, Item, Options, Report};
use crate::error::CoreError;
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

/// The first retry's wait, in seconds (0 retries at once).
fn backoff(retry_delay: f64) -> PyResult<Backoff> {
    if retry_delay.is_finite() && (0.0..=86_400.0).contains(&retry_delay) {
        Ok(Backoff::with_base(Duration::from_secs_f64(retry_delay)))
    } else {
        Err(PyValueError::new_err(
            "retry_delay must be a number of seconds from 0 to 86400",
        ))
    }
}

/// When a call with `time_limit` must give up (None: never).
fn deadline(time_limit: Option<f64>) -> PyResult<Option<Instant>> {
    time_limit
        .map(|t| duration(t, "time_limit").map(|d| Instant::now() + d))
        .transpose()
}

/// The per-tick work of a transfer: report progress, and past the deadline
/// fail with NetworkTimeout. `run_cancellable` then sets the cancel flag and
/// waits for the engine to stop, which keeps what it fetched for a resume,
/// exactly as after Ctrl-C.
fn transfer_tick(
    counter: Arc<AtomicI64>,
    callback: Option<Py<PyAny>>,
    deadline: Option<(Instant, f64)>,
) -> impl FnMut(Python<'_>) -> PyResult<()> {
    let mut progress = progress_tick(counter, callback);
    move |py| {
        progress(py)?;
        match deadline {
            Some((end, limit)) if Instant::now() >= end => {
                Err(CoreError::TimeLimit { limit }.into())
            }
            _ => Ok(()),
        }
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
#[pyo3(signature = (method, url, *, headers=None, timeout=30.0, retries=3, follow_redirects=true, max_bytes=67_108_864, retry_delay=0.5))]
fn http_request(
    py: Python<'_>,
    method: String,
    url: String,
    headers: Option<HashMap<String, String>>,
    timeout: f64,
    retries: u32,
    follow_redirects: bool,
    max_bytes: u64,
    retry_delay: f64,
) -> PyResult<PyHttpResponse> {
    let opts = RequestOptions {
        headers: headers_vec(headers),
        timeout: duration(timeout, "timeout")?,
        retries,
        follow_redirects,
        max_bytes,
        backoff: backoff(retry_delay)?,
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

/// Builds the network runtime and the shared HTTP client now, without a
/// request: loading the TLS roots takes tens of milliseconds, which a server
/// (the pull-through mirror) pays at start, not in its first client's wait.
#[pyfunction]
fn warm_up(py: Python<'_>) -> PyResult<()> {
    super::run_cancellable(
        py,
        |_| {
            http::runtime()?;
            http::client()?;
            Ok(())
        },
        |_| Ok(()),
    )
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
    retry_delay: f64,
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
        backoff: backoff(retry_delay)?,
        sync: true,
    })
}

/// Downloads `url` to `dest` (atomically, after size and SHA-256 match),
/// over several connections, resuming an interrupted earlier attempt.
/// `progress(delta_bytes)` is called on this thread up to 10 times a second.
/// `timeout` bounds a stall; `time_limit` (seconds) the whole call, after
/// which it raises NetworkTimeout and keeps the bytes for a resume.
/// `retry_delay` is the first retry's wait, doubling after each failure.
#[pyfunction]
#[pyo3(signature = (url, dest, *, size=None, sha256=None, headers=None, connections=None, chunk_size=None, timeout=30.0, retries=8, progress=None, retry_delay=0.5, time_limit=None))]
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
    retry_delay: f64,
    time_limit: Option<f64>,
) -> PyResult<PyDownloadResult> {
    let opts = options(
        size,
        sha256,
        headers,
        connections,
        chunk_size,
        timeout,
        retries,
        retry_delay,
    )?;
    let end = deadline(time_limit)?.zip(time_limit);
    let counter = Arc::new(AtomicI64::new(0));
    let c2 = Arc::clone(&counter);
    let report = super::run_cancellable(
        py,
        move |cancel| engine::download(&url, &dest, opts, c2, cancel),
        transfer_tick(counter, progress, end),
    )?;
    Ok(report.into())
}

/// The keys a `download_many` item may have (`_core.pyi`'s `DownloadItem`).
const ITEM_KEYS: [&str; 5] = ["url", "dest", "size", "sha256", "headers"];

/// An item as the engine takes it. Unknown keys are refused: a misspelt
/// "sha256" would otherwise download with no hash check at all.
fn item_from_dict(d: &Bound<'_, PyDict>) -> PyResult<Item> {
    for key in d.keys() {
        let name: String = key.str()?.to_string();
        if !key.is_instance_of::<pyo3::types::PyString>() || !ITEM_KEYS.contains(&name.as_str()) {
            return Err(CoreError::InvalidArgument(format!(
                "download_many item has an unknown key {name:?}; the keys are {}",
                ITEM_KEYS.join(", ")
            ))
            .into());
        }
    }
    let required = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(k)?.filter(|v| !v.is_none()).ok_or_else(|| {
            CoreError::InvalidArgument(format!("each download_many item needs a {k:?}")).into()
        })
    };
    let url: String = required("url")?.extract()?;
    let dest: PathBuf = required("dest")?.extract()?;
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
/// `time_limit` bounds the whole transfer, as for `download`.
#[pyfunction]
#[pyo3(signature = (items, *, max_concurrent=3, connections=None, headers=None, chunk_size=None, timeout=30.0, retries=8, progress=None, retry_delay=0.5, time_limit=None, sync=true))]
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
    retry_delay: f64,
    time_limit: Option<f64>,
    sync: bool,
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
        retry_delay,
    )?;
    // sync=False: files are not fsynced before their rename; the caller syncs them.
    let opts = Options { sync, ..opts };
    let end = deadline(time_limit)?.zip(time_limit);
    let counter = Arc::new(AtomicI64::new(0));
    let c2 = Arc::clone(&counter);
    let reports = super::run_cancellable(
        py,
        move |cancel| engine::download_many(items, max_concurrent, opts, c2, cancel),
        transfer_tick(counter, progress, end),
    )?;
    Ok(reports.into_iter().map(Into::into).collect())
}

/// Whether a living process holds a lock on `path`: True, False (nobody, or
/// nothing there), None (this file system cannot tell). The one liveness test
/// of the core and the Python store (`crate::download::lock_held`).
#[pyfunction]
fn lock_held(py: Python<'_>, path: PathBuf) -> Option<bool> {
    py.detach(|| engine::lock_held(&path))
}

/// `DownloadItem`, the TypedDict `_core.pyi` declares, so that callers and
/// type checkers name the same object; `item_from_dict` is what enforces it.
fn download_item_type<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    let typing = py.import("typing")?;
    let fields = PyDict::new(py);
    let builtins = py.import("builtins")?;
    for key in ITEM_KEYS {
        fields.set_item(key, builtins.getattr("object")?)?;
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("total", false)?;
    let td = typing
        .getattr("TypedDict")?
        .call(("DownloadItem", fields), Some(&kwargs))?;
    td.setattr("__module__", "caxton_models._core")?;
    Ok(td)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The engine's defaults, one home: Python reads these (config.py) instead
    // of restating them. The signatures above must spell theirs as literals
    // (PyO3 renders a path default as `...`); tests/test_config.py checks them
    // against these.
    m.add("DEFAULT_CHUNK_BYTES", engine::DEFAULT_CHUNK)?;
    m.add("MAX_CONNECTIONS", engine::MAX_CONNECTIONS)?;
    m.add("DEFAULT_RETRIES", engine::DEFAULT_RETRIES)?;
    m.add(
        "DEFAULT_TIMEOUT_SECS",
        engine::DEFAULT_TIMEOUT.as_secs_f64(),
    )?;
    m.add("DEFAULT_RETRY_DELAY_MS", http::DEFAULT_RETRY_DELAY_MS)?;
    m.add("DownloadItem", download_item_type(m.py())?)?;
    m.add_class::<PyHttpResponse>()?;
    m.add_class::<PyDownloadResult>()?;
    m.add_function(wrap_pyfunction!(http_request, m)?)?;
    m.add_function(wrap_pyfunction!(warm_up, m)?)?;
    m.add_function(wrap_pyfunction!(download, m)?)?;
    m.add_function(wrap_pyfunction!(download_many, m)?)?;
    m.add_function(wrap_pyfunction!(lock_held, m)?)?;
    Ok(())
}
