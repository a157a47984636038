//! What a caller asks of a download and what it gets back: options, the
//! report, the items of `download_many`, and their validation.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{CoreError, Result};
use crate::http::Backoff;

// The engine's defaults live here and in `http::retry` (the backoff); the
// Python bindings export them (`_core.DEFAULT_CHUNK_BYTES` and the rest) so
// that caxton.yaml's defaults read them instead of restating them.

/// 8 MiB: small enough that 16 connections share a 1 GiB file with a short
/// tail, and measured faster than 16 MiB against per-connection caps.
pub const DEFAULT_CHUNK: u64 = 8 << 20;
pub const MIN_CHUNK: u64 = 1 << 20;
// The default must be a range size the engine accepts as given: checked at build.
const _: () = assert!(MIN_CHUNK <= DEFAULT_CHUNK);
/// Upper bound for the adaptive connection count, and the budget
/// `download_many` shares among its files when the caller sets none.
pub const MAX_CONNECTIONS: usize = 16;
/// Stall timeout: no byte for this long fails an attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Failed attempts in a row (without progress) before a download gives up;
/// with the default backoff the waits add up to 45-90 s.
pub const DEFAULT_RETRIES: u32 = 8;

#[derive(Clone, Debug)]
pub struct Options {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Fixed number of connections; None = adaptive (1..=MAX_CONNECTIONS).
    pub connections: Option<usize>,
    pub chunk_size: Option<u64>,
    /// Stall timeout: no byte for this long fails the attempt.
    pub timeout: Duration,
    /// Consecutive failed attempts (without progress) before giving up.
    pub retries: u32,
    pub backoff: Backoff,
    /// false: a finished file is renamed into place without an fsync; the caller
    /// makes it durable before recording it anywhere (a mirror hands the verified
    /// bytes to its waiting clients first, then syncs and publishes).
    pub sync: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            size: None,
            sha256: None,
            headers: Vec::new(),
            connections: None,
            chunk_size: None,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            backoff: Backoff::default(),
            sync: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub sha256: String,
    /// Size of the file.
    pub bytes: u64,
    /// Bytes received over the network by this call.
    pub fetched: u64,
    /// Range requests issued (1 for a plain GET).
    pub ranges: u64,
    pub retries: u64,
    /// Bytes kept from an earlier, interrupted attempt.
    pub resumed_bytes: u64,
    /// Most connections used at once.
    pub connections: usize,
    /// Final URL after redirects (redacted).
    pub url: String,
}

/// One file of [`download_many`].
#[derive(Clone, Debug)]
pub struct Item {
    pub url: String,
    pub dest: PathBuf,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub headers: Vec<(String, String)>,
}

pub(super) fn validate_sha(s: &Option<String>) -> Result<Option<String>> {
    match s {
        None => Ok(None),
        Some(h) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(h))
            } else {
                Err(CoreError::InvalidArgument(format!(
                    "sha256 must be 64 hex characters, got {} characters",
                    h.len()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_exported_constants() {
        // Python reads these constants (`_core.DEFAULT_*`) as the engine's
        // defaults: the options a caller gets by saying nothing must be them.
        let o = Options::default();
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
        assert_eq!(o.retries, DEFAULT_RETRIES);
        assert_eq!(o.connections, None, "None: adaptive, up to MAX_CONNECTIONS");
        assert_eq!(o.chunk_size, None, "None: DEFAULT_CHUNK (job.rs)");
        assert_eq!(
            o.backoff.base,
            Duration::from_millis(crate::http::DEFAULT_RETRY_DELAY_MS)
        );
    }

    #[test]
    fn sha_is_normalised_or_refused() {
        let upper = format!("  {}  ", "AB".repeat(32));
        assert_eq!(validate_sha(&Some(upper)).unwrap(), Some("ab".repeat(32)));
        assert_eq!(validate_sha(&None).unwrap(), None);
        for bad in ["abc", &"g".repeat(64), &"a".repeat(65), "../../etc/passwd"] {
            assert!(validate_sha(&Some(bad.to_string())).is_err(), "{bad}");
        }
    }
}
