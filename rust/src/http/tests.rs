use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};

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
fn the_default_backoff_is_the_exported_constants() {
    // `_core.DEFAULT_RETRY_DELAY_MS` is what Python's config defaults to: the
    // engine must wait that long when the caller says nothing.
    let b = Backoff::default();
    assert_eq!(b.base, Duration::from_millis(DEFAULT_RETRY_DELAY_MS));
    assert_eq!(b.cap, MAX_RETRY_DELAY);
    // Python passes the default back as seconds: the same backoff results.
    let from_py = Backoff::with_base(Duration::from_secs_f64(
        DEFAULT_RETRY_DELAY_MS as f64 / 1000.0,
    ));
    assert_eq!((from_py.base, from_py.cap), (b.base, b.cap));
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
