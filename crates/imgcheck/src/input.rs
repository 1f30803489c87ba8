//! Opening an image given by the user: path or URL → byte source → the
//! disk layer's one opener ([`imgcheck_disk::open_image`], which unwraps
//! gzip/bzip2 and opens the format).

use std::sync::Arc;

use imgcheck_disk::{Container, Found, VirtualDisk};
use imgcheck_source::{ByteSource, FileSource, HttpOptions, HttpSource, RemoteInfo, StreamInfo};

pub use imgcheck_disk::OpenOptions;

use crate::Error;

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

/// The file or URL opened, but the image in it did not: the error, what
/// the opener found before it failed, and the file itself (for its size and
/// I/O statistics). Nothing needs to be opened again to report on it.
#[derive(Debug)]
pub(crate) struct FailedOpen {
    pub error: Error,
    pub found: Box<Found>,
    pub file: Arc<dyn ByteSource>,
    pub remote: Option<RemoteInfo>,
}

/// Opens `location` (a path, or an `http://` / `https://` URL read with
/// range requests) as a virtual disk.
pub fn open(location: &str, options: &OpenOptions) -> Result<Input, Error> {
    match open_or_report(location, options)? {
        Ok(input) => Ok(input),
        Err(failed) => Err(failed.error),
    }
}

/// [`open`], keeping what was learned when the image (not the file) fails
/// to open. The outer `Err` is a file that could not be opened at all.
pub(crate) fn open_or_report(
    location: &str,
    options: &OpenOptions,
) -> Result<Result<Input, FailedOpen>, Error> {
    let (file, remote): (Arc<dyn ByteSource>, _) = if is_url(location) {
        let s = HttpSource::open(location, &HttpOptions::default())?;
        let info = s.info().clone();
        (Arc::new(s), Some(info))
    } else {
        (Arc::new(FileSource::open(location)?), None)
    };
    let opened = match imgcheck_disk::open_image(file.clone(), options) {
        Ok(o) => o,
        Err(f) => {
            return Ok(Err(FailedOpen {
                error: Error::Disk(f.error),
                found: f.found,
                file,
                remote,
            }));
        }
    };
    let disk = opened.disk;
    let allocated_size = file.allocated_size().map(|a| {
        // Add the other host files (VMDK extents) the format opened.
        let img = disk.image();
        a + (1..img.host_file_count())
            .filter_map(|i| img.host_file(i)?.allocated_size())
            .sum::<u64>()
    });
    Ok(Ok(Input {
        location: location.to_owned(),
        disk,
        container: opened.found.container,
        file_size: file.len(),
        allocated_size,
        source: file,
        stream: opened.found.stream,
        remote,
    }))
}

/// Whether `location` is an http(s) URL rather than a path.
fn is_url(location: &str) -> bool {
    let head = location.get(..8).unwrap_or(location).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}
