//! Range-response headers as a hostile server sends them: Content-Range,
//! Content-Length, ETag and the whole check of a 206/200/416. Property: no
//! panic, and an accepted Content-Range is well formed.
#![no_main]

use _core::download::fuzzing::{check_range, content_length, content_range, strong_etag};
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (head, rest) = data.split_at(10);
    let status = 100 + u16::from_le_bytes([head[0], head[1]]) % 500;
    let start = u64::from_le_bytes(head[2..10].try_into().unwrap_or([0; 8])) % (1 << 40);
    let mut parts = rest.splitn(4, |&b| b == b'\n');
    let mut h = HeaderMap::new();
    for name in [
        "content-range",
        "content-length",
        "etag",
        "content-encoding",
    ] {
        if let Some(v) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            h.insert(name, v);
        }
    }
    if let Some((a, b, total)) = content_range(&h) {
        assert!(a <= b);
        if b == u64::MAX {
            assert!(total.is_some()); // only "bytes */N" yields the open form
        }
    }
    let _ = content_length(&h);
    if let Some(e) = strong_etag(&h) {
        assert!(e.starts_with('"'));
    }
    let _ = check_range(status, &h, start, 1 << 30, Some("\"v1\""));
});
