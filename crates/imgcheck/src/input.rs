//! Opening an image given by the user: path → byte source → (unwrap
//! container) → virtual disk.

use std::sync::Arc;

use imgcheck_disk::{
    Container, DependencyPolicy, Detected, Format, Limits, VirtualDisk, detect, unsupported,
};
use imgcheck_source::{ByteSource, FileSource};

use crate::Error;

/// Options for [`open`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Read as this format instead of detecting it.
    pub format: Option<Format>,
    /// Open referenced files outside the image's directory.
    pub allow_external: bool,
    /// Caps on untrusted sizes.
    pub limits: Limits,
}

/// An opened image and what we learned on the way in.
#[derive(Debug, Clone)]
pub struct Input {
    /// What the user gave.
    pub location: String,
    /// The guest disk.
    pub disk: VirtualDisk,
    /// The compression around the image, if any.
    pub container: Option<Container>,
    /// Size of the file as stored (compressed size for a compressed file).
    pub file_size: u64,
    /// Bytes allocated on the host for the file(s), if known.
    pub allocated_size: Option<u64>,
    /// The outermost source (for I/O statistics).
    pub source: Arc<dyn ByteSource>,
}

/// Opens `location` (a path) as a virtual disk.
pub fn open(location: &str, options: &OpenOptions) -> Result<Input, Error> {
    let source: Arc<dyn ByteSource> = Arc::new(FileSource::open(location)?);
    let file_size = source.len();
    let allocated_size = source.allocated_size();
    let container = if options.format.is_none() {
        match detect(source.as_ref())? {
            Detected::Container(c) => Some(c),
            _ => None,
        }
    } else {
        None
    };
    if let Some(c) = container {
        return Err(Error::Disk(unsupported(
            source.name(),
            format!("reading {c}-compressed images"),
            Some("decompress it first (e.g. gzip -dk / bzip2 -dk)"),
        )));
    }
    let disk_options = imgcheck_disk::OpenOptions {
        format: options.format,
        limits: options.limits.clone(),
        dependencies: if options.allow_external {
            DependencyPolicy::AllowExternal
        } else {
            DependencyPolicy::SameDirectory
        },
    };
    let disk = imgcheck_disk::open(source.clone(), &disk_options)?;
    let allocated_size = allocated_size.map(|a| {
        // Add the other host files (VMDK extents) the format opened.
        let img = disk.image();
        a + (1..img.host_file_count())
            .filter_map(|i| img.host_file(i)?.allocated_size())
            .sum::<u64>()
    });
    Ok(Input {
        location: location.to_owned(),
        disk,
        container,
        file_size,
        allocated_size,
        source,
    })
}
