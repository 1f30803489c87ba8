//! The facade's error: one of the layers' errors, with a hint.

use imgcheck_convert::ConvertError;
use imgcheck_disk::DiskError;
use imgcheck_source::{ErrorKind, SourceError};

/// Anything that stops an imgcheck operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or reading bytes failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The image is damaged, unsupported, or refers to files we do not open.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Writing a conversion failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The command line or options are inconsistent.
    #[error("{0}")]
    Usage(String),
    /// A provider API call failed.
    #[error(transparent)]
    Upload(#[from] imgcheck_upload::UploadError),
    /// The preflight check refused the image.
    #[error("the check failed for {provider}: {}", findings.iter().filter(|f| f.severity == imgcheck_rules::Severity::Error).map(|f| f.code).collect::<Vec<_>>().join(", "))]
    CheckFailed {
        /// Provider.
        provider: String,
        /// The verdict's findings (errors first).
        findings: Vec<imgcheck_rules::Finding>,
    },
}

impl Error {
    /// What kind of failure this is, for errors about the image (`None`
    /// for usage, upload and check-verdict errors).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Source(e) => Some(e.kind.clone()),
            Error::Disk(e) | Error::Convert(ConvertError::Disk(e)) => Some(e.kind()),
            _ => None,
        }
    }

    /// A one-line suggestion, where one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Disk(e) | Error::Convert(ConvertError::Disk(e)) => e.hint(),
            Error::Source(e) => e.hint.clone(),
            Error::Upload(imgcheck_upload::UploadError::MissingCredentials { .. }) => Some(
                "credentials are read from the environment only (see `imgcheck upload --help`); --dry-run needs none".into(),
            ),
            Error::CheckFailed { .. } => Some(
                "fix the findings above, or pass --skip-check to upload anyway (not recommended)".into(),
            ),
            _ => None,
        }
    }

    /// True when the image itself is damaged (a check reports this as the
    /// finding `image.corrupt` rather than failing to run); decided by
    /// [`ErrorKind::is_damage`].
    pub fn is_corrupt(&self) -> bool {
        self.kind().is_some_and(|k| k.is_damage())
    }
}
