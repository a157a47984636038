//! Whether a response can be written into the file: the status, strong ETag,
//! `Content-Range`, `Content-Length` and `Content-Encoding` checks. They work
//! on the status and headers alone, so each rejection is testable without a
//! server; [`check_range_response`] applies them to a live response.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode, Url};

use super::hasher::UNKNOWN;
use super::job::{lock, Job, Stop};
use crate::error::CoreError;
use crate::http;

/// A range response that must not be streamed into the file.
pub(super) enum Rejected {
    /// Worth another attempt at the same range (a wrong Content-Range,
    /// reported as `Incomplete` if it persists).
    Retry(CoreError),
    Stop(Stop),
}

/// After this many responses with a wrong Content-Range, ranges from this
/// server are not trusted: restart as one plain stream.
const BAD_RANGES_BEFORE_PLAIN: u64 = 3;

pub fn strong_etag(h: &HeaderMap) -> Option<String> {
    let v = h.get(reqwest::header::ETAG)?.to_str().ok()?.trim();
    (v.starts_with('"') && v.len() >= 2).then(|| v.to_string())
}

/// Parses `bytes a-b/total` (total may be `*`).
pub fn content_range(h: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let v = h.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    if range == "*" {
        return Some((0, 0, total))
            .filter(|_| total.is_some())
            .map(|(a, _, t)| (a, u64::MAX, t));
    }
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b, total))
}

/// We asked for `identity`; an encoded body's bytes and lengths are not the
/// file's, so it cannot be written (or resumed) by offset.
pub(super) fn encoded(h: &HeaderMap, url: &Url) -> Option<Stop> {
    let enc = h
        .get(reqwest::header::CONTENT_ENCODING)?
        .to_str()
        .unwrap_or("?")
        .trim();
    if enc.is_empty() || enc.eq_ignore_ascii_case("identity") {
        return None;
    }
    Some(Stop::Fatal(CoreError::Network {
        url: http::redact(url.as_str()),
        msg: format!(
            "server sent Content-Encoding {enc:?} although we asked for identity; \
             the bytes would not be the file's. Use another mirror or endpoint"
        ),
    }))
}

/// A missing, negative or junk length is unknown, not an error.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Checks the status and headers of a response to `Range: start-...`, given
/// the file's `total` size (or UNKNOWN) and the ETag we hold. `bad_ranges`
/// counts wrong Content-Ranges over the whole download.
pub(super) fn check_range(
    status: StatusCode,
    h: &HeaderMap,
    url: &Url,
    start: u64,
    total: u64,
    known_etag: Option<&str>,
    bad_ranges: &AtomicU64,
) -> Result<(), Rejected> {
    if status.is_success() {
        if let Some(stop) = encoded(h, url) {
            return Err(Rejected::Stop(stop));
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        match content_range(h) {
            Some((a, _, Some(t))) if a == start && (total == UNKNOWN || t == total) => {}
            _ => return Err(bad_range(h, url, start, bad_ranges)),
        }
        if let (Some(a), Some(b)) = (strong_etag(h), known_etag) {
            if a != b {
                return Err(restart(
                    "the file changed on the server (ETag differs)",
                    false,
                ));
            }
        }
        return Ok(());
    }
    if status == StatusCode::OK {
        return Err(restart("server ignored the Range header", true));
    }
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Err(restart(
            "server says the range is not satisfiable (file changed?)",
            false,
        ));
    }
    Err(Rejected::Stop(Stop::Fatal(http::status_error(status, url))))
}

fn restart(why: &str, no_ranges: bool) -> Rejected {
    Rejected::Stop(Stop::Restart {
        why: why.into(),
        plain: None,
        no_ranges,
    })
}

fn bad_range(h: &HeaderMap, url: &Url, start: u64, bad_ranges: &AtomicU64) -> Rejected {
    let n = bad_ranges.fetch_add(1, Ordering::Relaxed) + 1;
    let why = format!(
        "server sent Content-Range {:?} for a request starting at {start}",
        h.get(reqwest::header::CONTENT_RANGE)
    );
    if n >= BAD_RANGES_BEFORE_PLAIN {
        return Rejected::Stop(Stop::Restart {
            why,
            plain: None,
            no_ranges: true,
        });
    }
    Rejected::Retry(CoreError::Incomplete {
        url: http::redact(url.as_str()),
        have: 0,
        total: 0,
        msg: why,
    })
}

