//! Thin upload backends: DigitalOcean (URL import, or a local file through
//! a Spaces bucket), Linode (image upload), KakaoCloud (image from a root
//! volume).
//!
//! Each backend is a plain function over an [`Api`] client that knows the
//! provider's base URL and credentials. The HTTP policy (what is retried,
//! how long to wait, `Retry-After` and rate-limit headers, timeouts,
//! redaction of signed URLs) is imgcheck-source's [`imgcheck_source::net`],
//! shared with the remote-image reader; [`Secret`] keeps tokens out of every
//! message.
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
pub mod spaces;

pub use api::{Api, Auth, PollOptions, RetryPolicy, Secret};
pub use error::UploadError;

pub use imgcheck_source::net::{redact_text, redact_url};

/// What a backend reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Bytes of an upload sent so far, of `total`.
    Sent {
        /// Bytes sent.
        done: u64,
        /// Bytes to send.
        total: u64,
    },
    /// A status line (the provider is processing the image, ...).
    Status(&'a str),
}

/// How a backend proceeds after its requests were accepted.
pub struct Flow<'a> {
    /// Poll pace and timeout.
    pub poll: &'a PollOptions,
    /// Wait until the provider finished (false: return once accepted).
    pub wait: bool,
    /// Progress and status.
    pub events: &'a (dyn Fn(Event<'_>) + Sync),
}

impl std::fmt::Debug for Flow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("poll", self.poll)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

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

/// Whether any of `names` is set (non-empty) in the environment.
pub fn env_set(names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| std::env::var(n).is_ok_and(|v| !v.trim().is_empty()))
}

/// The API base URL for a provider: the environment variable `var` when
/// set (tests and private endpoints), else `default`.
pub fn base_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}
