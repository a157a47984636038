//! SHA-256 of the file as it is written: a thread follows the contiguous
//! prefix of bytes on disk and reads them back (from the page cache, so the
//! data is still hot) with one reused buffer. No second pass after the last
//! byte arrives, and no per-chunk allocation.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::io::read_exact_at;
use super::ranges::RangeSet;

pub const UNKNOWN: u64 = u64::MAX;

/// What is on disk for one attempt (a restart from 0 makes a new one).
pub struct Written {
    set: Mutex<RangeSet>,
    prefix: AtomicU64,
    total: AtomicU64,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Written {
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(Written {
            set: Mutex::new(RangeSet::new()),
            prefix: AtomicU64::new(0),
            total: AtomicU64::new(total),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        })
    }

    /// Records `[start, end)` as written and wakes the hasher if the prefix grew.
    pub fn add(&self, start: u64, end: u64) {
        let prefix = {
            let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
            s.add(start, end);
            s.prefix_end()
        };
        if prefix > self.prefix.swap(prefix, Ordering::AcqRel) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    pub fn snapshot(&self) -> RangeSet {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// Starts the hasher thread; the receiver yields the hex digest once the
/// prefix reaches the total (or None if stopped or on a read error).
pub fn spawn(
    file: Arc<File>,
    w: Arc<Written>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<String>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let w2 = Arc::clone(&w);
    let handle = std::thread::Builder::new()
        .name("caxton-sha256".into())
        .spawn(move || {
            let _ = tx.send(run(&file, &w2));
        })?;
    let _ = w.thread.set(handle.thread().clone());
    // A prefix that grew before the handle was registered must not be missed.
    handle.thread().unpark();
    Ok(rx)
}

fn run(file: &File, w: &Written) -> std::io::Result<String> {
    const BUF: usize = 1 << 20;
    let mut buf = vec![0u8; BUF];
    let mut h = Sha256::new();
    let mut at = 0u64;
    loop {
        if w.stop.load(Ordering::Acquire) {
            return Err(std::io::Error::other("hashing stopped"));
        }
        let prefix = w.prefix.load(Ordering::Acquire);
        if at < prefix {
            let n = ((prefix - at) as usize).min(BUF);
            read_exact_at(file, &mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
            continue;
        }
        if w.total.load(Ordering::Acquire) == at {
            return Ok(hex::encode(h.finalize()));
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}
