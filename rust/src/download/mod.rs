//! The download engine: parallel Range requests into a preallocated file,
//! SHA-256 while downloading, resume across processes, typed errors.
//!
//! Layout beside `dest`:
//! - `<dest>.lock`: advisory lock, so two processes do not fetch the same
//!   file twice (bandwidth only; correctness never depends on it);
//! - `<dest>.<token>.part` and `<dest>.<token>.part.state`: this process's
//!   unique temp file and its resume state (see `state.rs`). A later call
//!   claims a dead process's temp by renaming it to its own unique name.
//!   `dest` appears only by an atomic rename, after size and SHA-256 match.

mod hasher;
mod io;
pub mod ranges;
mod state;
#[cfg(test)]
pub(crate) mod testserver;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use tokio::sync::{Notify, Semaphore};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{CoreError, Result};
use crate::http::{self, Backoff, Failure, Headers};
use hasher::{Written, UNKNOWN};
use state::{Piece, State};

/// 8 MiB: small enough that 16 connections share a 1 GiB file with a short
/// tail, and measured faster than 16 MiB against per-connection caps.
pub const DEFAULT_CHUNK: u64 = 8 << 20;
pub const MIN_CHUNK: u64 = 1 << 20;
/// Upper bound for the adaptive connection count.
pub const MAX_CONNECTIONS: usize = 16;
/// Write the resume state at least every this many new bytes.
const CHECKPOINT_BYTES: u64 = 8 << 20;
/// Never split a range into pieces smaller than this.
const MIN_STEAL: u64 = 2 << 20;
const TICK: Duration = Duration::from_millis(50);
/// An attempt that fetched at least this much gives the range a fresh retry budget.
const PROGRESS_RESETS_RETRIES: u64 = 256 << 10;

#[derive(Clone, Debug)]
pub struct Options {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Fixed number of connections; None = adaptive (1..=MAX_CONNECTIONS).
    pub connections: Option<usize>,
    pub chunk_size: Option<u64>,
    /// Stall timeout: no byte for this long fails the attempt.
    pub timeout: Duration,
    /// Consecutive failed attempts (without progress) before giving up.
    pub retries: u32,
    pub backoff: Backoff,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            size: None,
            sha256: None,
            headers: Vec::new(),
            connections: None,
            chunk_size: None,
            timeout: Duration::from_secs(30),
            retries: 8,
            backoff: Backoff::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub sha256: String,
    /// Size of the file.
    pub bytes: u64,
    /// Bytes received over the network by this call.
    pub fetched: u64,
    /// Range requests issued (1 for a plain GET).
    pub ranges: u64,
    pub retries: u64,
    /// Bytes kept from an earlier, interrupted attempt.
    pub resumed_bytes: u64,
    /// Most connections used at once.
    pub connections: usize,
    /// Final URL after redirects (redacted).
    pub url: String,
}

/// Shared by every task working on one file.
struct Job {
    url: Url,
    /// Where range requests go (after the first redirect chain).
    target: Mutex<Url>,
    headers: Headers,
    opts: Options,
    chunk: u64,
    file: Arc<File>,
    part: PathBuf,
    state_path: PathBuf,
    total: AtomicU64,
    etag: Mutex<Option<String>>,
    sched: Mutex<Sched>,
    written: Mutex<Arc<Written>>,
    /// Bytes of the final file known good (what progress reports).
    progress: Arc<AtomicI64>,
    fetched: AtomicU64,
    ranges: AtomicU64,
    retries: AtomicU64,
    /// Set to stop every task (cancel, fatal error, restart).
    stop: AtomicBool,
    running: AtomicUsize,
    target_conns: AtomicUsize,
    max_running: AtomicUsize,
    since_ckpt: AtomicU64,
    ckpt: Notify,
    limiter: Option<Arc<Semaphore>>,
    bad_ranges: AtomicU64,
    hash_rx: Mutex<Option<tokio::sync::oneshot::Receiver<std::io::Result<String>>>>,
}

#[derive(Default)]
struct Sched {
    pending: VecDeque<(u64, u64)>,
    slots: Vec<Arc<Slot>>,
    pieces: Vec<Piece>,
    /// Throughput (bytes/s) of recently completed ranges.
    rates: VecDeque<f64>,
}

struct Slot {
    m: Mutex<SlotInner>,
    abort: AtomicBool,
    born: Instant,
}

struct SlotInner {
    start: u64,
    pos: u64,
    end: u64,
    xxh: Xxh3,
}

impl Slot {
    fn new(start: u64, end: u64) -> Arc<Slot> {
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
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a task or phase ended other than by success.
enum Stop {
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

fn io_err(op: &'static str, path: &Path, e: std::io::Error) -> CoreError {
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

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn validate_sha(s: &Option<String>) -> Result<Option<String>> {
    match s {
        None => Ok(None),
        Some(h) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(h))
            } else {
                Err(CoreError::InvalidArgument(format!(
                    "sha256 must be 64 hex characters, got {} characters",
                    h.len()
                )))
            }
        }
    }
}

fn strong_etag(h: &HeaderMap) -> Option<String> {
    let v = h.get(reqwest::header::ETAG)?.to_str().ok()?.trim();
    (v.starts_with('"') && v.len() >= 2).then(|| v.to_string())
}

/// Parses `bytes a-b/total` (total may be `*`).
fn content_range(h: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let v = h.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    if range == "*" {
        return Some((0, 0, total))
            .filter(|_| total.is_some())
            .map(|(a, _, t)| (a, u64::MAX, t));
    }
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b, total))
}

