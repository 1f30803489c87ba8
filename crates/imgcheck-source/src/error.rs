//! The one error type of imgcheck, defined here at the bottom of the stack.
//!
//! Every layer reads through [`ByteSource`](crate::ByteSource), so every
//! failure can be told in the same shape: *what kind* of failure
//! ([`ErrorKind`]), in which file, in which structure, at which offset, and
//! the detailed cause underneath. Layers above keep their own detailed
//! enums (the disk layer's `DiskError`, ...) and map them to a kind once, at
//! their boundary; nothing above re-classifies messages.
//!
//! Whether a failure is damage in the image is decided in one place:
//! [`ErrorKind::is_damage`].

use std::fmt;
use std::io;

/// What kind of failure an [`Error`] is. The check turns it into a finding:
/// damage is `image.corrupt`, the rest say why nothing was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system or the transport failed (missing file,
    /// permissions, network). Says nothing about the image's content.
    Io,
    /// A read ends beyond the end of the file: the file is truncated, or a
    /// table points outside it.
    Truncated,
    /// A structure breaks its format's rules (bad magic, CRC mismatch,
    /// overlapping tables, a stream that does not decode).
    Corrupt,
    /// A valid input using a format or feature imgcheck does not read.
    Unsupported,
    /// A size or count passed one of imgcheck's caps, so reading stopped
    /// there (a decompression bomb, a table larger than any real image
    /// has). Not judged as damage: the image may be valid, just larger than
    /// imgcheck will read.
    LimitExceeded(Limit),
    /// The input needs another file that the open policy does not allow.
    Policy(ExternalReference),
}

impl ErrorKind {
    /// True for damage in the image itself (reported as `image.corrupt`),
    /// as opposed to I/O trouble, a feature we do not read, a cap, or a
    /// policy. The one place this is decided.
    pub fn is_damage(&self) -> bool {
        matches!(self, ErrorKind::Corrupt | ErrorKind::Truncated)
    }
}

/// The cap an [`ErrorKind::LimitExceeded`] passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The capped quantity, e.g. "L1 entries", or [`Limit::UNCOMPRESSED`].
    pub what: String,
    /// The value found (for a decompression: bytes produced when decoding
    /// stopped, so the stream is at least this long).
    pub value: u64,
    /// The cap.
    pub limit: u64,
}

impl Limit {
    /// `what` of a compressed stream that decodes past the caller's
    /// `max_uncompressed`.
    pub const UNCOMPRESSED: &'static str = "uncompressed size";
}

/// A file an input names and that was not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalReference {
    /// What kind of reference ("backing file", "VMDK extent", "file").
    pub kind: String,
    /// The name as written in the input.
    pub name: String,
    /// Why it was not opened.
    pub why: String,
}

/// Why reading or interpreting an input failed.
///
/// Displayed as one line, `FILE: STRUCTURE at offset N: REASON`, with the
/// parts that are unknown left out. The fields are those of [`Details`]
/// (`e.kind`, `e.offset`, ...), boxed so a `Result` stays one word wide.
#[derive(Debug)]
pub struct Error(Box<Details>);

