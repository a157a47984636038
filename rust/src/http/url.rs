//! URLs: parsing with the schemes we accept, redaction for messages, and
//! the origin that credentials belong to.

use reqwest::Url;

use crate::error::{CoreError, Result};

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
