//! Errors of the disk layer.
//!
//! One enum for every format: each variant names the file, the structure
//! and (where there is one) the offset, so the CLI can print it as one line.
//! Format modules build them with the small constructors at the bottom.

use imgcheck_source::SourceError;

/// Why a disk image could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// A structure of the image breaks its format's rules.
    #[error("{file}: {structure} at offset {offset}: {reason}")]
    Corrupt {
        /// Image file (or URL).
        file: String,
        /// Which structure, e.g. "qcow2 header", "L2 table".
        structure: String,
        /// Byte offset of the structure in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A value read from the image is beyond what imgcheck accepts. These
    /// limits follow qemu's and exist so hostile headers cannot make us
    /// allocate or loop without bound.
    #[error("{file}: {structure} at offset {offset}: {what} is {value}, over the limit of {limit}")]
    Limit {
        /// Image file.
        file: String,
        /// Which structure.
        structure: String,
        /// Offset of the structure.
        offset: u64,
        /// Which field.
        what: String,
        /// The value found.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A valid image using a feature imgcheck does not read.
    #[error("{file}: {what} is not supported")]
    Unsupported {
        /// Image file.
        file: String,
        /// The feature, e.g. "encrypted qcow2".
        what: String,
        /// How to get past it, if there is a way.
        hint: Option<String>,
    },
    /// The image needs another file (backing file, data file, extent) that
    /// imgcheck will not open: outside the image's directory, or following
    /// references was not allowed.
    #[error("{file}: refers to {kind} {name:?}, which is not opened ({why})")]
    ExternalReference {
        /// Image file.
        file: String,
        /// "backing file", "external data file", "VMDK extent".
        kind: String,
        /// The name as written in the image.
        name: String,
        /// Why it was not opened.
        why: String,
    },
    /// The bytes could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl DiskError {
    /// A one-line suggestion for the user, where one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            DiskError::Unsupported { hint, .. } => hint.clone(),
            DiskError::ExternalReference { .. } => Some(
                "flatten the image first (qemu-img convert -O qcow2 IN OUT), or pass --allow-external if you trust it"
                    .into(),
            ),
            DiskError::Corrupt { .. } | DiskError::Limit { .. } => {
                Some("the file is damaged or not what its header claims; `qemu-img check` may tell more".into())
            }
            DiskError::Source(SourceError::OutOfRange { .. }) => {
                Some("the file looks truncated: was the download or copy complete?".into())
            }
            DiskError::Source(_) => None,
        }
    }

    /// True for damage in the image (as opposed to I/O trouble or a
    /// feature we do not read).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            DiskError::Corrupt { .. }
                | DiskError::Limit { .. }
                | DiskError::Source(SourceError::OutOfRange { .. })
                | DiskError::Source(SourceError::Corrupt { .. })
                | DiskError::Source(SourceError::TooLarge { .. })
        )
    }
}

/// Shorthand for [`DiskError::Corrupt`].
pub fn corrupt(file: &str, structure: &str, offset: u64, reason: impl Into<String>) -> DiskError {
    DiskError::Corrupt {
        file: file.to_owned(),
        structure: structure.to_owned(),
        offset,
        reason: reason.into(),
    }
}

/// Shorthand for [`DiskError::Limit`].
pub fn limit(
    file: &str,
    structure: &str,
    offset: u64,
    what: &str,
    value: u64,
    limit: u64,
) -> DiskError {
    DiskError::Limit {
        file: file.to_owned(),
        structure: structure.to_owned(),
        offset,
        what: what.to_owned(),
        value,
        limit,
    }
}

/// Shorthand for [`DiskError::Unsupported`].
pub fn unsupported(file: &str, what: impl Into<String>, hint: Option<&str>) -> DiskError {
    DiskError::Unsupported {
        file: file.to_owned(),
        what: what.into(),
        hint: hint.map(str::to_owned),
    }
}