/// The fields of an [`Error`].
#[derive(Debug)]
pub struct Details {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The file or URL at fault.
    pub file: String,
    /// The structure being read ("qcow2 header", "gzip member", "read of
    /// 4096 bytes"); empty when there is none.
    pub structure: String,
    /// Byte offset of the structure in `file`, when there is one.
    pub offset: Option<u64>,
    /// What is wrong, in words.
    pub reason: String,
    /// How to get past it, where there is a way.
    pub hint: Option<String>,
    /// The detailed cause (an `io::Error`, a layer's own error enum).
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::ops::Deref for Error {
    type Target = Details;
    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The historical name of [`Error`]; every layer spells it this way.
pub type SourceError = Error;

impl Error {
    /// An error of `kind` in `file`, with no structure or offset yet.
    pub fn new(kind: ErrorKind, file: &str, reason: impl Into<String>) -> Self {
        Self(Box::new(Details {
            kind,
            file: file.to_owned(),
            structure: String::new(),
            offset: None,
            reason: reason.into(),
            hint: None,
            source: None,
        }))
    }

    /// Names the structure and its offset.
    #[must_use]
    pub fn at(mut self, structure: impl Into<String>, offset: u64) -> Self {
        self.structure = structure.into();
        self.offset = Some(offset);
        self
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attaches the detailed cause.
    #[must_use]
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The OS failed a read of `len` bytes at `offset`.
    pub fn io(file: &str, offset: u64, len: u64, source: io::Error) -> Self {
        Self::new(ErrorKind::Io, file, format!("failed: {source}"))
            .at(format!("read of {len} bytes"), offset)
            .caused_by(source)
    }

    /// The file could not be opened.
    pub fn open(file: &str, source: io::Error) -> Self {
        Self::new(ErrorKind::Io, file, format!("cannot open: {source}"))
            .with_hint("check the path and its permissions")
            .caused_by(source)
    }

    /// A read of `len` bytes at `offset` ends beyond a source of `size`
    /// bytes.
    pub fn out_of_range(file: &str, offset: u64, len: u64, size: u64) -> Self {
        Self::new(
            ErrorKind::Truncated,
            file,
            format!(
                "runs past the end ({size} bytes); the file is truncated or a table points outside it"
            ),
        )
        .at(format!("read of {len} bytes"), offset)
        .with_hint("the file looks truncated: was the download or copy complete?")
    }

    /// A structure at `offset` claims `len` bytes, over `limit`.
    pub fn too_large(file: &str, offset: u64, len: u64, limit: u64) -> Self {
        Self::new(
            ErrorKind::LimitExceeded(Limit {
                what: "length".into(),
                value: len,
                limit,
            }),
            file,
            format!("claims {len} bytes, over the limit of {limit}"),
        )
        .at("structure", offset)
    }

    /// A structure breaks its format's rules.
    pub fn corrupt(
        file: &str,
        structure: impl Into<String>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::Corrupt, file, reason).at(structure, offset)
    }

    /// A source with no directory was asked for a file next to it.
    pub fn no_siblings(file: &str, sibling: &str) -> Self {
        let why = "this source has no directory";
        Self::new(
            ErrorKind::Policy(ExternalReference {
                kind: "file".into(),
                name: sibling.to_owned(),
                why: why.into(),
            }),
            file,
            format!("cannot open {sibling:?}: {why}"),
        )
    }

    /// True for damage in the input (see [`ErrorKind::is_damage`]).
    pub fn is_damage(&self) -> bool {
        self.kind.is_damage()
    }

    /// The one-line message.
    fn line(&self) -> String {
        let mut s = self.file.clone();
        if !self.structure.is_empty() {
            s.push_str(": ");
            s.push_str(&self.structure);
        }
        if let Some(o) = self.offset {
            if self.structure.is_empty() {
                s.push(':');
            }
            s.push_str(&format!(" at offset {o}"));
        }
        if !self.reason.is_empty() {
            s.push_str(": ");
            s.push_str(&self.reason);
        }
        s
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Io => "i/o",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::LimitExceeded(_) => "limit exceeded",
            ErrorKind::Policy(_) => "policy",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_names_file_structure_offset() {
        let e = Error::corrupt("d.qcow2", "L1 table", 196608, "overlaps the header");
        assert_eq!(
            e.to_string(),
            "d.qcow2: L1 table at offset 196608: overlaps the header"
        );
        assert!(e.is_damage());
        let e = Error::out_of_range("f", 8, 4, 10);
        assert_eq!(e.kind, ErrorKind::Truncated);
        assert!(
            e.to_string()
                .starts_with("f: read of 4 bytes at offset 8: runs past the end")
        );
    }

    #[test]
    fn only_corrupt_and_truncated_are_damage() {
        let lim = ErrorKind::LimitExceeded(Limit {
            what: Limit::UNCOMPRESSED.into(),
            value: 2,
            limit: 1,
        });
        for k in [ErrorKind::Io, ErrorKind::Unsupported, lim] {
            assert!(!k.is_damage(), "{k}");
        }
        assert!(!Error::no_siblings("m", "x").is_damage());
    }
}
