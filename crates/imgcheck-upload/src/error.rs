//! Upload errors. No variant ever carries a token: messages hold URLs
//! (which never contain credentials here), statuses and the provider's own
//! error text, and [`Api`](crate::Api) redacts its secret from any text it
//! copies from a response.

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// No credentials in the environment.
    #[error("no credentials: set {vars}")]
    MissingCredentials {
        /// The variables looked at.
        vars: String,
    },
    /// The provider answered with an error status.
    #[error("{method} {url}: HTTP {status}: {message}")]
    Http {
        /// Request method.
        method: String,
        /// Request URL.
        url: String,
        /// Status code.
        status: u16,
        /// The provider's message (redacted, truncated).
        message: String,
    },
    /// The connection failed (after retries).
    #[error("{method} {url}: {message}")]
    Transport {
        /// Request method.
        method: String,
        /// Request URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The provider accepted the request but then failed the image.
    #[error("{provider}: image {id} failed: {message}")]
    Provider {
        /// Provider name.
        provider: &'static str,
        /// Image id.
        id: String,
        /// The provider's error message.
        message: String,
    },
    /// A poll loop ran out of time.
    #[error("{what}: still {last_status:?} after {seconds} s (raise --timeout to wait longer)")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The last status seen.
        last_status: String,
        /// The timeout.
        seconds: u64,
    },
    /// The provider's answer was not what its API documents.
    #[error("{url}: unexpected response: {message}")]
    Protocol {
        /// Request URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The image breaks a documented limit of the provider.
    #[error("{0}")]
    Refused(String),
    /// A flag value the provider would refuse (label, tag, region,
    /// distribution), found before any request.
    #[error("{0}")]
    Invalid(String),
    /// The upload failed, and something was cleaned up (or could not be).
    #[error("{error}; {note}")]
    Cleanup {
        /// What failed.
        error: Box<UploadError>,
        /// What was done about what it left behind.
        note: String,
    },
    /// An S3 (Spaces) request failed.
    #[error("Spaces: {0}")]
    Spaces(String),
    /// Reading the local file failed.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
