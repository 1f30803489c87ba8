//! Opening an image given by the user: path → byte source → (unwrap
//! container) → virtual disk.

use std::sync::Arc;

use imgcheck_disk::{
    Container, DependencyPolicy, Detected, Format, Limits, VirtualDisk, detect, unsupported,
};
use imgcheck_source::{
    ByteSource, Bzip2Source, DecompressOptions, FileSource, GzipSource, HttpOptions, HttpSource,
    ProgressFn, RemoteInfo, StreamInfo,
};

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
    /// For a gzip/bzip2 file: stop decompressing (with
    /// `SourceError::LimitExceeded`) once the uncompressed stream passes
    /// this many bytes, so a decompression bomb costs the limit.
    pub max_uncompressed: Option<u64>,
    /// For a gzip/bzip2 file: called during the one streaming pass that
    /// verifies and indexes it (the CLI draws a progress bar).
    pub progress: Option<ProgressFn>,
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
    /// For a compressed file: what the decompression pass learned (true
    /// uncompressed size, members, index size).
    pub stream: Option<StreamInfo>,
    /// For an `http://` / `https://` location: what the server said (size,
    /// whether `HEAD` works, which DigitalOcean's URL import needs).
    pub remote: Option<RemoteInfo>,
}

/// Opens `location` (a path, or an `http://` / `https://` URL read with
/// range requests) as a virtual disk.
pub fn open(location: &str, options: &OpenOptions) -> Result<Input, Error> {
    let (source, remote): (Arc<dyn ByteSource>, _) = if is_url(location) {
        let s = HttpSource::open(location, &HttpOptions::default())?;
        let info = s.info().clone();
        (Arc::new(s), Some(info))
    } else {
        (Arc::new(FileSource::open(location)?), None)
    };
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
    let (source, stream) = match container {
        None => (source, None),
        Some(c) => unwrap_container(source, c, options)?,
    };
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
        stream,
        remote,
    })
}

/// Whether `location` is an http(s) URL rather than a path.
fn is_url(location: &str) -> bool {
    let head = location.get(..8).unwrap_or(location).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}

/// Wraps a compressed file in its decompressing source and checks what is
/// inside. xz, zstd, zip and tar are refused with what to do instead.
fn unwrap_container(
    file: Arc<dyn ByteSource>,
    c: Container,
    options: &OpenOptions,
) -> Result<(Arc<dyn ByteSource>, Option<StreamInfo>), Error> {
    let dopts = DecompressOptions {
        max_uncompressed: options.max_uncompressed,
        progress: options.progress.clone(),
        ..Default::default()
    };
    let (inner, info): (Arc<dyn ByteSource>, StreamInfo) = match c {
        Container::Gzip => {
            let s = GzipSource::open(file.clone(), &dopts)?;
            let info = s.info().clone();
            (Arc::new(s), info)
        }
        Container::Bzip2 => {
            let s = Bzip2Source::open(file.clone(), &dopts)?;
            let info = s.info().clone();
            (Arc::new(s), info)
        }
        Container::Xz => {
            return Err(Error::Disk(unsupported(
                file.name(),
                "reading xz-compressed images",
                Some(
                    "decompress it (xz -dk) and recompress with gzip or bzip2 if you need a compressed upload; DigitalOcean rejects xz",
                ),
            )));
        }
        Container::Tar => {
            return Err(Error::Disk(unsupported(
                file.name(),
                "reading images inside tar archives",
                Some("this is an OVA/tar: extract the .vmdk first (tar -xf FILE)"),
            )));
        }
        other => {
            return Err(Error::Disk(unsupported(
                file.name(),
                format!("reading {other}-compressed images"),
                Some("decompress it first; imgcheck reads gzip and bzip2 in place"),
            )));
        }
    };
    // A container inside the container (.tar.gz, .gz.gz) is not an image.
    if let Detected::Container(c2) = detect(inner.as_ref())? {
        let hint = if c2 == Container::Tar {
            "this is a compressed tar (an OVA?): extract the image first"
        } else {
            "decompress the outer layer first"
        };
        return Err(Error::Disk(unsupported(
            file.name(),
            format!("a {c2} stream inside the {c} stream"),
            Some(hint),
        )));
    }
    Ok((inner, Some(info)))
}