/// [`check_range`] on a live response of `job`. A 200 (Range ignored) is
/// handed back inside the restart: its body is the whole file.
pub(super) fn check_range_response(
    job: &Job,
    resp: Response,
    start: u64,
) -> Result<Response, Rejected> {
    let status = resp.status();
    let known = lock(&job.etag).clone();
    let verdict = check_range(
        status,
        resp.headers(),
        resp.url(),
        start,
        job.total(),
        known.as_deref(),
        &job.bad_ranges,
    );
    match verdict {
        Ok(()) => Ok(resp),
        Err(Rejected::Stop(Stop::Restart { why, no_ranges, .. })) if status == StatusCode::OK => {
            Err(Rejected::Stop(Stop::Restart {
                why,
                plain: Some(Box::new(resp)),
                no_ranges,
            }))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn url() -> Url {
        Url::parse("https://cdn.example/blob?X-Amz-Signature=SECRET").unwrap()
    }

    fn check(
        status: u16,
        h: &HeaderMap,
        start: u64,
        total: u64,
        etag: Option<&str>,
    ) -> Result<(), Rejected> {
        let bad = AtomicU64::new(0);
        let status = StatusCode::from_u16(status).unwrap();
        check_range(status, h, &url(), start, total, etag, &bad)
    }

    fn restart_of(r: Result<(), Rejected>) -> (String, bool) {
        match r {
            Err(Rejected::Stop(Stop::Restart {
                why,
                no_ranges,
                plain,
            })) => {
                assert!(plain.is_none());
                (why, no_ranges)
            }
            Err(Rejected::Stop(Stop::Fatal(e))) => panic!("fatal: {e}"),
            Err(Rejected::Retry(e)) => panic!("retry: {e}"),
            Err(Rejected::Stop(Stop::Cancelled)) => panic!("cancelled"),
            Ok(()) => panic!("accepted"),
        }
    }

    #[test]
    fn accepts_the_range_asked_for() {
        let h = headers(&[("content-range", "bytes 100-199/1000"), ("etag", "\"v1\"")]);
        assert!(check(206, &h, 100, 1000, Some("\"v1\"")).is_ok());
        // Size not known yet; no ETag held yet; a weak ETag never compares.
        assert!(check(206, &h, 100, UNKNOWN, None).is_ok());
        let weak = headers(&[("content-range", "bytes 0-9/10"), ("etag", "W/\"x\"")]);
        assert!(check(206, &weak, 0, 10, Some("\"v1\"")).is_ok());
        let identity = headers(&[
            ("content-range", "bytes 0-9/10"),
            ("content-encoding", "identity"),
        ]);
        assert!(check(206, &identity, 0, 10, None).is_ok());
    }

    #[test]
    fn wrong_or_missing_content_range_is_retried_then_ends_ranges() {
        for (h, start, total) in [
            (
                headers(&[("content-range", "bytes 1124-2147/5000")]),
                100,
                5000,
            ),
            (headers(&[]), 0, 5000),
            (headers(&[("content-range", "bytes 0-99/*")]), 0, 5000),
            (headers(&[("content-range", "bytes 0-99/4000")]), 0, 5000),
            (headers(&[("content-range", "junk")]), 0, 5000),
            (headers(&[("content-range", "bytes 99-0/5000")]), 99, 5000),
        ] {
            let bad = AtomicU64::new(0);
            let go = || {
                let s = StatusCode::PARTIAL_CONTENT;
                check_range(s, &h, &url(), start, total, None, &bad)
            };
            for _ in 1..BAD_RANGES_BEFORE_PLAIN {
                match go() {
                    Err(Rejected::Retry(CoreError::Incomplete { url, msg, .. })) => {
                        assert!(msg.contains(&format!("starting at {start}")), "{msg}");
                        assert!(!url.contains("SECRET"), "{url}");
                    }
                    _ => panic!("{h:?} was not retried"),
                }
            }
            let (why, no_ranges) = restart_of(go());
            assert!(no_ranges && why.contains("Content-Range"), "{why}");
        }
    }

    #[test]
    fn ignored_range_and_416_restart() {
        let (why, no_ranges) = restart_of(check(200, &headers(&[]), 0, 10, None));
        assert!(no_ranges && why.contains("ignored"), "{why}");
        let (_, no_ranges) = restart_of(check(416, &headers(&[]), 50, 10, None));
        assert!(!no_ranges);
    }

    #[test]
    fn changed_etag_restarts() {
        let h = headers(&[("content-range", "bytes 0-9/10"), ("etag", "\"v2\"")]);
        let (why, no_ranges) = restart_of(check(206, &h, 0, 10, Some("\"v1\"")));
        assert!(!no_ranges && why.contains("ETag"), "{why}");
    }

    #[test]
    fn encoded_body_is_refused() {
        for status in [200, 206] {
            let h = headers(&[
                ("content-range", "bytes 0-9/10"),
                ("content-encoding", "gzip"),
            ]);
            match check(status, &h, 0, 10, None) {
                Err(Rejected::Stop(Stop::Fatal(CoreError::Network { msg, url }))) => {
                    assert!(msg.contains("gzip"), "{msg}");
                    assert!(!url.contains("SECRET"));
                }
                _ => panic!("gzip accepted with {status}"),
            }
        }
        assert!(encoded(&headers(&[("content-encoding", "br")]), &url()).is_some());
        assert!(encoded(&headers(&[("content-encoding", "")]), &url()).is_none());
        assert!(encoded(&headers(&[]), &url()).is_none());
    }

    #[test]
    fn other_statuses_are_fatal() {
        for (status, access) in [(401, true), (403, true), (404, false), (302, false)] {
            match check(status, &headers(&[]), 0, 10, None) {
                Err(Rejected::Stop(Stop::Fatal(e))) => {
                    assert_eq!(matches!(e, CoreError::AccessDenied { .. }), access, "{e}");
                }
                _ => panic!("{status} not fatal"),
            }
        }
    }

    #[test]
    fn lengths_and_etags_parse_strictly() {
        assert_eq!(
            content_length(&headers(&[("content-length", "42")])),
            Some(42)
        );
        for bad in ["-1", "junk", "", "1e3", "18446744073709551616"] {
            let mut h = HeaderMap::new();
            h.insert("content-length", HeaderValue::from_str(bad).unwrap());
            assert_eq!(content_length(&h), None, "{bad:?}");
        }
        assert_eq!(content_length(&headers(&[])), None);
        assert_eq!(
            strong_etag(&headers(&[("etag", " \"abc\" ")])),
            Some("\"abc\"".into())
        );
        for weak in ["W/\"abc\"", "abc", "\""] {
            let mut h = HeaderMap::new();
            h.insert("etag", HeaderValue::from_str(weak).unwrap());
            assert_eq!(strong_etag(&h), None, "{weak}");
        }
    }

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert("content-range", HeaderValue::from_static("bytes 0-99/1000"));
        assert_eq!(content_range(&h), Some((0, 99, Some(1000))));
        h.insert("content-range", HeaderValue::from_static("bytes 5-9/*"));
        assert_eq!(content_range(&h), Some((5, 9, None)));
        h.insert("content-range", HeaderValue::from_static("bytes */0"));
        assert_eq!(content_range(&h), Some((0, u64::MAX, Some(0))));
        for bad in [
            "bytes 9-5/10",
            "bytes x-1/2",
            "items 0-1/2",
            "bytes 0-1",
            "bytes */*",
            "bytes -1-5/10",
            "bytes 0-1/-5",
        ] {
            h.insert("content-range", HeaderValue::from_static(bad));
            assert_eq!(content_range(&h), None, "{bad}");
        }
    }
}
