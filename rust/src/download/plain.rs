//! The single-stream phase for servers without usable ranges: one plain
//! GET, written from byte 0. Retries start over from 0 (never append).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};

use super::hasher::UNKNOWN;
use super::job::{io_err, prepare_file, reset, Job, Slot, Stop};
use super::request::{next_chunk, Attempt, Sent};
use super::response::{content_length, encoded};
use crate::error::CoreError;
use crate::http::{self, Failure};

/// Runs plain attempts until one has the whole file. `pre` is a 200 the
/// range phase already received (its body is the file).
pub(super) async fn plain_phase(
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

impl From<Stop> for PlainErr {
    fn from(s: Stop) -> Self {
        PlainErr::Stop(s)
    }
}

async fn plain_attempt(
    job: &Arc<Job>,
    pre: Option<Response>,
    cancel: &AtomicBool,
) -> std::result::Result<(), PlainErr> {
    let resp = match pre {
        Some(r) => r,
        None => request(job).await?,
    };
    let limit = check(job, &resp)?;
    if let Some(t) = limit {
        prepare_file(job, t)?;
    }
    stream(job, resp, limit, cancel).await
}

/// The plain GET, through the one send path of the job.
async fn request(job: &Job) -> std::result::Result<Response, PlainErr> {
    match job.get(&HeaderMap::new()).await {
        Sent::NoResponse => Err(PlainErr::Retry(
            CoreError::Timeout {
                url: job.redacted(),
                msg: "no response".into(),
            },
            None,
        )),
        Sent::Failed(Failure::Fatal(e)) => Err(PlainErr::Stop(Stop::Fatal(e))),
        Sent::Failed(Failure::Transient { err, retry_after }) => {
            Err(PlainErr::Retry(err, retry_after))
        }
        Sent::Response(r) => Ok(r),
    }
}

/// Checks status, encoding and declared length. Returns the size the body
/// must have, if known (the expected size wins over Content-Length).
fn check(job: &Job, resp: &Response) -> std::result::Result<Option<u64>, PlainErr> {
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
    if let Some(stop) = encoded(resp.headers(), resp.url()) {
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
    Ok(job.opts.size.or(declared))
}

/// Writes the body from byte 0, never past `limit`; at its end the file's
/// size is what arrived.
async fn stream(
    job: &Arc<Job>,
    mut resp: Response,
    limit: Option<u64>,
    cancel: &AtomicBool,
) -> std::result::Result<(), PlainErr> {
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
