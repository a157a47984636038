//! Caller headers, with credentials bound to the origin they were given for.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;

use super::url::Origin;
use crate::error::{CoreError, Result};

pub(super) fn is_credential(name: &HeaderName) -> bool {
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
