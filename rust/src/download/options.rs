//! What a caller asks of a download and what it gets back: options, the
//! report, the items of `download_many`, and their validation.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{CoreError, Result};
use crate::http::Backoff;

/// 8 MiB: small enough that 16 connections share a 1 GiB file with a short
/// tail, and measured faster than 16 MiB against per-connection caps.
pub const DEFAULT_CHUNK: u64 = 8 << 20;
pub const MIN_CHUNK: u64 = 1 << 20;
/// Upper bound for the adaptive connection count.
pub const MAX_CONNECTIONS: usize = 16;

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
            timeout: Duration::from_secs(30),
            retries: 8,
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
    fn sha_is_normalised_or_refused() {
        let upper = format!("  {}  ", "AB".repeat(32));
        assert_eq!(validate_sha(&Some(upper)).unwrap(), Some("ab".repeat(32)));
        assert_eq!(validate_sha(&None).unwrap(), None);
        for bad in ["abc", &"g".repeat(64), &"a".repeat(65), "../../etc/passwd"] {
            assert!(validate_sha(&Some(bad.to_string())).is_err(), "{bad}");
        }
    }
}
