//! The download engine: parallel Range requests into a preallocated file,
//! SHA-256 while downloading, resume across processes, typed errors.
//!
//! Layout beside `dest`:
//! - `<dest>.lock`: advisory lock, so two processes do not fetch the same
//!   file twice (bandwidth only; correctness never depends on it);
//! - `<dest>.<token>.part` and `<dest>.<token>.part.state`: this process's
//!   unique temp file and its resume state (see `state.rs`). A later call
//!   claims a dead process's temp by renaming it to its own unique name.
//!   `dest` appears only by an atomic rename, after size and SHA-256 match.

//!
//! One responsibility per module: `options` (what the caller asks and gets),
//! `job` (state shared by a file's tasks), `request` (the one send path, with
//! the credentials rule), `response` (whether a response may be written),
//! `claim` (locks, our temp, leftovers of earlier runs), `ranged` and
//! `adapt` (the parallel range phase), `plain` (the single-stream phase),
//! `run` (one file from start to published), `many` (several files).

mod adapt;
mod claim;
mod hasher;
mod io;
mod job;
mod many;
mod options;
mod plain;
mod ranged;
pub mod ranges;
mod request;
mod response;
mod run;
mod state;

/// The parsers cargo-fuzz drives (rust/fuzz-download), re-exported as they
/// are; only built with the `fuzzing` feature, never changing behaviour.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::response::{content_length, content_range, strong_etag};
    pub use super::state::{Piece, State};

    /// [`super::response::check_range`] without the engine's types: true when
    /// the response would be written into the file.
    pub fn check_range(
        status: u16,
        h: &reqwest::header::HeaderMap,
        start: u64,
        total: u64,
        known_etag: Option<&str>,
    ) -> bool {
        let Ok(status) = reqwest::StatusCode::from_u16(status) else {
            return false;
        };
        let Ok(url) = reqwest::Url::parse("http://fuzz.invalid/blob") else {
            return false;
        };
        let bad = std::sync::atomic::AtomicU64::new(0);
        super::response::check_range(status, h, &url, start, total, known_etag, &bad).is_ok()
    }
}
#[cfg(test)]
pub(crate) mod testserver;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::Result;
use crate::http::{self, Headers};
pub use claim::lock_held;
use job::{io_err, strip_query, with_suffix, Job};
pub use many::download_many;
pub use options::{
    Item, Options, Report, DEFAULT_CHUNK, DEFAULT_RETRIES, DEFAULT_TIMEOUT, MAX_CONNECTIONS,
    MIN_CHUNK,
};

/// Downloads `url` to `dest`. `progress` counts bytes of the final file
/// known good (it can go down on a restart); `cancel` stops the download,
/// keeping its resumable state.
pub async fn download_async(
    url: &str,
    dest: &Path,
    opts: Options,
    progress: Arc<AtomicI64>,
    cancel: &AtomicBool,
    limiter: Option<Arc<Semaphore>>,
) -> Result<Report> {
    let parsed = http::parse_url(url)?;
    // Credentials belong to the origin of the URL the caller gave, fixed
    // here once; the redirect target that later requests go to never owns them.
    let headers = Headers::new(&opts.headers, &parsed)?;
    let mut opts = opts;
    opts.sha256 = options::validate_sha(&opts.sha256)?;
    run::prepare_dir(dest, &opts)?;
    let (lock_guard, waited) = claim::take_lock(&with_suffix(dest, ".lock"), cancel).await?;
    if waited {
        // Another process held the lock: it may have just produced the file.
        if let Some(done) = run::done_by_other(dest, &opts, url, &progress).await? {
            return Ok(done);
        }
    }
    let token = format!("{}-{:08x}", std::process::id(), fastrand::u32(..));
    let part = with_suffix(dest, &format!(".{token}.part"));
    let state_path = with_suffix(&part, ".state");
    let clean_url = strip_query(&parsed);
    let leftover = claim::claim_leftovers(
        dest,
        &part,
        &state_path,
        &clean_url,
        &opts.sha256,
        lock_guard.locked(),
    );
    let file =
        claim::open_part(&part, leftover.is_none()).map_err(|e| io_err("create", &part, e))?;
    let job = Job::new(parsed, headers, opts, file, part, progress, limiter);
    let resumed = match leftover {
        Some(st) => run::resume(&job, st).await?,
        None => 0,
    };
    let outcome = run::run_and_publish(&job, dest, resumed, cancel).await;
    drop(lock_guard);
    outcome
}

/// Blocking download on the shared runtime. `cancel` is polled: setting it
/// stops the download within ~0.1 s, keeping its resume state.
pub fn download(
    url: &str,
    dest: &Path,
    opts: Options,
    progress: Arc<AtomicI64>,
    cancel: &AtomicBool,
) -> Result<Report> {
    http::runtime()?.block_on(download_async(url, dest, opts, progress, cancel, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_after_a_cross_origin_redirect_carry_no_credentials() {
        use testserver::{Route, Server};
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (hub, cdn) = (Server::bind(), Server::bind());
        let blob = cdn.url("/blob");
        let hub = hub.start(vec![("/resolve/f", Route::Redirect(blob))]);
        let cdn = cdn.start(vec![("/blob", Route::Bytes(data.clone()))]);
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            headers: vec![
                ("Authorization".into(), "Bearer hf_SENTINEL".into()),
                ("Cookie".into(), "s=hf_SENTINEL".into()),
            ],
            chunk_size: Some(MIN_CHUNK / 4),
            connections: Some(4),
            size: Some(data.len() as u64),
            ..Options::default()
        };
        let progress = Arc::new(AtomicI64::new(0));
        let cancel = AtomicBool::new(false);
        let dest = dir.path().join("f");
        let r = download(&hub.url("/resolve/f"), &dest, opts, progress, &cancel).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(r.ranges >= 12, "{r:?}");
        let seen = cdn.seen();
        assert!(seen.len() >= 12);
        assert!(seen
            .iter()
            .all(|s| !s.has("authorization") && !s.has("cookie")));
        assert!(hub
            .seen()
            .iter()
            .all(|s| s.has("authorization") && s.has("cookie")));
    }
}