/// We asked for `identity`; an encoded body's bytes and lengths are not the
/// file's, so it cannot be written (or resumed) by offset.
fn encoded(resp: &Response) -> Option<Stop> {
    let enc = resp
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)?
        .to_str()
        .unwrap_or("?")
        .trim();
    if enc.is_empty() || enc.eq_ignore_ascii_case("identity") {
        return None;
    }
    Some(Stop::Fatal(CoreError::Network {
        url: http::redact(resp.url().as_str()),
        msg: format!(
            "server sent Content-Encoding {enc:?} although we asked for identity; \
             the bytes would not be the file's. Use another mirror or endpoint"
        ),
    }))
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Job {
    /// A crash loses at most the bytes since the last checkpoint: keep that
    /// under one range.
    fn ckpt_bytes(&self) -> u64 {
        CHECKPOINT_BYTES.min(self.chunk / 2).max(64 << 10)
    }
    fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
    fn written(&self) -> Arc<Written> {
        Arc::clone(&lock(&self.written))
    }
    fn redacted(&self) -> String {
        http::redact(self.url.as_str())
    }

    /// Writes `data` into `slot` at its position, up to its end. Returns
    /// true when the slot is complete.
    fn write(&self, slot: &Slot, data: &[u8]) -> Result<bool> {
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
    fn take_work(&self) -> Option<Arc<Slot>> {
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
    fn retire(&self, slot: &Arc<Slot>, requeue: bool) {
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

    fn state(&self) -> State {
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

    fn checkpoint(&self) {
        if self.total() == UNKNOWN {
            return;
        }
        self.since_ckpt.store(0, Ordering::Relaxed);
        // Best effort: losing a checkpoint only costs a re-fetch later.
        let _ = self.state().write(&self.state_path);
    }

    /// The one way the engine sends a request: a GET to the current target
    /// with `extra` (Range, If-Range), under the stall timeout for the
    /// response headers. Credentials follow `self.headers`, which are bound
    /// to the caller's origin, so a target on another origin never gets them.
    async fn get(&self, extra: &HeaderMap) -> Sent {
        self.ranges.fetch_add(1, Ordering::Relaxed);
        let target = lock(&self.target).clone();
        let fut = http::send(&Method::GET, &target, &self.headers, extra, true, None);
        match tokio::time::timeout(self.opts.timeout, fut).await {
            Err(_) => Sent::NoResponse,
            Ok(Err(f)) => Sent::Failed(f),
            Ok(Ok(r)) => Sent::Response(r),
        }
    }

    fn extra_headers(&self, start: u64, end: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes={}-{}", start, end - 1)) {
            h.insert(reqwest::header::RANGE, v);
        }
        if let Some(e) = lock(&self.etag).as_ref() {
            if let Ok(v) = HeaderValue::from_str(e) {
                h.insert(reqwest::header::IF_RANGE, v);
            }
        }
        h
    }
}

/// What [`Job::get`] got back.
enum Sent {
    /// No response headers within the stall timeout.
    NoResponse,
    Failed(Failure),
    Response(Response),
}

fn strip_query(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Checks the status and headers of a response to `Range: start-(end-1)`.
fn check_range_response(
    job: &Job,
    resp: Response,
    start: u64,
) -> std::result::Result<Response, Stop> {
    let status = resp.status();
    if status.is_success() {
        if let Some(stop) = encoded(&resp) {
            return Err(stop);
        }
    }
    let url = resp.url().clone();
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = content_range(resp.headers());
        let total = job.total();
        match cr {
            Some((a, _, Some(t))) if a == start && (total == UNKNOWN || t == total) => {}
            _ => {
                let n = job.bad_ranges.fetch_add(1, Ordering::Relaxed) + 1;
                let why = format!(
                    "server sent Content-Range {:?} for a request starting at {start}",
                    resp.headers().get(reqwest::header::CONTENT_RANGE)
                );
                if n >= 3 {
                    return Err(Stop::Restart {
                        why,
                        plain: None,
                        no_ranges: true,
                    });
                }
                // Retryable: reported as Incomplete if it persists.
                return Err(Stop::Fatal(CoreError::Incomplete {
                    url: http::redact(url.as_str()),
                    have: 0,
                    total: 0,
                    msg: why,
                }));
            }
        }
        let et = strong_etag(resp.headers());
        let known = lock(&job.etag).clone();
        if let (Some(a), Some(b)) = (&et, &known) {
            if a != b {
                return Err(Stop::Restart {
                    why: "the file changed on the server (ETag differs)".into(),
                    plain: None,
                    no_ranges: false,
                });
            }
        }
        return Ok(resp);
    }
    if status == StatusCode::OK {
        return Err(Stop::Restart {
            why: "server ignored the Range header".into(),
            plain: Some(Box::new(resp)),
            no_ranges: true,
        });
    }
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Err(Stop::Restart {
            why: "server says the range is not satisfiable (file changed?)".into(),
            plain: None,
            no_ranges: false,
        });
    }
    Err(Stop::Fatal(http::status_error(status, &url)))
}

/// Result of one attempt at a slot.
enum Attempt {
    Done,
    Aborted,
    Retry(CoreError, Option<Duration>),
}

async fn next_chunk(
    job: &Job,
    slot: Option<&Slot>,
    resp: &mut Response,
) -> std::result::Result<Option<bytes::Bytes>, Attempt> {
    let stall = job.opts.timeout;
    let started = Instant::now();
    loop {
        if job.stop.load(Ordering::Relaxed) || slot.is_some_and(|s| s.abort.load(Ordering::Relaxed))
        {
            return Err(Attempt::Aborted);
        }
        match tokio::time::timeout(TICK.min(stall), resp.chunk()).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => return Err(Attempt::Retry(http::classify_reqwest(&e, resp.url()), None)),
            Err(_) => {
                if started.elapsed() >= stall {
                    return Err(Attempt::Retry(
                        CoreError::Timeout {
                            url: http::redact(resp.url().as_str()),
                            msg: format!(
                                "no data for {:.1} s (stall timeout)",
                                stall.as_secs_f64()
                            ),
                        },
                        None,
                    ));
                }
            }
        }
    }
}

/// One GET for the rest of `slot`, streamed into the file.
async fn attempt(
    job: &Job,
    slot: &Slot,
    pre: Option<Response>,
) -> std::result::Result<Attempt, Stop> {
    let (pos, end) = {
        let s = slot.lock();
        (s.pos, s.end)
    };
    if pos >= end {
        return Ok(Attempt::Done);
    }
    let mut resp = match pre {
        Some(r) => r,
        None => match job.get(&job.extra_headers(pos, end)).await {
            Sent::NoResponse => {
                return Ok(Attempt::Retry(
                    CoreError::Timeout {
                        url: job.redacted(),
                        msg: format!("no response within {:.1} s", job.opts.timeout.as_secs_f64()),
                    },
                    None,
                ))
            }
            Sent::Failed(Failure::Transient { err, retry_after }) => {
                return Ok(Attempt::Retry(err, retry_after))
            }
            Sent::Failed(Failure::Fatal(e)) => return Err(Stop::Fatal(e)),
            Sent::Response(r) => {
                if http::retryable_status(r.status()) {
                    let ra = http::retry_after(r.headers());
                    return Ok(Attempt::Retry(http::status_error(r.status(), r.url()), ra));
                }
                match check_range_response(job, r, pos) {
                    Ok(r) => r,
                    Err(Stop::Fatal(e @ CoreError::Incomplete { .. })) => {
                        return Ok(Attempt::Retry(e, None))
                    }
                    Err(e) => return Err(e),
                }
            }
        },
    };
    loop {
        match next_chunk(job, Some(slot), &mut resp).await {
            Ok(Some(data)) => {
                if job.write(slot, &data)? {
                    return Ok(Attempt::Done);
                }
            }
            Ok(None) => {
                let s = slot.lock();
                if s.pos >= s.end {
                    return Ok(Attempt::Done);
                }
                return Ok(Attempt::Retry(
                    CoreError::Incomplete {
                        url: job.redacted(),
                        have: s.pos,
                        total: job.total(),
                        msg: format!(
                            "connection closed at byte {} before the end of the range",
                            s.pos
                        ),
                    },
                    None,
                ));
            }
            Err(a) => return Ok(a),
        }
    }
}

/// Fetches one slot to completion, retrying with backoff.
async fn fetch_slot(
    job: &Job,
    slot: &Arc<Slot>,
    mut pre: Option<Response>,
    cancel: &AtomicBool,
) -> std::result::Result<(), Stop> {
    let mut fails = 0u32;
    loop {
        let before = slot.lock().pos;
        let r = attempt(job, slot, pre.take()).await;
        match r {
            Ok(Attempt::Done) => {
                job.retire(slot, false);
                return Ok(());
            }
            Ok(Attempt::Aborted) => {
                job.retire(slot, true);
                return Ok(());
            }
            Ok(Attempt::Retry(err, ra)) => {
                // Real progress resets the budget; a trickle of a few bytes
                // per attempt does not, or a hostile server could keep us forever.
                if slot.lock().pos >= before + PROGRESS_RESETS_RETRIES {
                    fails = 0;
                }
                fails += 1;
                if fails > job.opts.retries {
                    job.retire(slot, true);
                    return Err(Stop::Fatal(err));
                }
                job.retries.fetch_add(1, Ordering::Relaxed);
                let d = job.opts.backoff.delay(fails - 1, ra);
                if let Err(e) = http::sleep_cancellable(d, cancel).await {
                    job.retire(slot, true);
                    return Err(e.into());
                }
                if job.stop.load(Ordering::Relaxed) {
                    job.retire(slot, true);
                    return Ok(());
                }
            }
            Err(e) => {
                job.retire(slot, true);
                return Err(e);
            }
        }
    }
}

/// One connection: takes ranges until there are none (or it is told to
/// retire because the controller lowered the connection count).
async fn connection(
    job: Arc<Job>,
    mut first: Option<(Arc<Slot>, Response)>,
) -> std::result::Result<(), Stop> {
    let r = async {
        loop {
            if job.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let (slot, pre) = match first.take() {
                Some((s, r)) => (s, Some(r)),
                None => {
                    if job.running.load(Ordering::Relaxed)
                        > job.target_conns.load(Ordering::Relaxed)
                    {
                        return Ok(());
                    }
                    match job.take_work() {
                        Some(s) => (s, None),
                        None => return Ok(()),
                    }
                }
            };
            let _permit = match &job.limiter {
                Some(l) => Some(l.acquire().await.map_err(|_| Stop::Cancelled)?),
                None => None,
            };
            fetch_slot(&job, &slot, pre, &job.stop).await?;
        }
    }
    .await;
    job.running.fetch_sub(1, Ordering::AcqRel);
    job.ckpt.notify_one();
    r
}

fn spawn_connection(
    job: &Arc<Job>,
    set: &mut tokio::task::JoinSet<std::result::Result<(), Stop>>,
    first: Option<(Arc<Slot>, Response)>,
) {
    let n = job.running.fetch_add(1, Ordering::AcqRel) + 1;
    job.max_running.fetch_max(n, Ordering::Relaxed);
    set.spawn(connection(Arc::clone(job), first));
}

/// Chooses how many connections to run, from measured throughput.
///
/// Starts with one, or with `LARGE_START` for a large file (waiting a window
/// at one connection before growing cost ~1 s on a 1 GiB file behind a
/// per-connection cap). After each change it waits for the new connections to
/// warm up, then measures aggregate throughput over a window. The first step
/// has no baseline: 2x from one connection, 4x from a large start. If going from
/// n to k connections scaled almost linearly (each connection is capped
/// somewhere), it jumps 4x; if it helped somewhat, 2x; if it did not help
/// (one stream already fills the link or the CPU), it goes back to n and
/// stays there. Measured on loopback nginx (1 GiB): 1, 4 and 16 connections
/// give the same unthrottled throughput, so starting at 8 costs nothing
/// there, while behind `limit_rate 50m` it reaches 16 connections ~200 ms in.
struct Adapt {
    level: usize,
    prev_level: usize,
    prev_rate: f64,
    changed_at: Instant,
    mark: Option<(Instant, u64)>,
    settled: bool,
}

// Short: on a fast link a 300 ms window per step was most of the ramp.
const WARMUP: Duration = Duration::from_millis(50);
const WINDOW: Duration = Duration::from_millis(150);
/// Connections opened at once when at least `LARGE_START_CHUNKS` ranges remain.
const LARGE_START: usize = 8;
const LARGE_START_CHUNKS: u64 = 8;

impl Adapt {
    fn new(level: usize) -> Self {
        Adapt {
            level: level.max(1),
            prev_level: 0,
            prev_rate: 0.0,
            changed_at: Instant::now(),
            mark: None,
            settled: false,
        }
    }
}

/// Marks for re-issue the ranges that run far slower than the others (a bad
/// path or a throttled connection): their owner drops the response and the
/// rest of the range goes back to the queue, fetched on a fresh connection.
fn abort_laggards(job: &Job) -> usize {
    const MIN_AGE: Duration = Duration::from_secs(2);
    let (slots, done_rates) = {
        let sc = lock(&job.sched);
        (
            sc.slots.clone(),
            sc.rates.iter().copied().collect::<Vec<f64>>(),
        )
    };
    let rates: Vec<(f64, &Arc<Slot>)> = slots
        .iter()
        .filter(|s| s.born.elapsed() >= MIN_AGE && !s.abort.load(Ordering::Relaxed))
        .map(|s| {
            let inner = s.lock();
            let done = (inner.pos - inner.start) as f64;
            (done / s.born.elapsed().as_secs_f64(), s)
        })
        .collect();
    // Compare with the ranges in flight and those just completed (at the
    // tail, the slow one may be the only range left).
    let mut all: Vec<f64> = rates.iter().map(|r| r.0).chain(done_rates).collect();
    if all.len() < 3 {
        return 0;
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let median = all[all.len() / 2];
    let mut n = 0;
    for (rate, slot) in rates {
        if rate * 8.0 < median {
            slot.abort.store(true, Ordering::Relaxed);
            job.retries.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
    }
    n
}

impl Adapt {
    /// Returns the new target when it changes.
    fn tick(&mut self, now: Instant, bytes: u64, max: usize) -> Option<usize> {
        if self.settled {
            return None;
        }
        if now < self.changed_at + WARMUP {
            return None;
        }
        let (t0, b0) = *self.mark.get_or_insert((now, bytes));
        if now < t0 + WINDOW {
            return None;
        }
        let rate = (bytes - b0) as f64 / (now - t0).as_secs_f64();
        self.mark = None;
        self.changed_at = now;
        if self.prev_level == 0 {
            self.prev_level = self.level;
            self.prev_rate = rate;
            let factor = if self.level > 1 { 4 } else { 2 };
            self.level = (self.level * factor).min(max);
            if self.level == self.prev_level {
                self.settled = true;
                return None;
            }
            return Some(self.level);
        }
        let gain = rate / self.prev_rate.max(1.0) - 1.0;
        let eff = gain / (self.level as f64 / self.prev_level as f64 - 1.0);
        if eff < 0.25 {
            self.settled = true;
            if gain < 0.05 {
                self.level = self.prev_level;
                return Some(self.level);
            }
            return None;
        }
        let factor = if eff > 0.75 { 4 } else { 2 };
        self.prev_level = self.level;
        self.prev_rate = rate;
        self.level = (self.level * factor).min(max);
        if self.level == self.prev_level {
            self.settled = true;
            return None;
        }
        Some(self.level)
    }
}

/// The parallel range phase. Returns Ok when every byte is on disk.
async fn ranges_phase(job: &Arc<Job>, cancel: &AtomicBool) -> std::result::Result<(), Stop> {
    // Probe: the first missing range; its response tells the total size.
    let known = job.total();
    let w = job.written();
    let have = w.snapshot();
    let (ps, pe) = if known == UNKNOWN {
        (0, job.chunk)
    } else {
        match have.missing(known).first() {
            Some(&(s, e)) => (s, e.min(s + job.chunk)),
            None => return Ok(()),
        }
    };
    let slot_probe = Slot::new(ps, pe);
    let mut fails = 0u32;
    let resp = loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        let (err, ra) = match job.get(&job.extra_headers(ps, pe)).await {
            Sent::NoResponse => (
                CoreError::Timeout {
                    url: job.redacted(),
                    msg: "no response to the first request".into(),
                },
                None,
            ),
            Sent::Failed(Failure::Fatal(e)) => return Err(Stop::Fatal(e)),
            Sent::Failed(Failure::Transient { err, retry_after }) => (err, retry_after),
            Sent::Response(r) if http::retryable_status(r.status()) => (
                http::status_error(r.status(), r.url()),
                http::retry_after(r.headers()),
            ),
            Sent::Response(r) => {
                // Later requests skip the redirect chain; they still carry
                // credentials only to the caller's origin (see `Job::get`).
                *lock(&job.target) = r.url().clone();
                if r.status() == StatusCode::RANGE_NOT_SATISFIABLE && known == UNKNOWN {
                    // An empty file answers `bytes */0`.
                    if let Some((_, _, Some(0))) = content_range(r.headers()) {
                        job.total.store(0, Ordering::Release);
                        w.set_total(0);
                        return Ok(());
                    }
                }
                if r.status() == StatusCode::PARTIAL_CONTENT && known == UNKNOWN {
                    if let Some((a, _, Some(t))) = content_range(r.headers()) {
                        if a == ps {
                            if let Some(expected) = job.opts.size {
                                if expected != t {
                                    return Err(Stop::Fatal(CoreError::Size {
                                        url: job.redacted(),
                                        expected,
                                        actual: t,
                                    }));
                                }
                            }
                            *lock(&job.etag) = strong_etag(r.headers());
                            job.total.store(t, Ordering::Release);
                            prepare_file(job, t)?;
                            w.set_total(t);
                            let mut s = slot_probe.lock();
                            s.end = pe.min(t);
                        }
                    }
                }
                match check_range_response(job, r, ps) {
                    Ok(r) => break r,
                    Err(Stop::Fatal(e @ CoreError::Incomplete { .. })) => (e, None),
                    Err(e) => return Err(e),
                }
            }
        };
        fails += 1;
        if fails > job.opts.retries {
            return Err(Stop::Fatal(err));
        }
        job.retries.fetch_add(1, Ordering::Relaxed);
        http::sleep_cancellable(job.opts.backoff.delay(fails - 1, ra), cancel).await?;
    };
    let total = job.total();
    // Everything else still missing, in chunks.
    let remaining = {
        let mut have = w.snapshot();
        have.add(ps, pe.min(total));
        let mut sc = lock(&job.sched);
        sc.pending = ranges::split(&have.missing(total), job.chunk).into();
        sc.slots.push(Arc::clone(&slot_probe));
        total.saturating_sub(have.covered())
    };
    let mut set = tokio::task::JoinSet::new();
    let fixed = job.opts.connections;
    let max = fixed.unwrap_or(MAX_CONNECTIONS).max(1);
    let start = if remaining >= LARGE_START_CHUNKS * job.chunk {
        LARGE_START.min(max)
    } else {
        1
    };
    let mut adapt = Adapt::new(start);
    let initial = fixed.unwrap_or(start).max(1);
    job.target_conns.store(initial, Ordering::Relaxed);
    spawn_connection(job, &mut set, Some((slot_probe, resp)));
    for _ in 1..initial {
        spawn_connection(job, &mut set, None);
    }
    let mut failure: Option<Stop> = None;
    let mut last_ckpt = Instant::now();
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    if failure.is_none() {
                        failure = Some(e);
                        job.stop.store(true, Ordering::Relaxed);
                    }
                }
                Some(Err(je)) => {
                    if failure.is_none() {
                        failure = Some(Stop::Fatal(CoreError::Worker(format!("download task failed: {je}"))));
                        job.stop.store(true, Ordering::Relaxed);
                    }
                }
            },
            _ = tokio::time::sleep(TICK) => {}
            _ = job.ckpt.notified() => {}
        }
        if cancel.load(Ordering::Relaxed) && failure.is_none() {
            failure = Some(Stop::Cancelled);
            job.stop.store(true, Ordering::Relaxed);
        }
        if job.since_ckpt.load(Ordering::Relaxed) >= job.ckpt_bytes()
            || (last_ckpt.elapsed() >= Duration::from_millis(500)
                && job.since_ckpt.load(Ordering::Relaxed) > 0)
        {
            job.checkpoint();
            last_ckpt = Instant::now();
        }
        if failure.is_some() || job.stop.load(Ordering::Relaxed) {
            continue;
        }
        abort_laggards(job);
        // Adapt the number of connections (only when not fixed by the caller).
        if fixed.is_none() {
            let pending_work = {
                let sc = lock(&job.sched);
                sc.pending.len() + sc.slots.len()
            };
            if let Some(t) = adapt.tick(Instant::now(), job.fetched.load(Ordering::Relaxed), max) {
                job.target_conns.store(t, Ordering::Relaxed);
            }
            let t = job.target_conns.load(Ordering::Relaxed);
            let mut running = job.running.load(Ordering::Relaxed);
            while running < t && running < pending_work.max(1) && !set.is_empty() {
                spawn_connection(job, &mut set, None);
                running += 1;
            }
        }
        // A connection that ends while others still work leaves stealable
        // ranges; keep at least the target number busy.
        let running = job.running.load(Ordering::Relaxed);
        let work = {
            let sc = lock(&job.sched);
            !sc.pending.is_empty()
        };
        if running == 0 && work {
            spawn_connection(job, &mut set, None);
        }
    }
    job.checkpoint();
    match failure {
        Some(e) => Err(e),
        None => {
            let have = job.written().snapshot();
            if have.covered() < total {
                return Err(Stop::Fatal(CoreError::Incomplete {
                    url: job.redacted(),
                    have: have.covered(),
                    total,
                    msg: "internal: ranges left unfetched".into(),
                }));
            }
            Ok(())
        }
    }
}

