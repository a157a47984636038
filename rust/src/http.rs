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

/// Scheme, host and port of a URL: what credentials belong to (as in curl
/// and browsers). `localhost` and `127.0.0.1` are different origins, and so
/// are two ports of one host. Kept apart from the URL so that no path or
/// query (which may hold a signed token) is stored with the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: Option<String>,
    port: Option<u16>,
}

impl Origin {
    pub fn of(url: &Url) -> Self {
        Origin {
            scheme: url.scheme().to_string(),
            host: url.host_str().map(str::to_string),
            port: url.port_or_known_default(),
        }
    }

    pub fn matches(&self, url: &Url) -> bool {
        self.scheme == url.scheme()
            && self.host.as_deref() == url.host_str()
            && self.port == url.port_or_known_default()
    }
}

fn is_credential(name: &HeaderName) -> bool {
    name == reqwest::header::AUTHORIZATION
        || name == reqwest::header::COOKIE
        || name == reqwest::header::PROXY_AUTHORIZATION
}

/// Headers the caller passed, validated once. Credentials are kept apart,
/// bound to the origin of the URL the caller named when they were given:
/// every request, whatever URL it goes to (a redirect hop, or a later
/// request sent straight to a URL a redirect revealed), gets them only if
/// it goes to that origin. No caller can hand in another origin later.
#[derive(Clone, Debug)]
pub struct Headers {
    plain: HeaderMap,
    secret: HeaderMap,
    origin: Origin,
}

