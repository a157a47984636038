//! The parallel range phase: a probe that learns the size (and where the
//! redirects lead), then connections that each take ranges from a shared
//! schedule and retry them, while a supervisor checkpoints the resume
//! state, re-issues laggards and adapts the connection count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use tokio::task::{JoinError, JoinSet};

use super::adapt::{abort_laggards, Adapt, LARGE_START, LARGE_START_CHUNKS};
use super::hasher::UNKNOWN;
use super::job::{lock, prepare_file, Job, Slot, Stop};
use super::options::MAX_CONNECTIONS;
use super::ranges;
use super::request::{next_chunk, Attempt, Sent, TICK};
use super::response::{check_range_response, content_range, strong_etag, Rejected};
use crate::error::CoreError;
use crate::http::{self, Failure};

/// An attempt that fetched at least this much gives the range a fresh retry budget.
const PROGRESS_RESETS_RETRIES: u64 = 256 << 10;

type Connections = JoinSet<std::result::Result<(), Stop>>;

/// The parallel range phase. Returns Ok when every byte is on disk.
pub(super) async fn ranges_phase(
    job: &Arc<Job>,
    cancel: &AtomicBool,
) -> std::result::Result<(), Stop> {
    let Some(probe) = probe(job, cancel).await? else {
        return Ok(());
    };
    let remaining = schedule_rest(job, &probe);
    let failure = supervise(job, (probe.slot, probe.resp), remaining, cancel).await;
    job.checkpoint();
    if let Some(e) = failure {
        return Err(e);
    }
    let total = job.total();
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

/// The first request of a phase and its accepted response.
struct Probe {
    slot: Arc<Slot>,
    resp: Response,
    start: u64,
    end: u64,
}

/// Requests the first missing range; its response tells the total size and
/// the URL later requests go to. None when nothing is left to fetch.
async fn probe(job: &Arc<Job>, cancel: &AtomicBool) -> std::result::Result<Option<Probe>, Stop> {
    let known = job.total();
    let (ps, pe) = if known == UNKNOWN {
        (0, job.chunk)
    } else {
        match job.written().snapshot().missing(known).first() {
            Some(&(s, e)) => (s, e.min(s + job.chunk)),
            None => return Ok(None),
        }
    };
    let slot = Slot::new(ps, pe);
    let mut fails = 0u32;
    loop {
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
                if known == UNKNOWN && learn_size(job, &r, &slot, ps, pe)? {
                    return Ok(None);
                }
                match check_range_response(job, r, ps) {
                    Ok(resp) => {
                        let (start, end) = (ps, pe);
                        return Ok(Some(Probe {
                            slot,
                            resp,
                            start,
                            end,
                        }));
                    }
                    Err(Rejected::Retry(e)) => (e, None),
                    Err(Rejected::Stop(s)) => return Err(s),
                }
            }
        };
        fails += 1;
        if fails > job.opts.retries {
            return Err(Stop::Fatal(err));
        }
        job.retries.fetch_add(1, Ordering::Relaxed);
        http::sleep_cancellable(job.opts.backoff.delay(fails - 1, ra), cancel).await?;
    }
}

/// From the probe's answer, the size of a file we knew nothing of: checks
/// it against the expected size, reserves it on disk and clips the probe's
/// range to it. Returns true for an empty file (416 `bytes */0`).
fn learn_size(
    job: &Job,
    r: &Response,
    slot: &Slot,
    ps: u64,
    pe: u64,
) -> std::result::Result<bool, Stop> {
    let w = job.written();
    if r.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        if let Some((_, _, Some(0))) = content_range(r.headers()) {
            job.total.store(0, Ordering::Release);
            w.set_total(0);
            return Ok(true);
        }
    }
    if r.status() != StatusCode::PARTIAL_CONTENT {
        return Ok(false);
    }
    let Some((a, _, Some(t))) = content_range(r.headers()) else {
        return Ok(false);
    };
    if a != ps {
        return Ok(false);
    }
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
    slot.lock().end = pe.min(t);
    Ok(false)
}

/// Queues everything still missing besides the probe's range, in chunks.
/// Returns the bytes left to fetch.
fn schedule_rest(job: &Job, probe: &Probe) -> u64 {
    let total = job.total();
    let mut have = job.written().snapshot();
    have.add(probe.start, probe.end.min(total));
    let mut sc = lock(&job.sched);
    sc.pending = ranges::split(&have.missing(total), job.chunk).into();
    sc.slots.push(Arc::clone(&probe.slot));
    total.saturating_sub(have.covered())
}

/// Runs connections until no range is left or one fails (the first failure
/// is returned and stops the others), checkpointing the resume state,
/// re-issuing laggards and adapting the connection count meanwhile.
async fn supervise(
    job: &Arc<Job>,
    first: (Arc<Slot>, Response),
    remaining: u64,
    cancel: &AtomicBool,
) -> Option<Stop> {
    let mut set = JoinSet::new();
    let fixed = job.opts.connections;
    let max = fixed.unwrap_or(MAX_CONNECTIONS).max(1);
    let first_step = if remaining >= LARGE_START_CHUNKS * job.chunk {
        LARGE_START
    } else {
        2
    };
    // Adaptive: one connection first (see `Adapt`).
    let mut adapt = Adapt::new(first_step);
    let initial = fixed.unwrap_or(1).max(1);
    job.target_conns.store(initial, Ordering::Relaxed);
    spawn_connection(job, &mut set, Some(first));
    for _ in 1..initial {
        spawn_connection(job, &mut set, None);
    }
    let mut failure: Option<Stop> = None;
    let mut last_ckpt = Instant::now();
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(r) => note_failure(job, &mut failure, r),
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
            adapt_connections(job, &mut set, &mut adapt, max);
        }
        // A connection that ends while others still work leaves stealable
        // ranges; keep at least the target number busy.
        let work = !lock(&job.sched).pending.is_empty();
        if job.running.load(Ordering::Relaxed) == 0 && work {
            spawn_connection(job, &mut set, None);
        }
    }
    failure
}

/// Keeps the first failure of a connection and stops the others.
fn note_failure(
    job: &Job,
    failure: &mut Option<Stop>,
    r: std::result::Result<std::result::Result<(), Stop>, JoinError>,
) {
    let e = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(je) => Stop::Fatal(CoreError::Worker(format!("download task failed: {je}"))),
    };
    if failure.is_none() {
        *failure = Some(e);
        job.stop.store(true, Ordering::Relaxed);
    }
}

/// Moves the connection target as `adapt` says, and opens connections up
/// to it (never more than there are ranges to work on).
fn adapt_connections(job: &Arc<Job>, set: &mut Connections, adapt: &mut Adapt, max: usize) {
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
        spawn_connection(job, set, None);
        running += 1;
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
                    Err(Rejected::Retry(e)) => return Ok(Attempt::Retry(e, None)),
                    Err(Rejected::Stop(s)) => return Err(s),
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

fn spawn_connection(job: &Arc<Job>, set: &mut Connections, first: Option<(Arc<Slot>, Response)>) {
    let n = job.running.fetch_add(1, Ordering::AcqRel) + 1;
    job.max_running.fetch_max(n, Ordering::Relaxed);
    set.spawn(connection(Arc::clone(job), first));
}
