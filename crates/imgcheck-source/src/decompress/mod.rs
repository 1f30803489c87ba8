//! Random access into compressed images (`.img.gz`, `.qcow2.bz2`, ...)
//! without writing the decompressed image anywhere.
//!
//! Both sources make one pass over the compressed file at open: it decodes
//! everything, verifies every checksum the container defines, counts the true
//! uncompressed size, and builds an index of restart points. Random reads
//! then decode from the nearest restart point, with a small LRU of decoded
//! chunks so that the many small metadata reads of a check do not decode the
//! same bytes again.
//!
//! * [`GzipSource`]: the zran method (restart points = compressed bit offset
//!   + 32 KiB window), see `gzip.rs`.
//! * [`Bzip2Source`]: bzip2 blocks are independent, so every block is a
//!   restart point and blocks are decoded in parallel, see `bzip2/`.
//!
//! The open pass stops as soon as the output passes
//! [`DecompressOptions::max_uncompressed`] with
//! [`ErrorKind::LimitExceeded`], so a decompression bomb costs the limit.

mod bzip2;
mod gzip;
mod zstream;

pub use self::bzip2::Bzip2Source;
pub use gzip::GzipSource;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::{ErrorKind, Limit, SourceError};

/// Progress of an open pass, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Compressed bytes consumed so far.
    pub compressed_done: u64,
    /// Compressed size of the file.
    pub compressed_total: u64,
    /// Uncompressed bytes produced so far.
    pub uncompressed: u64,
    /// Uncompressed bytes actually run through the decoder so far: less
    /// than `uncompressed` when repeated bzip2 blocks were recognised and
    /// accounted without decoding them again (always equal for gzip).
    pub decoded: u64,
}

/// A progress callback (called every few MiB of input during the open pass).
#[derive(Clone)]
pub struct ProgressFn(pub Arc<dyn Fn(Progress) + Send + Sync>);

impl ProgressFn {
    /// Wraps a closure.
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn")
    }
}

/// Options for opening a compressed source.
#[derive(Clone, Debug)]
pub struct DecompressOptions {
    /// Stop with [`ErrorKind::LimitExceeded`] once the uncompressed output
    /// passes this many bytes. `None`: no limit.
    pub max_uncompressed: Option<u64>,
    /// Memory the restart-point index may use, in bytes (gzip: 32 KiB
    /// windows; bzip2: 24 bytes per block). The gzip restart spacing grows
    /// (doubles) whenever the index would pass it.
    pub index_budget: usize,
    /// Memory for the LRU of decoded chunks, in bytes.
    pub cache_budget: usize,
    /// Called during the open pass.
    pub progress: Option<ProgressFn>,
}

impl Default for DecompressOptions {
    fn default() -> Self {
        Self {
            max_uncompressed: None,
            index_budget: 32 << 20,
            cache_budget: 32 << 20,
            progress: None,
        }
    }
}

/// What the open pass learned about a compressed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// `"gzip"` or `"bzip2"`.
    pub container: &'static str,
    /// Size of the compressed file.
    pub compressed_size: u64,
    /// True uncompressed size, counted while decoding (never taken from a
    /// trailer: gzip's ISIZE wraps at 4 GiB).
    pub uncompressed_size: u64,
    /// gzip members or bzip2 streams.
    pub members: u64,
    /// bzip2 blocks (0 for gzip).
    pub blocks: u64,
    /// bzip2 blocks run through the decoder at open: fewer than `blocks`
    /// when blocks repeat bit for bit (runs of zeros, decompression bombs),
    /// since a repeat is recognised and not decoded again (0 for gzip).
    pub blocks_decoded: u64,
    /// Restart points in the index.
    pub index_points: usize,
    /// Bytes the index occupies in memory.
    pub index_bytes: usize,
    /// Uncompressed bytes between gzip restart points (bzip2: 0, a point
    /// per block).
    pub spacing: u64,
    /// Every checksum was verified and the stream ended properly. Always
    /// true for an opened source: a truncated or corrupt stream is an error.
    pub complete: bool,
}

/// LRU of decoded chunks keyed by a number, bounded in bytes.
#[derive(Debug)]
pub(crate) struct ChunkCache {
    budget: usize,
    used: usize,
    entries: VecDeque<(u64, Arc<[u8]>)>,
}

impl ChunkCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            entries: VecDeque::new(),
        }
    }

    pub(crate) fn get(&mut self, key: u64) -> Option<Arc<[u8]>> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        let e = self.entries.remove(i)?;
        let data = e.1.clone();
        self.entries.push_front(e);
        Some(data)
    }

    pub(crate) fn put(&mut self, key: u64, data: Arc<[u8]>) {
        if self.entries.iter().any(|(k, _)| *k == key) {
            return;
        }
        self.used = self.used.saturating_add(data.len());
        self.entries.push_front((key, data));
        // Keep at least the newest entry even if it alone is over budget.
        while self.used > self.budget && self.entries.len() > 1 {
            if let Some((_, old)) = self.entries.pop_back() {
                self.used = self.used.saturating_sub(old.len());
            }
        }
    }
}

/// Calls the progress callback.
pub(crate) fn report(opts: &DecompressOptions, p: Progress) {
    if let Some(f) = &opts.progress {
        (f.0)(p);
    }
}

/// The error for passing `max_uncompressed`.
pub(crate) fn limit_error(
    name: &str,
    structure: &str,
    limit: u64,
    so_far: u64,
    compressed_offset: u64,
) -> SourceError {
    SourceError::new(
        ErrorKind::LimitExceeded(Limit {
            what: Limit::UNCOMPRESSED.into(),
            value: so_far,
            limit,
        }),
        name,
        format!(
            "decompresses to more than the limit of {limit} bytes (stopped after {so_far} bytes; the stream was not read to its end)"
        ),
    )
    .at(structure, compressed_offset)
}

/// A corrupt-stream error.
pub(crate) fn corrupt(
    name: &str,
    structure: impl Into<String>,
    offset: u64,
    reason: impl Into<String>,
) -> SourceError {
    SourceError::corrupt(name, structure, offset, reason)
}
