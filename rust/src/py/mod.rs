//! PyO3 bindings: convert arguments, release the GIL, map errors. No logic.

mod batch;
mod bm25;
mod download;
mod errors;
mod hash;
mod onnx;
mod safetensors;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::error::CoreError;

/// How often a waiting caller wakes to check for Ctrl-C (and, for
/// downloads, to report progress).
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Runs `work` on a worker thread with the GIL released, waking every
/// `TICK` to check signals. Ctrl-C sets the cancel flag, waits for the worker
/// to stop (it checks the flag between blocks) and re-raises the
/// KeyboardInterrupt. `on_tick` runs on the caller's thread with the GIL held.
pub(crate) fn run_cancellable<T, F>(
    py: Python<'_>,
    work: F,
    mut on_tick: impl FnMut(Python<'_>) -> PyResult<()>,
) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce(&AtomicBool) -> Result<T, CoreError> + Send + 'static,
{
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel();
    let worker_cancel = Arc::clone(&cancel);
    let handle = std::thread::Builder::new()
        .name("caxton-core".into())
        .spawn(move || {
            // A send error only means the caller is gone; nothing to report to.
            let _ = tx.send(work(&worker_cancel));
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start worker thread: {e}")))?;
    let mut pending: Option<PyErr> = None;
    let result = loop {
        // Receiver is !Sync, so it moves into the detached closure and back.
        let (rx_back, r) = py.detach(move || {
            let r = rx.recv_timeout(TICK);
            (rx, r)
        });
        rx = rx_back;
        if pending.is_none() {
            let check = py.check_signals().and_then(|_| on_tick(py));
            if let Err(e) = check {
                cancel.store(true, Ordering::Relaxed);
                pending = Some(e);
            }
        }
        match r {
            Ok(res) => break res,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(CoreError::Worker("worker thread panicked".into()))
            }
        }
    };
    let _ = py.detach(|| handle.join());
    match (pending, result) {
        (Some(e), _) => Err(e),
        (None, r) => r.map_err(PyErr::from),
    }
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    hash::register(m)?;
    download::register(m)?;
    batch::register(m)?;
    safetensors::register(m)?;
    onnx::register(m)?;
    bm25::register(m)?;
    errors::register(m)?;
    Ok(())
}
