//! The one HTTP stack of the library: a shared tokio runtime and reqwest
//! client (rustls, platform roots, proxies from the environment), manual
//! redirect following with per-host `Authorization`, and retry with backoff.
//!
//! Redirects are followed here rather than by reqwest so that the
//! credentials policy is ours: `Authorization` and `Cookie` go only to the
//! origin of the URL the caller gave, https -> http is refused, at most
//! `MAX_REDIRECTS` hops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Response, StatusCode, Url};

use crate::error::{CoreError, Result};

pub const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = concat!("caxton-models/", env!("CARGO_PKG_VERSION"));
/// How often blocking waits wake up to look at the cancel flag.
pub(crate) const CANCEL_POLL: Duration = Duration::from_millis(100);

static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
static CLIENT: OnceLock<std::result::Result<Client, String>> = OnceLock::new();

/// The shared multi-threaded runtime (built once per process).
pub fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("caxton-net")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| CoreError::Worker(format!("cannot start the network runtime: {e}")))
}

/// The shared client: one connection pool for every request of the process.
pub fn client() -> Result<&'static Client> {
    CLIENT
        .get_or_init(|| {
            // reqwest is built without a default crypto provider; install ring
            // unless the embedding process already installed one.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Client::builder()
                .user_agent(USER_AGENT)
                .redirect(reqwest::redirect::Policy::none())
                .http1_only()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| CoreError::Worker(format!("cannot build the HTTP client: {e}")))
}

/// A URL safe to print: no userinfo, no query (signed URLs carry secrets there).
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("<redacted>"));
            }
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

pub fn parse_url(url: &str) -> Result<Url> {
    let u = Url::parse(url)
        .map_err(|e| CoreError::InvalidArgument(format!("invalid URL {}: {e}", redact(url))))?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        s => Err(CoreError::InvalidArgument(format!(
            "unsupported URL scheme {s:?} in {}: use http or https",
            redact(url)
        ))),
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Headers the caller passed, validated once. Credentials are kept apart so
/// they can be dropped when a redirect leaves the origin they belong to.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    plain: HeaderMap,
    secret: HeaderMap,
}

impl Headers {
    pub fn new(pairs: &[(String, String)]) -> Result<Self> {
        let mut h = Headers::default();
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| CoreError::InvalidArgument(format!("invalid header name {k:?}")))?;
            let mut value = HeaderValue::from_str(v).map_err(|_| {
                // Never echo the value: it may be a token.
                CoreError::InvalidArgument(format!("invalid value for header {k:?}"))
            })?;
            let secret = name == reqwest::header::AUTHORIZATION
                || name == reqwest::header::COOKIE
                || name == reqwest::header::PROXY_AUTHORIZATION;
            if secret {
                value.set_sensitive(true);
                h.secret.insert(name, value);
            } else {
                h.plain.insert(name, value);
            }
        }
        Ok(h)
    }

    /// The headers to send to `to`, given that credentials belong to `origin`.
    fn for_target(&self, origin: &Url, to: &Url) -> HeaderMap {
        let mut m = self.plain.clone();
        if same_origin(origin, to) {
            for (k, v) in &self.secret {
                m.insert(k.clone(), v.clone());
            }
        }
        if !m.contains_key(reqwest::header::ACCEPT_ENCODING) {
            // We hash the bytes as stored: never let a proxy or CDN compress them.
            m.insert(
                reqwest::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        m
    }
}

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
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
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

/// Sends one request, following redirects by our rules. Returns the final
/// response (any status) and its URL. Connection failures are `Transient`.
pub async fn send(
    method: &Method,
    url: &Url,
    headers: &Headers,
    extra: &HeaderMap,
    follow_redirects: bool,
    timeout: Option<Duration>,
) -> std::result::Result<Response, Failure> {
    let client = client().map_err(Failure::Fatal)?;
    let origin = url.clone();
    let mut current = url.clone();
    let mut method = method.clone();
    for hop in 0..=MAX_REDIRECTS {
        let mut h = headers.for_target(&origin, &current);
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
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
    let headers = Headers::new(&opts.headers)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_strips_secrets() {
        let r = redact("https://user:pw@example.com/a/b?X-Amz-Signature=abc&token=t#frag");
        assert!(!r.contains("pw") && !r.contains("abc") && !r.contains("user"));
        assert!(r.starts_with("https://example.com/a/b"));
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let b = Backoff::default();
        let d0 = b.delay(0, None);
        assert!(d0 >= Duration::from_millis(250) && d0 < Duration::from_millis(500));
        assert!(b.delay(20, None) <= Duration::from_secs(30));
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let future = SystemTime::now() + Duration::from_secs(60);
        let date = httpdate::fmt_http_date(future);
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(&date).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(55) && d <= Duration::from_secs(60));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("junk"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn credentials_only_to_their_origin() {
        let h = Headers::new(&[
            ("Authorization".into(), "Bearer hf_SENTINEL".into()),
            ("X-Other".into(), "1".into()),
        ])
        .unwrap();
        let a = Url::parse("https://hub.example/x").unwrap();
        let b = Url::parse("https://cdn.example/y").unwrap();
        assert!(h.for_target(&a, &a).contains_key("authorization"));
        let m = h.for_target(&a, &b);
        assert!(!m.contains_key("authorization"));
        assert!(m.contains_key("x-other"));
        assert_eq!(m["accept-encoding"], "identity");
    }
}
