//! Several files at once: `max_concurrent` downloads sharing one budget of
//! connections, results in the items' order, the first failure stopping
//! the others.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::download_async;
use super::options::{Item, Options, Report, MAX_CONNECTIONS};
use super::request::TICK;
use crate::error::{CoreError, Result};
use crate::http;

type Tasks = JoinSet<Result<(usize, Report)>>;

/// Downloads several files, `max_concurrent` at a time, all sharing one
/// budget of `opts.connections` (default MAX_CONNECTIONS) connections.
/// Results come back in the items' order; the first failure stops the
/// others and is returned.
pub fn download_many(
    items: Vec<Item>,
    max_concurrent: usize,
    opts: Options,
    progress: Arc<AtomicI64>,
    cancel: &AtomicBool,
) -> Result<Vec<Report>> {
    let rt = http::runtime()?;
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let set = spawn_all(items, max_concurrent, &opts, &progress, &stop);
        collect(set, &stop, cancel).await
    })
}

/// One task per item; each waits for a file slot, then downloads with the
/// item's own headers (or the shared ones) within the shared budget.
fn spawn_all(
    items: Vec<Item>,
    max_concurrent: usize,
    opts: &Options,
    progress: &Arc<AtomicI64>,
    stop: &Arc<AtomicBool>,
) -> Tasks {
    let budget = Arc::new(Semaphore::new(
        opts.connections.unwrap_or(MAX_CONNECTIONS).max(1),
    ));
    let files = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut o = opts.clone();
        o.size = item.size;
        o.sha256 = item.sha256.clone();
        if !item.headers.is_empty() {
            o.headers = item.headers.clone();
        }
        // Each file adapts within the shared budget.
        o.connections = None;
        let (budget, files, stop, progress) = (
            Arc::clone(&budget),
            Arc::clone(&files),
            Arc::clone(stop),
            Arc::clone(progress),
        );
        set.spawn(async move {
            let _slot = files
                .acquire_owned()
                .await
                .map_err(|_| CoreError::Cancelled)?;
            if stop.load(Ordering::Relaxed) {
                return Err(CoreError::Cancelled);
            }
            // The item's own URL fixes the origin its credentials go to.
            let r = download_async(&item.url, &item.dest, o, progress, &stop, Some(budget)).await;
            if r.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            r.map(|rep| (i, rep))
        });
    }
    set
}

/// Waits for every task; on a failure or `cancel`, stops the others.
async fn collect(mut set: Tasks, stop: &AtomicBool, cancel: &AtomicBool) -> Result<Vec<Report>> {
    let mut out: Vec<Option<Report>> = Vec::new();
    let mut first_err: Option<CoreError> = None;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(Ok(Ok((i, rep)))) => {
                    if out.len() <= i {
                        out.resize(i + 1, None);
                    }
                    out[i] = Some(rep);
                }
                Some(Ok(Err(e))) => {
                    stop.store(true, Ordering::Relaxed);
                    if first_err.is_none() || matches!(first_err, Some(CoreError::Cancelled)) {
                        first_err = Some(e);
                    }
                }
                Some(Err(je)) => {
                    stop.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(CoreError::Worker(format!("download task failed: {je}")));
                }
            },
            _ = tokio::time::sleep(TICK) => {}
        }
        if cancel.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            first_err = Some(CoreError::Cancelled);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(out.into_iter().map(|r| r.unwrap_or_default()).collect())
}
