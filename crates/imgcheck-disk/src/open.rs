//! The single entry point that turns a byte source into a [`VirtualDisk`].

use std::sync::Arc;

use imgcheck_source::ByteSource;

use crate::deps::DependencyPolicy;
use crate::detect::{Detected, detect};
use crate::disk::{DiskImage, VirtualDisk};
use crate::error::{DiskError, unsupported};
use crate::format::Format;
use crate::formats;
use crate::limits::Limits;

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Skip detection and read as this format (`--format`).
    pub format: Option<Format>,
    /// Size and count caps.
    pub limits: Limits,
    /// Which referenced files may be opened.
    pub dependencies: DependencyPolicy,
}

/// What a format's `open` function gets.
#[derive(Debug)]
pub struct OpenContext<'a> {
    /// The image file.
    pub source: Arc<dyn ByteSource>,
    /// Caps.
    pub limits: &'a Limits,
    /// Which referenced files may be opened.
    pub dependencies: DependencyPolicy,
}

impl OpenContext<'_> {
    /// The image's name, for errors.
    pub fn name(&self) -> &str {
        self.source.name()
    }
}

/// Detects (unless overridden) and opens `source`.
///
/// A compressed or archived source is refused here with a hint: the caller
/// (the imgcheck facade) unwraps containers before calling this.
pub fn open(source: Arc<dyn ByteSource>, options: &OpenOptions) -> Result<VirtualDisk, DiskError> {
    let format = match options.format {
        Some(f) => f,
        None => match detect(source.as_ref())? {
            Detected::Disk(f) => f,
            Detected::Container(c) => {
                return Err(unsupported(
                    source.name(),
                    format!("a {c}-compressed image at this layer"),
                    Some(
                        "decompress it first, or open it through imgcheck::open which unwraps gzip and bzip2",
                    ),
                ));
            }
            Detected::Unsupported(what) => {
                return Err(unsupported(
                    source.name(),
                    format!("the {what} format"),
                    Some("convert it with `qemu-img convert -O qcow2` first"),
                ));
            }
        },
    };
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
