//! The one HTTP stack of the library: a shared tokio runtime and reqwest
//! client (rustls, platform roots, proxies from the environment), manual
//! redirect following with per-host `Authorization`, and retry with backoff.
//!
//! Redirects are followed here rather than by reqwest so that the
//! credentials policy is ours: `Authorization` and `Cookie` go only to the
//! origin of the URL the caller gave, https -> http is refused, at most
//! `MAX_REDIRECTS` hops.
//!
//! One module per job: `client` (runtime and connection pool), `url`
//! (parsing, redaction, origins), `headers` (credentials bound to an
//! origin), `redirect` (sending with our redirect rules), `retry`
//! (classification and backoff) and `request` (whole-body requests).

mod client;
mod headers;
mod redirect;
mod request;
mod retry;
mod url;

pub use client::{client, runtime};
pub use headers::Headers;
pub use redirect::{send, MAX_REDIRECTS};
pub use request::{request, request_async, HttpResponse, RequestOptions};
pub use retry::{
    classify_reqwest, retry_after, retryable_status, sleep_cancellable, status_error, Backoff,
    Failure, DEFAULT_RETRY_DELAY_MS, MAX_RETRY_DELAY,
};
pub use url::{parse_url, redact, Origin};

#[cfg(test)]
mod tests;
