//! Fully read requests (API JSON, HEAD metadata) with retries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use super::client::runtime;
use super::headers::Headers;
use super::redirect::send;
use super::retry::{
    classify_reqwest, retry_after, retryable_status, sleep_cancellable, status_error, Backoff,
    Failure,
};
use super::url::{parse_url, redact};
use crate::error::{CoreError, Result};

/// A fully read response, for API JSON and metadata (HEAD) requests.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub url: String,
}

#[derive(Clone, Debug)]
pub struct RequestOptions {
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub retries: u32,
    pub follow_redirects: bool,
    pub max_bytes: u64,
    pub backoff: Backoff,
}

fn header_map_to_btree(h: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        out.entry(k.as_str().to_string())
            .and_modify(|old: &mut String| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

async fn request_once(
    method: &Method,
    url: &Url,
    headers: &Headers,
    opts: &RequestOptions,
) -> std::result::Result<HttpResponse, Failure> {
    let mut resp = send(
        method,
        url,
        headers,
        &HeaderMap::new(),
        opts.follow_redirects,
        Some(opts.timeout),
    )
    .await?;
    let status = resp.status();
    let final_url = resp.url().clone();
    if retryable_status(status) {
        return Err(Failure::Transient {
            err: status_error(status, &final_url),
            retry_after: retry_after(resp.headers()),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Failure::Transient {
        err: classify_reqwest(&e, &final_url),
        retry_after: None,
    })? {
        if body.len() as u64 + chunk.len() as u64 > opts.max_bytes {
            return Err(Failure::Fatal(CoreError::Network {
                url: redact(final_url.as_str()),
                msg: format!(
                    "response body larger than max_bytes={}; refusing to buffer it",
                    opts.max_bytes
                ),
            }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status: status.as_u16(),
        headers: header_map_to_btree(resp.headers()),
        body,
        url: final_url.to_string(),
    })
}

/// One HTTP request with retries (408/429/5xx and connection errors).
/// Other 4xx statuses are returned, not raised, so callers can read them.
pub async fn request_async(
    method: &str,
    url: &str,
    opts: &RequestOptions,
    cancel: &AtomicBool,
) -> Result<HttpResponse> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| CoreError::InvalidArgument(format!("invalid HTTP method {method:?}")))?;
    let url = parse_url(url)?;
    let headers = Headers::new(&opts.headers, &url)?;
    let mut attempt = 0u32;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(CoreError::Cancelled);
        }
        match request_once(&method, &url, &headers, opts).await {
            Ok(r) => return Ok(r),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient { err, retry_after }) => {
                if attempt >= opts.retries {
                    return Err(err);
                }
                sleep_cancellable(opts.backoff.delay(attempt, retry_after), cancel).await?;
                attempt += 1;
            }
        }
    }
}

/// Blocking wrapper around [`request_async`] on the shared runtime.
pub fn request(
    method: &str,
    url: &str,
    opts: &RequestOptions,
    cancel: &AtomicBool,
) -> Result<HttpResponse> {
    runtime()?.block_on(request_async(method, url, opts, cancel))
}
