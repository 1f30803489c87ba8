//! Thin upload backends: DigitalOcean (URL import), Linode (image upload),
//! KakaoCloud (image from a root volume).
//!
//! Each backend is a plain function over an [`Api`] client that knows the
//! provider's base URL and credentials and does the boring, important parts
//! once: retries with backoff on 5xx and connection resets, honouring
//! `Retry-After` / rate-limit headers on 429, a timeout per poll loop, and
//! keeping tokens out of every message ([`Secret`]).
//!
//! The preflight (the check) and the conversion happen above this crate, in
//! the `imgcheck` facade: a backend gets an image that is already what the
//! provider takes.
//!
//! Provider facts (endpoints, statuses, limits) are from
//! `shared/providers.md`; what that document marks UNCONFIRMED is called
//! out where it is used.

mod api;
pub mod digitalocean;
mod error;
pub mod kakaocloud;
pub mod linode;

pub use api::{Api, Auth, PollOptions, RetryPolicy, Secret};
pub use error::UploadError;

/// Reads the first set environment variable of `names` as a secret.
pub fn token_from_env(names: &[&str]) -> Result<Secret, UploadError> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        .map(|v| Secret::new(v.trim()))
        .ok_or_else(|| UploadError::MissingCredentials {
            vars: names.join(" or "),
        })
}

/// The API base URL for a provider: the environment variable `var` when
/// set (tests and private endpoints), else `default`.
pub fn base_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// What an upload flow ended with.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `--dry-run`: the requests that would have been sent, credentials
    /// redacted, one per line.
    DryRun(Vec<String>),
    /// The provider's final image object.
    Image(serde_json::Value),
}