/// Checks free space, then reserves the file's full size.
fn prepare_file(job: &Job, total: u64) -> std::result::Result<(), Stop> {
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

/// The single-stream phase for servers without usable ranges: one plain
/// GET, written from byte 0. Retries start over from 0 (never append).
async fn plain_phase(
    job: &Arc<Job>,
    mut pre: Option<Response>,
    cancel: &AtomicBool,
) -> std::result::Result<(), Stop> {
    let mut fails = 0u32;
    loop {
        if fails > 0 {
            reset(job, UNKNOWN)?;
        }
        let r = plain_attempt(job, pre.take(), cancel).await;
        let (err, ra) = match r {
            Ok(()) => return Ok(()),
            Err(PlainErr::Stop(s)) => return Err(s),
            Err(PlainErr::Retry(e, ra)) => (e, ra),
        };
        fails += 1;
        if fails > job.opts.retries {
            return Err(Stop::Fatal(err));
        }
        job.retries.fetch_add(1, Ordering::Relaxed);
        http::sleep_cancellable(job.opts.backoff.delay(fails - 1, ra), cancel).await?;
    }
}

enum PlainErr {
    Stop(Stop),
    Retry(CoreError, Option<Duration>),
}

async fn plain_attempt(
    job: &Arc<Job>,
    pre: Option<Response>,
    cancel: &AtomicBool,
) -> std::result::Result<(), PlainErr> {
    let mut resp = match pre {
        Some(r) => r,
        None => match job.get(&HeaderMap::new()).await {
            Sent::NoResponse => {
                return Err(PlainErr::Retry(
                    CoreError::Timeout {
                        url: job.redacted(),
                        msg: "no response".into(),
                    },
                    None,
                ))
            }
            Sent::Failed(Failure::Fatal(e)) => return Err(PlainErr::Stop(Stop::Fatal(e))),
            Sent::Failed(Failure::Transient { err, retry_after }) => {
                return Err(PlainErr::Retry(err, retry_after))
            }
            Sent::Response(r) => r,
        },
    };
    let status = resp.status();
    if http::retryable_status(status) {
        let ra = http::retry_after(resp.headers());
        return Err(PlainErr::Retry(http::status_error(status, resp.url()), ra));
    }
    if status != StatusCode::OK {
        return Err(PlainErr::Stop(Stop::Fatal(http::status_error(
            status,
            resp.url(),
        ))));
    }
    if let Some(stop) = encoded(&resp) {
        return Err(PlainErr::Stop(stop));
    }
    let declared = content_length(resp.headers());
    if let (Some(exp), Some(d)) = (job.opts.size, declared) {
        if exp != d {
            return Err(PlainErr::Stop(Stop::Fatal(CoreError::Size {
                url: job.redacted(),
                expected: exp,
                actual: d,
            })));
        }
    }
    let limit = job.opts.size.or(declared);
    if let Some(t) = limit {
        prepare_file(job, t).map_err(PlainErr::Stop)?;
    }
    let slot = Slot::new(0, u64::MAX);
    let w = job.written();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(PlainErr::Stop(Stop::Cancelled));
        }
        match next_chunk(job, None, &mut resp).await {
            Ok(Some(data)) => {
                let pos = slot.lock().pos;
                if let Some(t) = limit {
                    if pos + data.len() as u64 > t {
                        return Err(PlainErr::Stop(Stop::Fatal(CoreError::Size {
                            url: job.redacted(),
                            expected: t,
                            actual: pos + data.len() as u64,
                        })));
                    }
                }
                job.write(&slot, &data)
                    .map_err(|e| PlainErr::Stop(e.into()))?;
            }
            Ok(None) => {
                let pos = slot.lock().pos;
                if let Some(t) = limit {
                    if pos < t {
                        return Err(PlainErr::Retry(
                            CoreError::Incomplete {
                                url: job.redacted(),
                                have: pos,
                                total: t,
                                msg: format!("connection closed after {pos} of {t} bytes"),
                            },
                            None,
                        ));
                    }
                }
                job.file
                    .set_len(pos)
                    .map_err(|e| PlainErr::Stop(io_err("resize", &job.part, e).into()))?;
                job.total.store(pos, Ordering::Release);
                w.set_total(pos);
                return Ok(());
            }
            Err(Attempt::Retry(e, ra)) => return Err(PlainErr::Retry(e, ra)),
            Err(_) => return Err(PlainErr::Stop(Stop::Cancelled)),
        }
    }
}

