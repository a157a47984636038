//! One file from start to end: the checks before any request, reusing a
//! file another process just finished, resuming from a claimed temp,
//! running the range and plain phases (restarting from 0 when the server
//! forces it), verifying, publishing by rename, and cleaning up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use reqwest::Response;

use super::hasher::{Written, UNKNOWN};
use super::job::{io_err, lock, reset, start_hasher, Job, Stop};
use super::options::{Options, Report};
use super::plain::plain_phase;
use super::ranged::ranges_phase;
use super::state::{self, State};
use crate::error::{CoreError, Result};
use crate::http;

/// Refuses a directory as `dest`, creates its parent, and checks that the
/// expected size fits, before any request.
pub(super) fn prepare_dir(dest: &Path, opts: &Options) -> Result<()> {
    if dest.is_dir() {
        return Err(CoreError::IsADirectory {
            path: dest.to_path_buf(),
        });
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_err("create directory", &dir, e))?;
    if let Some(size) = opts.size {
        let avail = fs4::available_space(&dir).unwrap_or(u64::MAX);
        if avail < size {
            return Err(CoreError::DiskSpace {
                path: dir,
                required: size,
                available: avail,
            });
        }
    }
    Ok(())
}

/// After waiting for another process's lock: the file it may have just
/// produced, if its size and SHA-256 are the ones expected.
pub(super) async fn done_by_other(
    dest: &Path,
    opts: &Options,
    url: &str,
    progress: &AtomicI64,
) -> Result<Option<Report>> {
    let (Some(sha), Ok(meta)) = (&opts.sha256, std::fs::metadata(dest)) else {
        return Ok(None);
    };
    if !opts.size.map_or(true, |s| s == meta.len()) {
        return Ok(None);
    }
    let d = dest.to_path_buf();
    let got = tokio::task::spawn_blocking(move || crate::hash::sha256_file(&d, None))
        .await
        .map_err(|e| CoreError::Worker(e.to_string()))??;
    if &got != sha {
        return Ok(None);
    }
    progress.fetch_add(meta.len() as i64, Ordering::Relaxed);
    Ok(Some(Report {
        sha256: got,
        bytes: meta.len(),
        url: http::redact(url),
        ..Report::default()
    }))
}

/// Resume: keeps the pieces of a claimed temp whose bytes still match their
/// checksums. Returns the bytes kept.
pub(super) async fn resume(job: &Job, st: State) -> Result<u64> {
    if !job.opts.size.map_or(true, |s| s == st.size) {
        return Ok(0);
    }
    let f = Arc::clone(&job.file);
    let len = job.file.metadata().map(|m| m.len()).unwrap_or(0);
    let pieces = st.pieces.clone();
    let good = tokio::task::spawn_blocking(move || state::verify_pieces(&f, &pieces, len))
        .await
        .map_err(|e| CoreError::Worker(e.to_string()))?;
    let w = Written::new(st.size);
    for p in &good {
        w.add(p.start, p.end);
    }
    let resumed = w.snapshot().covered();
    job.total.store(st.size, Ordering::Release);
    *lock(&job.etag) = st.etag.clone();
    *lock(&job.written) = w;
    lock(&job.sched).pieces = good;
    job.progress.fetch_add(resumed as i64, Ordering::Relaxed);
    Ok(resumed)
}

/// Runs the job to a published file, or leaves a resumable temp (or none).
pub(super) async fn run_and_publish(
    job: &Arc<Job>,
    dest: &Path,
    resumed: u64,
    cancel: &AtomicBool,
) -> Result<Report> {
    let result = run(job, cancel).await;
    job.stop.store(true, Ordering::Relaxed);
    let outcome = match result {
        Ok(digest) => finish(job, dest, digest, resumed),
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(_) => {}
        Err(CoreError::Checksum { .. }) | Err(CoreError::Size { .. }) => {
            let _ = std::fs::remove_file(&job.part);
            let _ = std::fs::remove_file(&job.state_path);
        }
        Err(_) => {
            // Keep what we have for a resume, unless it is nothing.
            job.written().stop();
            if job.total() == UNKNOWN || job.state().pieces.is_empty() {
                let _ = std::fs::remove_file(&job.part);
                let _ = std::fs::remove_file(&job.state_path);
            } else {
                job.checkpoint();
            }
        }
    }
    outcome
}

