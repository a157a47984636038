//! How the engine talks to the server. [`Job::get`] is the only place a
//! request is sent from: probes, Range requests, retries, resumes and the
//! plain stream all go through it, and it passes the job's `Headers`, whose
//! credentials are bound to the origin of the caller's URL (never to the
//! redirect target the requests go to). Bodies are read in chunks under the
//! stall timeout.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Response};

use super::job::{lock, Job, Slot};
use crate::error::CoreError;
use crate::http::{self, Failure};

pub(super) const TICK: Duration = Duration::from_millis(50);

impl Job {
    /// The one way the engine sends a request: a GET to the current target
    /// with `extra` (Range, If-Range), under the stall timeout for the
    /// response headers. Credentials follow `self.headers`, which are bound
    /// to the caller's origin, so a target on another origin never gets them.
    pub(super) async fn get(&self, extra: &HeaderMap) -> Sent {
        self.ranges.fetch_add(1, Ordering::Relaxed);
        let target = lock(&self.target).clone();
        let fut = http::send(&Method::GET, &target, &self.headers, extra, true, None);
        match tokio::time::timeout(self.opts.timeout, fut).await {
            Err(_) => Sent::NoResponse,
            Ok(Err(f)) => Sent::Failed(f),
            Ok(Ok(r)) => Sent::Response(r),
        }
    }

    pub(super) fn extra_headers(&self, start: u64, end: u64) -> HeaderMap {
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
pub(super) enum Sent {
    /// No response headers within the stall timeout.
    NoResponse,
    Failed(Failure),
    Response(Response),
}

/// Result of one attempt at a slot.
pub(super) enum Attempt {
    Done,
    Aborted,
    Retry(CoreError, Option<Duration>),
}

pub(super) async fn next_chunk(
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
