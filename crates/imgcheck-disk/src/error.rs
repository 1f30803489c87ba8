//! Errors of the disk layer.
//!
//! One enum for every format: each variant names the file, the structure
//! and (where there is one) the offset, so the CLI can print it as one line.
//! Format modules build them with the small constructors at the bottom.

use imgcheck_source::{ErrorKind, ExternalReference, Limit, SourceError};

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
    /// What kind of failure this is: the disk layer's one mapping onto
    /// [`ErrorKind`]. A value over a cap is [`ErrorKind::LimitExceeded`]
    /// (not damage: see [`ErrorKind::is_damage`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DiskError::Corrupt { .. } => ErrorKind::Corrupt,
            DiskError::Limit {
                what, value, limit, ..
            } => ErrorKind::LimitExceeded(Limit {
                what: what.clone(),
                value: *value,
                limit: *limit,
            }),
            DiskError::Unsupported { .. } => ErrorKind::Unsupported,
            DiskError::ExternalReference {
                kind, name, why, ..
            } => ErrorKind::Policy(ExternalReference {
                kind: kind.clone(),
                name: name.clone(),
                why: why.clone(),
            }),
            DiskError::Source(e) => e.kind.clone(),
        }
    }

    /// A one-line suggestion for the user, where one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            DiskError::Unsupported { hint, .. } => hint.clone(),
            DiskError::ExternalReference { .. } => Some(
                "flatten the image first (qemu-img convert -O qcow2 IN OUT), or pass --allow-external if you trust it"
                    .into(),
            ),
            DiskError::Corrupt { .. } => {
                Some("the file is damaged or not what its header claims; `qemu-img check` may tell more".into())
            }
            DiskError::Limit { .. } => Some(
                "a table or size in the header is beyond what imgcheck reads; if the image is valid, `qemu-img check` will say so"
                    .into(),
            ),
            DiskError::Source(e) => e.hint.clone(),
        }
    }

    /// True for damage in the image (see [`ErrorKind::is_damage`], the one
    /// place that decides it).
    pub fn is_corrupt(&self) -> bool {
        self.kind().is_damage()
    }
}

/// The boundary of the disk layer: a `DiskError` leaves it (through
/// [`VirtualDisk`](crate::VirtualDisk)'s `ByteSource` impl) as the common
/// error with its kind, the detailed error kept as the source.
impl From<DiskError> for SourceError {
    fn from(e: DiskError) -> Self {
        match e {
            DiskError::Source(inner) => inner,
            other => other.to_source().caused_by(other),
        }
    }
}

impl DiskError {
    /// The same failure as the common error, without the detailed cause
    /// attached (for keeping a copy; [`From`] attaches it).
    pub fn to_source(&self) -> SourceError {
        let (file, at, reason) = match self {
            DiskError::Source(e) => {
                let mut out = SourceError::new(e.kind.clone(), &e.file, e.reason.clone());
                out.structure.clone_from(&e.structure);
                out.offset = e.offset;
                out.hint.clone_from(&e.hint);
                return out;
            }
            DiskError::Corrupt {
                file,
                structure,
                offset,
                reason,
            } => (file, Some((structure, *offset)), reason.clone()),
            DiskError::Limit {
                file,
                structure,
                offset,
                what,
                value,
                limit,
            } => (
                file,
                Some((structure, *offset)),
                format!("{what} is {value}, over the limit of {limit}"),
            ),
            DiskError::Unsupported { file, what, .. } => {
                (file, None, format!("{what} is not supported"))
            }
            DiskError::ExternalReference {
                file,
                kind,
                name,
                why,
            } => (
                file,
                None,
                format!("refers to {kind} {name:?}, which is not opened ({why})"),
            ),
        };
        let mut out = SourceError::new(self.kind(), file, reason);
        if let Some((structure, offset)) = at {
            out = out.at(structure.clone(), offset);
        }
        out.hint = self.hint();
        out
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
