//! Byte sources: the bottom layer of imgcheck.
//!
//! Everything above this crate (disk formats, partition tables, the ext4
//! walk) reads through one small trait, [`ByteSource`]: "give me exactly
//! `buf.len()` bytes at `offset`, or an error". A source may be a local file,
//! a buffer in memory, an http(s) URL, or a decompressed view of a gzip or
//! bzip2 stream. Because the trait is this small, every parser can be tested
//! on a `Vec<u8>` and fuzzed without touching the filesystem.
//!
//! Sources can be slow to seek (a URL costs a round trip; a compressed stream
//! must decode from its nearest restart point), so callers should read in a
//! few large pieces rather than many small ones, and [`ByteSource::access`]
//! says which kind of source they hold.
//!
//! What it interprets: only the containers it unwraps (gzip members and
//! bzip2 blocks, HTTP responses), each treated as hostile. Disk formats and
//! filesystems live above. It resolves which *other* files a source may
//! reach ([`ByteSource::open_sibling`]), because it is the only layer that
//! knows where a source lives; whether a name may be followed at all is the
//! disk layer's decision.
//!
//! It also defines the one error type every layer reports in, [`Error`]
//! (alias [`SourceError`]), with its [`ErrorKind`]: see the `error` module.

mod decompress;
mod error;
mod file;
#[cfg(feature = "http")]
mod http;
mod mem;
#[cfg(feature = "http")]
pub mod net;
mod slice;

pub use decompress::{
    Bzip2Source, DecompressOptions, GzipSource, Progress, ProgressFn, StreamInfo,
};
pub use error::{Details, Error, ErrorKind, ExternalReference, Limit, SourceError};
pub use file::FileSource;
#[cfg(feature = "http")]
pub use http::{HttpOptions, HttpSource, RemoteInfo};
pub use mem::MemSource;
pub use slice::SliceSource;

use std::fmt;
use std::sync::Arc;

/// How expensive random access is for a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Local storage or memory: small random reads are fine.
    Random,
    /// Each read has a latency cost (network, decompression restart):
    /// callers should batch and read ahead.
    Slow,
}

/// A run of a sparse medium, from an asked offset to `end`
/// ([`ByteSource::sparse_run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseRun {
    /// True: stored bytes. False: a hole, reads as zeros.
    pub data: bool,
    /// First byte past the run (at most the source's length).
    pub end: u64,
}

/// A random-access, read-only sequence of bytes of known length.
///
/// The contract of [`read_exact_at`](ByteSource::read_exact_at) is strict:
/// it fills the whole buffer or returns an error. A read that ends beyond
/// [`len`](ByteSource::len) is an error (kind [`ErrorKind::Truncated`]), never a
/// short read. Implementations are `Send + Sync` and take `&self`, so one
/// source can serve many threads (conversion runs on rayon).
pub trait ByteSource: Send + Sync + fmt::Debug {
    /// A name for messages: the path or URL the source was opened from.
    fn name(&self) -> &str;

    /// Total length in bytes.
    fn len(&self) -> u64;

    /// True if the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError>;

    /// Whether small random reads are cheap.
    fn access(&self) -> Access {
        Access::Random
    }

    /// Bytes fetched from the underlying medium so far (for measuring how
    /// much of an image a command touched). Wrappers report their inner
    /// source's figure.
    fn bytes_fetched(&self) -> u64 {
        0
    }

    /// Bytes the medium occupies on its storage (allocated blocks for a
    /// sparse local file), if known. `qemu-img info` calls this `actual-size`.
    fn allocated_size(&self) -> Option<u64> {
        None
    }

    /// For a sparse medium: whether the byte at `offset` (< `len()`) is
    /// stored (data) or in a hole that reads as zeros, and where that run
    /// ends. `None` when the medium cannot tell; treat that as data.
    ///
    /// Local files answer with `lseek(SEEK_DATA/SEEK_HOLE)`, as qemu's
    /// file-posix driver does, so a raw image's holes are never read.
    fn sparse_run(&self, offset: u64) -> Option<SparseRun> {
        let _ = offset;
        None
    }

    /// Open another file that lives next to this one (a VMDK extent, a
    /// backing file), by the name an image header gave.
    ///
    /// The caller (the disk layer) decides whether a name may be followed at
    /// all; this method only resolves it. Sources with no notion of a
    /// neighbourhood (memory buffers) return an [`ErrorKind::Policy`] error.
    fn open_sibling(&self, name: &str) -> Result<Arc<dyn ByteSource>, SourceError> {
        Err(SourceError::no_siblings(self.name(), name))
    }
}

impl<T: ByteSource + ?Sized> ByteSource for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        (**self).read_exact_at(offset, buf)
    }
    fn access(&self) -> Access {
        (**self).access()
    }
    fn bytes_fetched(&self) -> u64 {
        (**self).bytes_fetched()
    }
    fn allocated_size(&self) -> Option<u64> {
        (**self).allocated_size()
    }
    fn sparse_run(&self, offset: u64) -> Option<SparseRun> {
        (**self).sparse_run(offset)
    }
    fn open_sibling(&self, name: &str) -> Result<Arc<dyn ByteSource>, SourceError> {
        (**self).open_sibling(name)
    }
}

/// Checks that `offset..offset+len` lies inside a source of `size` bytes and
/// returns the end offset. Every implementation calls this first, so the
/// out-of-range error reads the same everywhere.
pub fn check_range(name: &str, offset: u64, len: usize, size: u64) -> Result<u64, SourceError> {
    let len64 = u64::try_from(len).unwrap_or(u64::MAX);
    match offset.checked_add(len64) {
        Some(end) if end <= size => Ok(end),
        _ => Err(SourceError::out_of_range(name, offset, len64, size)),
    }
}

/// Reads `len` bytes at `offset` into a new vector, refusing lengths above
/// `limit` before allocating (`len` usually comes from an untrusted header).
pub fn read_vec(
    src: &dyn ByteSource,
    offset: u64,
    len: u64,
    limit: u64,
) -> Result<Vec<u8>, SourceError> {
    if len > limit {
        return Err(SourceError::too_large(src.name(), offset, len, limit));
    }
    let n =
        usize::try_from(len).map_err(|_| SourceError::too_large(src.name(), offset, len, limit))?;
    check_range(src.name(), offset, n, src.len())?;
    let mut v = vec![0u8; n];
    src.read_exact_at(offset, &mut v)?;
    Ok(v)
}

/// Reads up to `buf.len()` bytes at `offset`, stopping at the end of the
/// source, and returns how many were read. For probing prefixes of files that
/// may be shorter than the probe (detection), where a short file is not an
/// error.
pub fn read_prefix(
    src: &dyn ByteSource,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize, SourceError> {
    let avail = src.len().saturating_sub(offset);
    let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
    if n > 0 {
        src.read_exact_at(offset, &mut buf[..n])?;
    }
    Ok(n)
}
