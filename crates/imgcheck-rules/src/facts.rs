//! What the rules judge: facts about the image file ([`ImageFacts`]) and,
//! when the guest could be read, the guest report from imgcheck-guest.
//!
//! The facts are plain data filled by the caller (the `imgcheck::check`
//! facade, or a test by hand). Nothing here reads bytes, so every rule can be
//! exercised without an image.

use imgcheck_disk::{Container, ExternalRef, Format};
use imgcheck_guest::{Filesystem, GuestReport};
use serde::{Serialize, Serializer};

/// The input of a check: the image facts and the guest report, if the guest
/// disk could be inspected at all.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// Facts about the file.
    pub image: &'a ImageFacts,
    /// What guest inspection found; `None` when the image could not be
    /// opened (then only the image facts are judged).
    pub guest: Option<&'a GuestReport>,
}

impl<'a> CheckInput<'a> {
    /// The root filesystem, if inspection found one.
    pub fn root_fs(&self) -> Option<&'a Filesystem> {
        let g = self.guest?;
        g.filesystems.get(g.root?)
    }
}

/// Facts about the image file, as far as they could be read. Serialised as
/// the `image` object of `imgcheck --json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageFacts {
    /// The path (or location) the user gave.
    pub path: String,
    /// The disk format, if it could be told.
    pub format: Option<ImageFormat>,
    /// Format version / subformat ("v3", "streamOptimized"), if known.
    pub subformat: Option<String>,
    /// Compression or archive around the image, if any.
    pub compression: Option<Container>,
    /// Guest-visible (uncompressed) size in bytes, if the image was read.
    pub virtual_size: Option<u64>,
    /// Size of the file as stored: the compressed size for a compressed
    /// image.
    pub file_size: u64,
    /// The format's dirty flag (qcow2 dirty bit, VHDX log in use).
    pub dirty: bool,
    /// Backing file or parent named by the image (never opened).
    pub backing_file: Option<String>,
    /// Other files the image names (VMDK extents, data files).
    pub external_refs: Vec<ExternalRef>,
    /// Why the image could not be opened, if it could not.
    pub error: Option<ImageError>,
    /// For an http(s) location: whether the server answered HEAD
    /// (DigitalOcean's importer needs it). `None` for local files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_supported: Option<bool>,
    /// Damage found while reading guest data (the header opened, but a
    /// table points outside the file, a compressed cluster does not decode,
    /// ...). Reads the caller made past the disk's end are not damage and are
    /// not recorded here.
    pub read_error: Option<String>,
}

impl ImageFacts {
    /// True when the image opened: imgcheck (and so `imgcheck convert`) can
    /// read it.
    pub fn readable(&self) -> bool {
        self.error.is_none()
    }

    /// The format as imgcheck reads it, if it is one of those.
    pub fn disk_format(&self) -> Option<Format> {
        match self.format {
            Some(ImageFormat::Disk(f)) => Some(f),
            _ => None,
        }
    }
}

/// The format of an image: one imgcheck reads, or one it only recognises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFormat {
    /// A format imgcheck reads.
    Disk(Format),
    /// Recognised but not read (e.g. `vhd (vpc)`, `qcow (version 1)`).
    Other(String),
}

impl ImageFormat {
    /// The name, as `qemu-img` spells the formats imgcheck reads.
    pub fn name(&self) -> &str {
        match self {
            ImageFormat::Disk(f) => f.as_str(),
            ImageFormat::Other(s) => s,
        }
    }
}

/// Serialised as its name, a plain string.
impl Serialize for ImageFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Why an image could not be opened.
#[derive(Debug, Clone, Serialize)]
pub struct ImageError {
    /// What kind of failure.
    pub kind: ImageErrorKind,
    /// The error, one line, naming the file and structure.
    pub message: String,
    /// How to get past it, if there is a way.
    pub hint: Option<String>,
    /// For [`ImageErrorKind::TooLarge`]: the image decompresses to at least
    /// this many bytes.
    pub uncompressed_at_least: Option<u64>,
}

/// Kinds of [`ImageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageErrorKind {
    /// The image breaks its format's rules or is truncated.
    Corrupt,
    /// A format, container or feature imgcheck does not read.
    Unsupported,
    /// The image needs a file imgcheck will not open.
    ExternalReference,
    /// A compressed image decompresses to more than imgcheck's limit.
    TooLarge,
}
