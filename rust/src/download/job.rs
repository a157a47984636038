//! The state shared by every task working on one file: the `.part` file and
//! what is on it, the schedule of ranges, the counters, checkpoints of the
//! resume state, and starting over from byte 0.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::{Response, Url};
use tokio::sync::{Notify, Semaphore};
use xxhash_rust::xxh3::Xxh3;

use super::hasher::{self, Written, UNKNOWN};
use super::io;
use super::options::{Options, DEFAULT_CHUNK, MIN_CHUNK};
use super::state::{Piece, State};
use crate::error::{CoreError, Result};
use crate::http::{self, Headers};

/// Write the resume state at least every this many new bytes.
const CHECKPOINT_BYTES: u64 = 8 << 20;
/// Never split a range into pieces smaller than this.
const MIN_STEAL: u64 = 2 << 20;

/// Shared by every task working on one file.
pub(super) struct Job {
    pub(super) url: Url,
    /// Where range requests go (after the first redirect chain).
    pub(super) target: Mutex<Url>,
    pub(super) headers: Headers,
    pub(super) opts: Options,
    pub(super) chunk: u64,
    pub(super) file: Arc<File>,
    pub(super) part: PathBuf,
    pub(super) state_path: PathBuf,
    pub(super) total: AtomicU64,
    pub(super) etag: Mutex<Option<String>>,
    pub(super) sched: Mutex<Sched>,
    pub(super) written: Mutex<Arc<Written>>,
    /// Bytes of the final file known good (what progress reports).
    pub(super) progress: Arc<AtomicI64>,
    pub(super) fetched: AtomicU64,
    pub(super) ranges: AtomicU64,
    pub(super) retries: AtomicU64,
    /// Set to stop every task (cancel, fatal error, restart).
    pub(super) stop: AtomicBool,
    pub(super) running: AtomicUsize,
    pub(super) target_conns: AtomicUsize,
    pub(super) max_running: AtomicUsize,
    pub(super) since_ckpt: AtomicU64,
    pub(super) ckpt: Notify,
    pub(super) limiter: Option<Arc<Semaphore>>,
    pub(super) bad_ranges: AtomicU64,
    pub(super) hash_rx: Mutex<Option<tokio::sync::oneshot::Receiver<std::io::Result<String>>>>,
}

#[derive(Default)]
pub(super) struct Sched {
    pub(super) pending: VecDeque<(u64, u64)>,
    pub(super) slots: Vec<Arc<Slot>>,
    pub(super) pieces: Vec<Piece>,
    /// Throughput (bytes/s) of recently completed ranges.
    pub(super) rates: VecDeque<f64>,
}

pub(super) struct Slot {
    pub(super) m: Mutex<SlotInner>,
    pub(super) abort: AtomicBool,
    pub(super) born: Instant,
}

pub(super) struct SlotInner {
    pub(super) start: u64,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) xxh: Xxh3,
}

impl Slot {
    pub(super) fn new(start: u64, end: u64) -> Arc<Slot> {
        Arc::new(Slot {
            m: Mutex::new(SlotInner {
                start,
                pos: start,
                end,
                xxh: Xxh3::new(),
            }),
            abort: AtomicBool::new(false),
            born: Instant::now(),
        })
    }
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a task or phase ended other than by success.
pub(super) enum Stop {
    Fatal(CoreError),
    /// Start over from byte 0: the server ignored Range, the resource
    /// changed, or its ranges cannot be trusted. `plain` carries a 200
    /// response whose body is the whole file, if we have one.
    Restart {
        why: String,
        plain: Option<Box<Response>>,
        no_ranges: bool,
    },
    Cancelled,
}

impl From<CoreError> for Stop {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Cancelled => Stop::Cancelled,
            e => Stop::Fatal(e),
        }
    }
}

pub(super) fn io_err(op: &'static str, path: &Path, e: std::io::Error) -> CoreError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => CoreError::NotWritable {
            path: path.to_path_buf(),
            msg: format!("{op}: {e}"),
        },
        _ if e.raw_os_error() == Some(28) || e.raw_os_error() == Some(27) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            CoreError::DiskSpace {
                path: dir.to_path_buf(),
                required: 0,
                available: fs4::available_space(dir).unwrap_or(0),
            }
        }
        _ => CoreError::io(op, path, e),
    }
}