impl Headers {
    /// `origin_of` is the URL the caller asked for; its origin owns the
    /// credentials among `pairs`.
    pub fn new(pairs: &[(String, String)], origin_of: &Url) -> Result<Self> {
        let mut h = Headers {
            plain: HeaderMap::new(),
            secret: HeaderMap::new(),
            origin: Origin::of(origin_of),
        };
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| CoreError::InvalidArgument(format!("invalid header name {k:?}")))?;
            let mut value = HeaderValue::from_str(v).map_err(|_| {
                // Never echo the value: it may be a token.
                CoreError::InvalidArgument(format!("invalid value for header {k:?}"))
            })?;
            if is_credential(&name) {
                value.set_sensitive(true);
                h.secret.insert(name, value);
            } else {
                h.plain.insert(name, value);
            }
        }
        Ok(h)
    }

    /// The origin the credentials belong to.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The headers to send to `to`: credentials only if `to` is their origin.
    pub fn for_target(&self, to: &Url) -> HeaderMap {
        let mut m = self.plain.clone();
        if self.origin.matches(to) {
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
    /// A first retry that waits about `base` (jitter 50-100%), doubling up
    /// to 30 s, or to `base` itself when that is longer: the caller's
    /// `retry_delay` (caxton.yaml's `download.retry_delay_ms`).
    pub fn with_base(base: Duration) -> Self {
        let cap = Backoff::default().cap.max(base);
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
    fn backoff_base_is_the_callers() {
        let b = Backoff::with_base(Duration::from_secs(2));
        let d0 = b.delay(0, None);
        assert!(d0 >= Duration::from_secs(1) && d0 < Duration::from_secs(2));
        assert!(b.delay(20, None) <= Duration::from_secs(30));
        let long = Backoff::with_base(Duration::from_secs(60));
        assert!(long.delay(0, None) >= Duration::from_secs(30));
        assert_eq!(
            Backoff::with_base(Duration::ZERO).delay(3, None),
            Duration::ZERO
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

    fn secrets() -> Vec<(String, String)> {
        vec![
            ("Authorization".into(), "Bearer hf_SENTINEL".into()),
            ("Cookie".into(), "session=hf_SENTINEL".into()),
            ("Proxy-Authorization".into(), "Basic hf_SENTINEL".into()),
            ("X-Other".into(), "1".into()),
        ]
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn has_credentials(m: &HeaderMap) -> bool {
        let n = ["authorization", "cookie", "proxy-authorization"]
            .iter()
            .filter(|k| m.contains_key(**k))
            .count();
        assert!(n == 0 || n == 3, "credentials went partly: {m:?}");
        n == 3
    }

    #[test]
    fn credentials_only_to_their_origin() {
        let h = Headers::new(&secrets(), &url("https://hub.example/x?token=t")).unwrap();
        // Same origin: any path, explicit default port, upper-case host.
        for to in [
            "https://hub.example/x",
            "https://hub.example/other/path?q=1",
            "https://hub.example:443/x",
            "https://HUB.example/x",
        ] {
            assert!(has_credentials(&h.for_target(&url(to))), "{to}");
        }
        // Another host, a subdomain, another port, another scheme.
        for to in [
            "https://cdn.example/y",
            "https://cdn.hub.example/x",
            "https://hub.example:8443/x",
            "http://hub.example/x",
            "http://hub.example:443/x",
        ] {
            let m = h.for_target(&url(to));
            assert!(!has_credentials(&m), "{to}");
            assert!(m.contains_key("x-other"), "{to}");
            assert_eq!(m["accept-encoding"], "identity");
        }
    }

    #[test]
    fn same_host_other_port_and_localhost_are_other_origins() {
        let h = Headers::new(&secrets(), &url("http://127.0.0.1:8000/a")).unwrap();
        assert!(has_credentials(
            &h.for_target(&url("http://127.0.0.1:8000/b"))
        ));
        for to in [
            "http://127.0.0.1:8001/a",
            "http://localhost:8000/a",
            "https://127.0.0.1:8000/a",
            "http://127.0.0.2:8000/a",
            "http://[::1]:8000/a",
        ] {
            assert!(!has_credentials(&h.for_target(&url(to))), "{to}");
        }
        let h = Headers::new(&secrets(), &url("http://localhost:8000/a")).unwrap();
        assert!(!has_credentials(
            &h.for_target(&url("http://127.0.0.1:8000/a"))
        ));
        // The origin kept with the credentials holds no path or query.
        let h = Headers::new(&secrets(), &url("http://u:pw@h:1/p?token=SECRETQ")).unwrap();
        let dbg = format!("{h:?}");
        assert!(!dbg.contains("SECRETQ") && !dbg.contains("pw") && !dbg.contains("hf_SENTINEL"));
    }

    /// Sends `GET start` with the sentinel credentials bound to `origin`
    /// and returns the final status.
    fn send_from(origin: &str, start: &str, extra: &HeaderMap) -> u16 {
        let h = Headers::new(&secrets(), &url(origin)).unwrap();
        let start = url(start);
        let fut = send(&Method::GET, &start, &h, extra, true, None);
        match runtime().unwrap().block_on(fut) {
            Ok(r) => r.status().as_u16(),
            Err(f) => panic!("{:?}", f.into_error()),
        }
    }

    fn with_auth(seen: &[Seen]) -> Vec<(String, bool)> {
        seen.iter()
            .map(|s| {
                assert_eq!(s.has("authorization"), s.has("cookie"), "{s:?}");
                (s.path.clone(), s.has("authorization"))
            })
            .collect()
    }

    use crate::download::testserver::{Route, Seen, Server};

    #[test]
    fn redirect_chain_drops_credentials_and_regains_them_only_at_home() {
        let (a, b) = (Server::bind(), Server::bind());
        let (a_url, b_url) = (a.url(""), b.url(""));
        let a = a.start(vec![
            ("/start", Route::Redirect(format!("{b_url}/hop"))),
            ("/home", Route::Bytes(b"ok".to_vec())),
            ("/away", Route::Redirect(format!("{b_url}/file"))),
        ]);
        let b = b.start(vec![
            ("/hop", Route::Redirect(format!("{a_url}/home"))),
            ("/file", Route::Bytes(b"ok".to_vec())),
        ]);
        // A -> B -> A: the final request is to the original origin again.
        assert_eq!(
            send_from(&a.url("/start"), &a.url("/start"), &HeaderMap::new()),
            200
        );
        assert_eq!(
            with_auth(&a.seen()),
            [("/start".into(), true), ("/home".into(), true)]
        );
        assert_eq!(with_auth(&b.seen()), [("/hop".into(), false)]);
        // A -> B ending at B: B never sees them.
        assert_eq!(
            send_from(&a.url("/start"), &a.url("/away"), &HeaderMap::new()),
            200
        );
        assert!(with_auth(&b.seen()).iter().all(|(_, auth)| !auth));
        assert_eq!(b.seen().len(), 2);
    }

    #[test]
    fn request_sent_straight_to_a_redirect_target_gets_no_credentials() {
        // What the download engine does after its first request: it sends
        // the Range requests to the URL the redirect revealed. The owner of
        // the credentials stays the origin the caller named.
        let b = Server::bind().start(vec![("/file", Route::Bytes(b"ok".to_vec()))]);
        let mut extra = HeaderMap::new();
        extra.insert(
            reqwest::header::RANGE,
            HeaderValue::from_static("bytes=0-0"),
        );
        // Credentials smuggled in the per-request headers are dropped too.
        extra.insert(
            reqwest::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer hf_SENTINEL_extra"),
        );
        assert_eq!(
            send_from("http://127.0.0.1:1/x", &b.url("/file"), &extra),
            206
        );
        let seen = b.seen();
        assert_eq!(with_auth(&seen), [("/file".into(), false)]);
        assert!(seen[0].has("range"));
    }

    #[test]
    fn localhost_is_not_127_0_0_1() {
        let a = Server::bind();
        let to_localhost = a.url_at("localhost", "/file");
        let a = a.start(vec![
            ("/start", Route::Redirect(to_localhost)),
            ("/file", Route::Bytes(b"ok".to_vec())),
        ]);
        assert_eq!(
            send_from(&a.url("/start"), &a.url("/start"), &HeaderMap::new()),
            200
        );
        assert_eq!(
            with_auth(&a.seen()),
            [("/start".into(), true), ("/file".into(), false)]
        );
    }
}