/// Forgets everything on disk: a restart from byte 0, with a new hasher.
fn reset(job: &Job, total: u64) -> Result<()> {
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

fn start_hasher(job: &Job, w: Arc<Written>) -> Result<()> {
    let rx = hasher::spawn(Arc::clone(&job.file), w)
        .map_err(|e| CoreError::Worker(format!("cannot start the hasher thread: {e}")))?;
    *lock(&job.hash_rx) = Some(rx);
    Ok(())
}

/// The advisory lock on `<dest>.lock`, removed when dropped.
struct DestLock {
    file: File,
    path: PathBuf,
}

impl Drop for DestLock {
    fn drop(&mut self) {
        // Unlink before unlocking: a waiter that then locks the old inode
        // notices it is no longer at the path and retries.
        let _ = std::fs::remove_file(&self.path);
        let _ = fs4::fs_std::FileExt::unlock(&self.file);
    }
}

fn same_file(f: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (f.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (f, path);
        true
    }
}

/// Takes the lock, waiting (and watching `cancel`) while another process
/// holds it. Returns whether we had to wait.
async fn take_lock(path: &Path, cancel: &AtomicBool) -> Result<(DestLock, bool)> {
    let mut waited = false;
    // Test-only switch (as huggingface_hub's tests patch flock): behave as on
    // a filesystem where locks do nothing, to prove correctness without them.
    let no_lock = std::env::var_os("CAXTON_DOWNLOAD_NO_LOCK").is_some_and(|v| v == "1");
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err("create lock file", path, e))?;
        if no_lock {
            return Ok((
                DestLock {
                    file,
                    path: path.to_path_buf(),
                },
                false,
            ));
        }
        match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
            Ok(true) => {
                if same_file(&file, path) {
                    return Ok((
                        DestLock {
                            file,
                            path: path.to_path_buf(),
                        },
                        waited,
                    ));
                }
                continue;
            }
            Ok(false) => {}
            // Locks unsupported here (some network filesystems): go on
            // without; unique temp files keep us correct.
            Err(_) => {
                return Ok((
                    DestLock {
                        file,
                        path: path.to_path_buf(),
                    },
                    false,
                ))
            }
        }
        waited = true;
        http::sleep_cancellable(Duration::from_millis(100), cancel).await?;
    }
}