pub(super) fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn strip_query(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

impl Job {
    /// A job for `url`, writing into `file` at `part` (its resume state
    /// beside it). `headers` carry the credentials, bound to the caller's
    /// origin.
    pub(super) fn new(
        url: Url,
        headers: Headers,
        opts: Options,
        file: File,
        part: PathBuf,
        progress: Arc<AtomicI64>,
        limiter: Option<Arc<Semaphore>>,
    ) -> Arc<Job> {
        let chunk = opts.chunk_size.unwrap_or(DEFAULT_CHUNK).max(MIN_CHUNK / 16);
        Arc::new(Job {
            target: Mutex::new(url.clone()),
            url,
            headers,
            chunk,
            file: Arc::new(file),
            state_path: with_suffix(&part, ".state"),
            part,
            total: AtomicU64::new(UNKNOWN),
            etag: Mutex::new(None),
            sched: Mutex::new(Sched::default()),
            written: Mutex::new(Written::new(UNKNOWN)),
            progress,
            fetched: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            target_conns: AtomicUsize::new(1),
            max_running: AtomicUsize::new(0),
            since_ckpt: AtomicU64::new(0),
            ckpt: Notify::new(),
            limiter,
            bad_ranges: AtomicU64::new(0),
            hash_rx: Mutex::new(None),
            opts,
        })
    }

    /// A crash loses at most the bytes since the last checkpoint: keep that
    /// under one range.
    pub(super) fn ckpt_bytes(&self) -> u64 {
        CHECKPOINT_BYTES.min(self.chunk / 2).max(64 << 10)
    }
    pub(super) fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
    pub(super) fn written(&self) -> Arc<Written> {
        Arc::clone(&lock(&self.written))
    }
    pub(super) fn redacted(&self) -> String {
        http::redact(self.url.as_str())
    }

    /// Writes `data` into `slot` at its position, up to its end. Returns
    /// true when the slot is complete.
    pub(super) fn write(&self, slot: &Slot, data: &[u8]) -> Result<bool> {
        let (start, n, done) = {
            let mut s = slot.lock();
            let n = ((s.end.saturating_sub(s.pos)) as usize).min(data.len());
            if n > 0 {
                io::write_all_at(&self.file, &data[..n], s.pos)
                    .map_err(|e| io_err("write", &self.part, e))?;
                s.xxh.update(&data[..n]);
                s.pos += n as u64;
            }
            (s.pos - n as u64, n as u64, s.pos >= s.end)
        };
        if n > 0 {
            self.written().add(start, start + n);
            self.progress.fetch_add(n as i64, Ordering::Relaxed);
            self.fetched.fetch_add(n, Ordering::Relaxed);
            if self.since_ckpt.fetch_add(n, Ordering::Relaxed) + n >= self.ckpt_bytes() {
                self.ckpt.notify_one();
            }
        }
        Ok(done)
    }

    /// Next range to fetch: a pending one, or the second half of the
    /// largest range still in flight (tail and slow-connection stealing).
    pub(super) fn take_work(&self) -> Option<Arc<Slot>> {
        let mut sc = lock(&self.sched);
        if let Some((s, e)) = sc.pending.pop_front() {
            let slot = Slot::new(s, e);
            sc.slots.push(Arc::clone(&slot));
            return Some(slot);
        }
        let mut best: Option<(u64, Arc<Slot>)> = None;
        for s in &sc.slots {
            let inner = s.lock();
            let rem = inner.end.saturating_sub(inner.pos);
            if rem >= 2 * MIN_STEAL && best.as_ref().map_or(true, |(r, _)| rem > *r) {
                best = Some((rem, Arc::clone(s)));
            }
        }
        let (_, victim) = best?;
        let (mid, old_end) = {
            let mut v = victim.lock();
            let rem = v.end.saturating_sub(v.pos);
            if rem < 2 * MIN_STEAL {
                return None;
            }
            let mid = (v.pos + rem / 2 + 0xffff) & !0xffff;
            let old = v.end;
            if mid >= old {
                return None;
            }
            v.end = mid;
            (mid, old)
        };
        let slot = Slot::new(mid, old_end);
        sc.slots.push(Arc::clone(&slot));
        Some(slot)
    }

    /// Moves a finished (or abandoned) slot's bytes to the committed pieces.
    pub(super) fn retire(&self, slot: &Arc<Slot>, requeue: bool) {
        let mut sc = lock(&self.sched);
        sc.slots.retain(|s| !Arc::ptr_eq(s, slot));
        let s = slot.lock();
        if !requeue {
            // Fast ranges finish in a few ms; floor the age so their rate is finite.
            let age = slot.born.elapsed().as_secs_f64().max(0.005);
            if sc.rates.len() >= 16 {
                sc.rates.pop_front();
            }
            sc.rates.push_back((s.pos - s.start) as f64 / age);
        }
        if s.pos > s.start {
            sc.pieces.push(Piece {
                start: s.start,
                end: s.pos,
                xxh3: s.xxh.digest(),
            });
        }
        if requeue && s.pos < s.end {
            sc.pending.push_front((s.pos, s.end));
        }
    }

    pub(super) fn state(&self) -> State {
        let sc = lock(&self.sched);
        let mut pieces = sc.pieces.clone();
        for s in &sc.slots {
            let s = s.lock();
            if s.pos > s.start {
                pieces.push(Piece {
                    start: s.start,
                    end: s.pos,
                    xxh3: s.xxh.digest(),
                });
            }
        }
        State {
            url: strip_query(&self.url),
            size: self.total(),
            etag: lock(&self.etag).clone(),
            sha256: self.opts.sha256.clone(),
            pieces,
        }
    }

    pub(super) fn checkpoint(&self) {
        if self.total() == UNKNOWN {
            return;
        }
        self.since_ckpt.store(0, Ordering::Relaxed);
        // Best effort: losing a checkpoint only costs a re-fetch later.
        let _ = self.state().write(&self.state_path);
    }
}

/// Checks free space, then reserves the file's full size.
pub(super) fn prepare_file(job: &Job, total: u64) -> std::result::Result<(), Stop> {
    let dir = job.part.parent().unwrap_or(Path::new("."));
    let have = job.file.metadata().map(|m| m.len()).unwrap_or(0);
    let need = total.saturating_sub(have);
    if need > 0 {
        if let Ok(avail) = fs4::available_space(dir) {
            if avail < need {
                return Err(Stop::Fatal(CoreError::DiskSpace {
                    path: dir.to_path_buf(),
                    required: need,
                    available: avail,
                }));
            }
        }
        // The file must span `total` bytes for positional writes; allocate
        // so that a full disk fails now rather than mid-download.
        if let Err(e) = fs4::fs_std::FileExt::allocate(&*job.file, total) {
            if e.raw_os_error() == Some(28) {
                let avail = fs4::available_space(dir).unwrap_or(0);
                return Err(Stop::Fatal(CoreError::DiskSpace {
                    path: dir.to_path_buf(),
                    required: need,
                    available: avail,
                }));
            }
            job.file
                .set_len(total)
                .map_err(|e| io_err("resize", &job.part, e))?;
        }
    }
    Ok(())
}

/// Forgets everything on disk: a restart from byte 0, with a new hasher.
pub(super) fn reset(job: &Job, total: u64) -> Result<()> {
    let old = job.written();
    old.stop();
    let kept = old.snapshot().covered();
    job.progress.fetch_sub(kept as i64, Ordering::Relaxed);
    let w = Written::new(total);
    *lock(&job.written) = Arc::clone(&w);
    *lock(&job.sched) = Sched::default();
    job.total.store(total, Ordering::Release);
    let _ = std::fs::remove_file(&job.state_path);
    start_hasher(job, w)
}

pub(super) fn start_hasher(job: &Job, w: Arc<Written>) -> Result<()> {
    let rx = hasher::spawn(Arc::clone(&job.file), w, job.opts.sync)
        .map_err(|e| CoreError::Worker(format!("cannot start the hasher thread: {e}")))?;
    *lock(&job.hash_rx) = Some(rx);
    Ok(())
}
