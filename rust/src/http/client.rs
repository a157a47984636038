//! The process-wide tokio runtime and reqwest client (rustls with ring,
//! platform roots, proxies from the environment, HTTP/1.1 only).

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::Client;

use crate::error::{CoreError, Result};

const USER_AGENT: &str = concat!("caxton-models/", env!("CARGO_PKG_VERSION"));

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