/// Opens our temp file: a fresh one with O_EXCL (a planted file or symlink at
/// that name makes us fail rather than write through it), a claimed one
/// without following symlinks.
fn open_part(part: &Path, fresh: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if fresh {
        o.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(part)
}

/// Whether the process that named a temp `<name>.<pid>-<rand>.part...` is
/// still running (then its files are not ours to take, lock or no lock).
fn owner_alive(temp_name: &str, name: &str) -> bool {
    let Some(rest) = temp_name
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('.'))
    else {
        return false;
    };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    pid_alive(pid)
}

#[cfg(unix)]
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn pid_alive(_pid: u32) -> bool {
    // Without a cheap check, assume dead: the lock still protects us, and
    // unique names keep a wrong guess from corrupting anything.
    false
}

/// Claims a resumable temp left by a dead process (renaming it to our own
/// unique name) and removes other dead leftovers. Returns its state.
fn claim_leftovers(
    dest: &Path,
    part: &Path,
    state_path: &Path,
    url: &str,
    sha: &Option<String>,
) -> Option<State> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest.file_name()?.to_str()?.to_string();
    let prefix = format!("{name}.");
    let mut claimed: Option<State> = None;
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let fname = e.file_name();
        let Some(f) = fname.to_str() else { continue };
        if !f.starts_with(&prefix) || !f.contains(".part") {
            continue;
        }
        let p = dir.join(f);
        if p == part || p == state_path || owner_alive(f, &name) {
            continue;
        }
        if let Some(data) = f.strip_suffix(".part.state") {
            let data_path = dir.join(format!("{data}.part"));
            let st = State::read(&p);
            let usable = claimed.is_none()
                && st.as_ref().is_some_and(|s| {
                    s.url == url && (sha.is_none() || s.sha256.is_none() || &s.sha256 == sha)
                });
            if usable && std::fs::rename(&data_path, part).is_ok() {
                let _ = std::fs::remove_file(&p);
                claimed = st;
            } else {
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_file(&data_path);
            }
        } else if f.ends_with(".part") {
            if !dir.join(format!("{f}.state")).exists() {
                let _ = std::fs::remove_file(&p);
            }
        } else if f.contains(".part.state.tmp") {
            let _ = std::fs::remove_file(&p);
        }
    }
    claimed
}