pub(super) async fn run(job: &Arc<Job>, cancel: &AtomicBool) -> Result<String> {
    let mut restarts = 0;
    // Some(_) = plain mode.
    let mut mode: Option<Option<Response>> = None;
    // Start hashing whatever is already on disk (resume).
    start_hasher(job, job.written())?;
    loop {
        let r = match mode.take() {
            None => ranges_phase(job, cancel).await,
            Some(pre) => plain_phase(job, pre, cancel).await,
        };
        match r {
            Ok(()) => break,
            Err(Stop::Cancelled) => return Err(CoreError::Cancelled),
            Err(Stop::Fatal(e)) => return Err(e),
            Err(Stop::Restart {
                why,
                plain,
                no_ranges,
            }) => {
                restarts += 1;
                if restarts > 4 {
                    return Err(CoreError::Incomplete {
                        url: job.redacted(),
                        have: 0,
                        total: job.total(),
                        msg: format!("gave up after {restarts} restarts: {why}"),
                    });
                }
                job.stop.store(true, Ordering::Relaxed);
                reset(job, UNKNOWN)?;
                *lock(&job.etag) = None;
                job.stop.store(false, Ordering::Relaxed);
                if no_ranges || restarts >= 3 {
                    mode = Some(plain.map(|b| *b));
                }
            }
        }
    }
    // All bytes are on disk; the hasher finishes the tail of the prefix.
    job.written().set_total(job.total());
    let rx = lock(&job.hash_rx).take();
    let Some(rx) = rx else {
        return Err(CoreError::Worker("no hasher running".into()));
    };
    let digest = match rx.await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(io_err("read back", &job.part, e)),
        Err(_) => {
            return Err(CoreError::Worker(
                "hasher thread ended without a result".into(),
            ))
        }
    };
    Ok(digest)
}

/// Makes a rename in `path`'s directory durable (a no-op where directories
/// cannot be opened, as on Windows, whose renames are journaled).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Checks the digest, then publishes the file by an atomic rename.
fn finish(job: &Job, dest: &Path, digest: String, resumed: u64) -> Result<Report> {
    let total = job.total();
    if let Some(expected) = &job.opts.sha256 {
        if expected != &digest {
            return Err(CoreError::Checksum {
                url: job.redacted(),
                path: dest.to_path_buf(),
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    if let Some(expected) = job.opts.size {
        if expected != total {
            return Err(CoreError::Size {
                url: job.redacted(),
                expected,
                actual: total,
            });
        }
    }
    // Durable before it is visible: the bytes reach the disk before the
    // rename, and the rename before we report success (and the caller records
    // the file as fetched). Otherwise a power cut can leave `dest` at its full
    // size holding zeros, and a record saying it was verified.
    if job.opts.sync {
        job.file
            .sync_all()
            .map_err(|e| io_err("sync", &job.part, e))?;
    }
    std::fs::rename(&job.part, dest).map_err(|e| io_err("rename into place", dest, e))?;
    if job.opts.sync {
        sync_parent(dest);
    }
    let _ = std::fs::remove_file(&job.state_path);
    Ok(Report {
        sha256: digest,
        bytes: total,
        fetched: job.fetched.load(Ordering::Relaxed),
        ranges: job.ranges.load(Ordering::Relaxed),
        retries: job.retries.load(Ordering::Relaxed),
        resumed_bytes: resumed,
        connections: job.max_running.load(Ordering::Relaxed).max(1),
        url: http::redact(lock(&job.target).as_str()),
    })
}
