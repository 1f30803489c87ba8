//! The one opener: bytes → (unwrap gzip/bzip2) → format → [`VirtualDisk`].
//!
//! Detection runs once per layer: on the file, and once more on the
//! decompressed stream when the file was a container. What was found on the
//! way is kept ([`Found`]) and returned even when opening fails
//! ([`OpenFailure`]), so a caller reporting on a damaged image never needs
//! to open it a second time (which would not even work for a URL).

use std::sync::Arc;

use imgcheck_source::{
    ByteSource, Bzip2Source, DecompressOptions, GzipSource, ProgressFn, StreamInfo,
};

use crate::context::OpenContext;
use crate::deps::DependencyPolicy;
use crate::detect::{Detected, detect};
use crate::disk::{DiskImage, VirtualDisk};
use crate::error::{DiskError, unsupported};
use crate::format::{Container, Format};
use crate::formats;
use crate::limits::Limits;

/// How to open an image. The one set of open options of imgcheck (the
/// facade re-exports it).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Skip detection and read as this format (`--format`); the file is
    /// then not unwrapped either.
    pub format: Option<Format>,
    /// Size and count caps.
    pub limits: Limits,
    /// Which referenced files may be opened (`--allow-external` is
    /// [`DependencyPolicy::AllowExternal`]).
    pub dependencies: DependencyPolicy,
    /// For a gzip/bzip2 file: stop decompressing (with
    /// `ErrorKind::LimitExceeded`) once the uncompressed stream passes this
    /// many bytes, so a decompression bomb costs the limit.
    pub max_uncompressed: Option<u64>,
    /// For a gzip/bzip2 file: called during the one streaming pass that
    /// verifies and indexes it (the CLI draws a progress bar).
    pub progress: Option<ProgressFn>,
}

/// What the opener learned about the input, whether or not it opened.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The compression around the image, if any.
    pub container: Option<Container>,
    /// The disk format (detected, or forced by [`OpenOptions::format`]).
    pub format: Option<Format>,
    /// A format recognised but not read ("qed", "vhd (vpc)").
    pub unsupported: Option<&'static str>,
    /// For a compressed file: what the decompression pass learned.
    pub stream: Option<StreamInfo>,
}

/// An opened image.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The guest disk.
    pub disk: VirtualDisk,
    /// What was found on the way in.
    pub found: Found,
}

/// Opening failed; what was found before it did is kept.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct OpenFailure {
    /// Why.
    #[source]
    pub error: DiskError,
    /// What was learned before the failure (boxed: a `Result` of this
    /// stays small).
    pub found: Box<Found>,
}

/// Detects and opens `source`, unwrapping gzip/bzip2 on the way, and drops
/// what was found. See [`open_image`].
pub fn open(source: Arc<dyn ByteSource>, options: &OpenOptions) -> Result<VirtualDisk, DiskError> {
    open_image(source, options)
        .map(|o| o.disk)
        .map_err(|f| f.error)
}

/// Detects (unless [`OpenOptions::format`] is set), unwraps a gzip or
/// bzip2 container, and opens the format.
pub fn open_image(
    source: Arc<dyn ByteSource>,
    options: &OpenOptions,
) -> Result<Opened, OpenFailure> {
    let mut found = Found::default();
    match open_steps(source, options, &mut found) {
        Ok(disk) => Ok(Opened { disk, found }),
        Err(error) => Err(OpenFailure {
            error,
            found: Box::new(found),
        }),
    }
}

/// The steps of [`open_image`], filling `found` as they go.
fn open_steps(
    source: Arc<dyn ByteSource>,
    options: &OpenOptions,
    found: &mut Found,
) -> Result<VirtualDisk, DiskError> {
    let (source, format) = match options.format {
        Some(f) => (source, f),
        None => {
            let (inner, detected) = match detect(source.as_ref())? {
                Detected::Container(c) => {
                    found.container = Some(c);
                    let (inner, info) = unwrap_container(source, c, options)?;
                    found.stream = Some(info);
                    let again = detect(inner.as_ref())?;
                    (inner, again)
                }
                d => (source, d),
            };
            match detected {
                Detected::Disk(f) => (inner, f),
                Detected::Container(inner_c) => {
                    return Err(nested_container(&inner, found.container, inner_c));
                }
                Detected::Unsupported(what) => {
                    found.unsupported = Some(what);
                    return Err(unsupported(
                        inner.name(),
                        format!("the {what} format"),
                        Some("convert it with `qemu-img convert -O qcow2` first"),
                    ));
                }
            }
        }
    };
    found.format = Some(format);
    let ctx = OpenContext {
        source,
        limits: &options.limits,
        dependencies: options.dependencies,
    };
    let image: Arc<dyn DiskImage> = match format {
        Format::Raw => formats::raw::open(&ctx)?,
        Format::Qcow2 => formats::qcow2::open(&ctx)?,
        Format::Vhdx => formats::vhdx::open(&ctx)?,
        Format::Vdi => formats::vdi::open(&ctx)?,
        Format::Vmdk => formats::vmdk::open(&ctx)?,
    };
    Ok(VirtualDisk::new(image))
}

/// A container inside the container (.tar.gz, .gz.gz) is not an image.
fn nested_container(
    inner: &Arc<dyn ByteSource>,
    outer: Option<Container>,
    c2: Container,
) -> DiskError {
    let hint = if c2 == Container::Tar {
        "this is a compressed tar (an OVA?): extract the image first"
    } else {
        "decompress the outer layer first"
    };
    let outer = outer.map_or_else(|| "outer".to_owned(), |c| c.to_string());
    unsupported(
        inner.name(),
        format!("a {c2} stream inside the {outer} stream"),
        Some(hint),
    )
}

/// Wraps a compressed file in its decompressing source. xz, zstd, zip and
/// tar are refused with what to do instead.
fn unwrap_container(
    file: Arc<dyn ByteSource>,
    c: Container,
    options: &OpenOptions,
) -> Result<(Arc<dyn ByteSource>, StreamInfo), DiskError> {
    let dopts = DecompressOptions {
        max_uncompressed: options.max_uncompressed,
        progress: options.progress.clone(),
        ..Default::default()
    };
    Ok(match c {
        Container::Gzip => {
            let s = GzipSource::open(file, &dopts)?;
            let info = s.info().clone();
            (Arc::new(s), info)
        }
        Container::Bzip2 => {
            let s = Bzip2Source::open(file, &dopts)?;
            let info = s.info().clone();
            (Arc::new(s), info)
        }
        Container::Xz => {
            return Err(unsupported(
                file.name(),
                "reading xz-compressed images",
                Some(
                    "decompress it (xz -dk) and recompress with gzip or bzip2 if you need a compressed upload; DigitalOcean rejects xz",
                ),
            ));
        }
        Container::Tar => {
            return Err(unsupported(
                file.name(),
                "reading images inside tar archives",
                Some("this is an OVA/tar: extract the .vmdk first (tar -xf FILE)"),
            ));
        }
        other => {
            return Err(unsupported(
                file.name(),
                format!("reading {other}-compressed images"),
                Some("decompress it first; imgcheck reads gzip and bzip2 in place"),
            ));
        }
    })
}