/// Downloads `url` to `dest`. `progress` counts bytes of the final file
/// known good (it can go down on a restart); `cancel` stops the download,
/// keeping its resumable state.
pub async fn download_async(
    url: &str,
    dest: &Path,
    opts: Options,
    progress: Arc<AtomicI64>,
    cancel: &AtomicBool,
    limiter: Option<Arc<Semaphore>>,
) -> Result<Report> {
    let parsed = http::parse_url(url)?;
    // Credentials belong to the origin of the URL the caller gave, fixed
    // here once; the redirect target that later requests go to never owns them.
    let headers = Headers::new(&opts.headers, &parsed)?;
    let mut opts = opts;
    opts.sha256 = validate_sha(&opts.sha256)?;
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
    let (lock_guard, waited) = take_lock(&with_suffix(dest, ".lock"), cancel).await?;
    if waited {
        // Another process held the lock: it may have just produced the file.
        if let (Some(sha), Ok(meta)) = (&opts.sha256, std::fs::metadata(dest)) {
            if opts.size.map_or(true, |s| s == meta.len()) {
                let d = dest.to_path_buf();
                let got = tokio::task::spawn_blocking(move || crate::hash::sha256_file(&d, None))
                    .await
                    .map_err(|e| CoreError::Worker(e.to_string()))??;
                if &got == sha {
                    progress.fetch_add(meta.len() as i64, Ordering::Relaxed);
                    return Ok(Report {
                        sha256: got,
                        bytes: meta.len(),
                        url: http::redact(url),
                        ..Report::default()
                    });
                }
            }
        }
    }
    let token = format!("{}-{:08x}", std::process::id(), fastrand::u32(..));
    let part = with_suffix(dest, &format!(".{token}.part"));
    let state_path = with_suffix(&part, ".state");
    let clean_url = strip_query(&parsed);
    let leftover = claim_leftovers(dest, &part, &state_path, &clean_url, &opts.sha256);
    let file = open_part(&part, leftover.is_none()).map_err(|e| io_err("create", &part, e))?;
    let file = Arc::new(file);
    let chunk = opts.chunk_size.unwrap_or(DEFAULT_CHUNK).max(MIN_CHUNK / 16);
    let job = Arc::new(Job {
        url: parsed.clone(),
        target: Mutex::new(parsed.clone()),
        headers,
        chunk,
        file: Arc::clone(&file),
        part: part.clone(),
        state_path: state_path.clone(),
        total: AtomicU64::new(UNKNOWN),
        etag: Mutex::new(None),
        sched: Mutex::new(Sched::default()),
        written: Mutex::new(Written::new(UNKNOWN)),
        progress: Arc::clone(&progress),
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
    });
    // Resume: keep the pieces whose bytes still match their checksums.
    let mut resumed = 0;
    if let Some(st) = leftover {
        if job.opts.size.map_or(true, |s| s == st.size) {
            let f = Arc::clone(&file);
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let pieces = st.pieces.clone();
            let good = tokio::task::spawn_blocking(move || state::verify_pieces(&f, &pieces, len))
                .await
                .map_err(|e| CoreError::Worker(e.to_string()))?;
            let w = Written::new(st.size);
            for p in &good {
                w.add(p.start, p.end);
            }
            resumed = w.snapshot().covered();
            job.total.store(st.size, Ordering::Release);
            *lock(&job.etag) = st.etag.clone();
            *lock(&job.written) = w;
            lock(&job.sched).pieces = good;
            progress.fetch_add(resumed as i64, Ordering::Relaxed);
        }
    }
    let result = run(&job, cancel).await;
    job.stop.store(true, Ordering::Relaxed);
    let outcome = match result {
        Ok(digest) => finish(&job, dest, digest, resumed),
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(_) => {}
        Err(CoreError::Checksum { .. }) | Err(CoreError::Size { .. }) => {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&state_path);
        }
        Err(_) => {
            // Keep what we have for a resume, unless it is nothing.
            job.written().stop();
            if job.total() == UNKNOWN || job.state().pieces.is_empty() {
                let _ = std::fs::remove_file(&part);
                let _ = std::fs::remove_file(&state_path);
            } else {
                job.checkpoint();
            }
        }
    }
    drop(lock_guard);
    outcome
}

