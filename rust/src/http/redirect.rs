//! One request sent, following redirects by our rules: credentials only to
//! their origin, no https -> http, at most `MAX_REDIRECTS` hops.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode, Url};

use super::client::client;
use super::headers::{is_credential, Headers};
use super::retry::{classify_reqwest, Failure};
use super::url::redact;
use crate::error::CoreError;

pub const MAX_REDIRECTS: usize = 10;

/// Sends one request to `url`, following redirects by our rules. Credentials
/// in `headers` go to each hop only if it is at their origin. Returns the
/// final response (any status) and its URL. Connection failures are `Transient`.
pub async fn send(
    method: &Method,
    url: &Url,
    headers: &Headers,
    extra: &HeaderMap,
    follow_redirects: bool,
    timeout: Option<Duration>,
) -> std::result::Result<Response, Failure> {
    let client = client().map_err(Failure::Fatal)?;
    let mut current = url.clone();
    let mut method = method.clone();
    for hop in 0..=MAX_REDIRECTS {
        // The origin comes from `headers`, never from `url`: a caller that
        // sends straight to a URL a redirect revealed must not make that
        // URL's origin the owner of the credentials.
        let mut h = headers.for_target(&current);
        // `extra` is per request (Range, If-Range); credentials never come
        // this way, or they would bypass the origin check above.
        for (k, v) in extra {
            if !is_credential(k) {
                h.insert(k.clone(), v.clone());
            }
        }
        let mut req = client.request(method.clone(), current.clone()).headers(h);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| Failure::Transient {
            err: classify_reqwest(&e, &current),
            retry_after: None,
        })?;
        let status = resp.status();
        if !follow_redirects || !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let Some(loc) = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(resp);
        };
        let next = current.join(loc).map_err(|_| {
            Failure::Fatal(CoreError::Redirect {
                from: redact(current.as_str()),
                to: "<unparseable Location>".into(),
                why: "the Location header is not a URL".into(),
            })
        })?;
        let refuse = |why: &str| {
            Failure::Fatal(CoreError::Redirect {
                from: redact(current.as_str()),
                to: redact(next.as_str()),
                why: why.into(),
            })
        };
        if next.scheme() != "http" && next.scheme() != "https" {
            return Err(refuse("only http and https are followed"));
        }
        if current.scheme() == "https" && next.scheme() == "http" {
            return Err(refuse("https to http downgrade"));
        }
        if hop == MAX_REDIRECTS {
            return Err(refuse("more than 10 redirects"));
        }
        if status == StatusCode::SEE_OTHER && method != Method::HEAD {
            method = Method::GET;
        }
        current = next;
    }
    unreachable!("loop returns on the last hop")
}
