//! Whether a failure is worth another attempt, and how long to wait first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};

use super::url::redact;
use crate::error::{CoreError, Result};

/// How often blocking waits wake up to look at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Why one attempt failed, and whether another attempt may help.
#[derive(Debug)]
pub enum Failure {
    /// Worth retrying: connection problems, timeouts, 408/429/5xx.
    Transient {
        err: CoreError,
        retry_after: Option<Duration>,
    },
    /// Not worth retrying.
    Fatal(CoreError),
}

impl Failure {
    pub fn into_error(self) -> CoreError {
        match self {
            Failure::Transient { err, .. } | Failure::Fatal(err) => err,
        }
    }
}

pub fn classify_reqwest(e: &reqwest::Error, url: &Url) -> CoreError {
    let url = redact(url.as_str());
    // The Display of a reqwest error may embed the URL; describe it ourselves.
    let mut msg = String::new();
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let part = s.to_string();
        if !msg.contains(&part) && !part.contains("://") {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&part);
        }
        src = s.source();
    }
    if msg.is_empty() {
        msg = "request failed".into();
    }
    if e.is_timeout() {
        CoreError::Timeout { url, msg }
    } else {
        CoreError::Network { url, msg }
    }
}

pub fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// `Retry-After` as seconds or an HTTP date; capped so a hostile server
/// cannot park us for hours.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(SystemTime::now()).unwrap_or_default()
    };
    Some(d.min(Duration::from_secs(120)))
}

/// Error for a non-success status that will not be retried (or ran out of retries).
pub fn status_error(status: StatusCode, url: &Url) -> CoreError {
    let code = status.as_u16();
    let url = redact(url.as_str());
    match code {
        401 | 403 => CoreError::AccessDenied {
            status: code,
            url,
            hint: "the file is private or gated: pass a token with access (HF_TOKEN) or request access".into(),
        },
        404 => CoreError::Http {
            status: code,
            url,
            hint: "not found: check the repository, revision and file name".into(),
        },
        _ if retryable_status(status) => CoreError::Http {
            status: code,
            url,
            hint: "the server kept failing after all retries; try again later or use a mirror".into(),
        },
        _ => CoreError::Http {
            status: code,
            url,
            hint: status.canonical_reason().unwrap_or("unexpected status").to_string(),
        },
    }
}

/// The first retry's wait by default, in milliseconds. Exported to Python as
/// `_core.DEFAULT_RETRY_DELAY_MS`: caxton.yaml's `download.retry_delay_ms`
/// defaults to it rather than restating it.
pub const DEFAULT_RETRY_DELAY_MS: u64 = 500;
/// The longest wait between two attempts (unless the caller's first wait is
/// longer, or a server's Retry-After asks for more).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter: attempt 0 waits ~base, doubling up to
/// `cap`; a server's Retry-After wins when it asks for longer.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        // With 8 retries the waits add up to 45-90 s: a 30 s outage is survived.
        Backoff {
            base: Duration::from_millis(DEFAULT_RETRY_DELAY_MS),
            cap: MAX_RETRY_DELAY,
        }
    }
}

impl Backoff {
    /// A first retry that waits about `base` (jitter 50-100%), doubling up
    /// to `MAX_RETRY_DELAY`, or to `base` itself when that is longer: the
    /// caller's `retry_delay` (caxton.yaml's `download.retry_delay_ms`).
    pub fn with_base(base: Duration) -> Self {
        let cap = MAX_RETRY_DELAY.max(base);
        Backoff { base, cap }
    }

    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        // Jitter in [0.5, 1.0) so that parallel connections do not retry in lockstep.
        let d = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            Some(ra) if ra > d => ra,
            _ => d,
        }
    }
}

/// Sleeps `d`, waking to check `cancel`. Returns Err(Cancelled) if set.
pub async fn sleep_cancellable(d: Duration, cancel: &AtomicBool) -> Result<()> {
    let end = tokio::time::Instant::now() + d;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(CoreError::Cancelled);
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep((end - now).min(CANCEL_POLL)).await;
    }
}