async fn run(job: &Arc<Job>, cancel: &AtomicBool) -> Result<String> {
    let mut restarts = 0;
    let mut mode: Option<Option<Response>> = None; // Some(_) = plain mode
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
    std::fs::rename(&job.part, dest).map_err(|e| io_err("rename into place", dest, e))?;
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

/// Blocking download on the shared runtime. `cancel` is polled: setting it
/// stops the download within ~0.1 s, keeping its resume state.
pub fn download(
    url: &str,
    dest: &Path,
    opts: Options,
    progress: Arc<AtomicI64>,
    cancel: &AtomicBool,
) -> Result<Report> {
    http::runtime()?.block_on(download_async(url, dest, opts, progress, cancel, None))
}

/// One file of [`download_many`].
#[derive(Clone, Debug)]
pub struct Item {
    pub url: String,
    pub dest: PathBuf,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub headers: Vec<(String, String)>,
}

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
        let budget = Arc::new(Semaphore::new(opts.connections.unwrap_or(MAX_CONNECTIONS).max(1)));
        let files = Arc::new(Semaphore::new(max_concurrent.max(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = tokio::task::JoinSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let mut o = opts.clone();
            o.size = item.size;
            o.sha256 = item.sha256.clone();
            o.headers = if item.headers.is_empty() { opts.headers.clone() } else { item.headers.clone() };
            // Each file adapts within the shared budget.
            o.connections = None;
            let (budget, files, stop, progress) = (Arc::clone(&budget), Arc::clone(&files), Arc::clone(&stop), Arc::clone(&progress));
            set.spawn(async move {
                let _slot = files.acquire_owned().await.map_err(|_| CoreError::Cancelled)?;
                if stop.load(Ordering::Relaxed) {
                    return Err(CoreError::Cancelled);
                }
                let r = download_async(&item.url, &item.dest, o, progress, &stop, Some(budget)).await;
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                r.map(|rep| (i, rep))
            });
        }
        let mut out: Vec<Option<Report>> = Vec::new();
        let mut first_err: Option<CoreError> = None;
        loop {
            tokio::select! {
                r = set.join_next() => match r {
                    None => break,
                    Some(Ok(Ok((i, rep)))) => {
                        if out.len() <= i { out.resize(i + 1, None); }
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `Adapt` against a model link where `n` connections give
    /// `rate(n)` bytes/s; returns the connection count it settles on.
    fn settle(rate: impl Fn(usize) -> f64) -> (usize, f64) {
        settle_from(1, rate)
    }

    fn settle_from(start: usize, rate: impl Fn(usize) -> f64) -> (usize, f64) {
        let mut a = Adapt::new(start);
        let t0 = Instant::now();
        let mut now = t0;
        let mut bytes = 0.0;
        let mut level = start;
        for _ in 0..200 {
            now += TICK;
            bytes += rate(level) * TICK.as_secs_f64();
            if let Some(l) = a.tick(now, bytes as u64, MAX_CONNECTIONS) {
                level = l;
            }
        }
        (level, (now - t0).as_secs_f64())
    }

    #[test]
    fn adapt_ramps_up_on_capped_connections() {
        let (level, _) = settle(|n| 50e6 * n as f64);
        assert_eq!(level, MAX_CONNECTIONS);
    }

    #[test]
    fn adapt_stays_at_one_when_one_stream_fills_the_link() {
        let (level, _) = settle(|n| if n == 1 { 600e6 } else { 560e6 });
        assert_eq!(level, 1);
    }

    #[test]
    fn adapt_stops_where_the_link_saturates() {
        // Capped at 50 MB/s per connection, 300 MB/s in total.
        let (level, _) = settle(|n| (50e6 * n as f64).min(300e6));
        assert!((4..=8).contains(&level), "settled at {level}");
    }

    #[test]
    fn adapt_large_start_reaches_the_cap_in_one_step() {
        let mut a = Adapt::new(LARGE_START);
        let mut now = Instant::now();
        let mut bytes = 0.0;
        let mut level = LARGE_START;
        let mut steps = 0;
        while level < MAX_CONNECTIONS && steps < 100 {
            now += TICK;
            steps += 1;
            bytes += 50e6 * level as f64 * TICK.as_secs_f64();
            if let Some(l) = a.tick(now, bytes as u64, MAX_CONNECTIONS) {
                level = l;
            }
        }
        assert_eq!(level, MAX_CONNECTIONS);
        // Warm-up plus one window, in ticks.
        assert!(
            steps as u32 * TICK <= WARMUP + WINDOW + 2 * TICK,
            "{steps} ticks"
        );
        assert_eq!(
            settle_from(LARGE_START, |n| 50e6 * n as f64).0,
            MAX_CONNECTIONS
        );
    }

    #[test]
    fn adapt_large_start_falls_back_when_more_does_not_help() {
        let (level, _) = settle_from(
            LARGE_START,
            |n| if n <= LARGE_START { 600e6 } else { 590e6 },
        );
        assert_eq!(level, LARGE_START);
    }

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert("content-range", HeaderValue::from_static("bytes 0-99/1000"));
        assert_eq!(content_range(&h), Some((0, 99, Some(1000))));
        h.insert("content-range", HeaderValue::from_static("bytes 5-9/*"));
        assert_eq!(content_range(&h), Some((5, 9, None)));
        h.insert("content-range", HeaderValue::from_static("bytes */0"));
        assert_eq!(content_range(&h), Some((0, u64::MAX, Some(0))));
        for bad in ["bytes 9-5/10", "bytes x-1/2", "items 0-1/2", "bytes 0-1"] {
            h.insert("content-range", HeaderValue::from_static(bad));
            assert_eq!(content_range(&h), None, "{bad}");
        }
    }

    #[test]
    fn ranges_after_a_cross_origin_redirect_carry_no_credentials() {
        use testserver::{Route, Server};
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (hub, cdn) = (Server::bind(), Server::bind());
        let blob = cdn.url("/blob");
        let hub = hub.start(vec![("/resolve/f", Route::Redirect(blob))]);
        let cdn = cdn.start(vec![("/blob", Route::Bytes(data.clone()))]);
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            headers: vec![
                ("Authorization".into(), "Bearer hf_SENTINEL".into()),
                ("Cookie".into(), "s=hf_SENTINEL".into()),
            ],
            chunk_size: Some(MIN_CHUNK / 4),
            connections: Some(4),
            size: Some(data.len() as u64),
            ..Options::default()
        };
        let progress = Arc::new(AtomicI64::new(0));
        let cancel = AtomicBool::new(false);
        let dest = dir.path().join("f");
        let r = download(&hub.url("/resolve/f"), &dest, opts, progress, &cancel).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(r.ranges >= 12, "{r:?}");
        let seen = cdn.seen();
        assert!(seen.len() >= 12);
        assert!(seen
            .iter()
            .all(|s| !s.has("authorization") && !s.has("cookie")));
        assert!(hub
            .seen()
            .iter()
            .all(|s| s.has("authorization") && s.has("cookie")));
    }

    #[test]
    fn owner_alive_parses_temp_names() {
        let me = std::process::id();
        // Our own pid never counts as another live owner.
        assert!(!owner_alive(&format!("f.bin.{me}-0000abcd.part"), "f.bin"));
        assert!(!owner_alive("f.bin.notapid.part", "f.bin"));
        assert!(!owner_alive("other.1-00.part", "f.bin"));
        #[cfg(unix)]
        assert!(owner_alive("f.bin.1-0000abcd.part.state", "f.bin")); // init is alive
    }
}
