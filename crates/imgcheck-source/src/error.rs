//! The one error type of the source layer.

use std::io;

/// Why a read from a [`ByteSource`](crate::ByteSource) failed.
///
/// Every variant names the source, so a message printed three layers up
/// still says which file or URL was at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The operating system (or transport) failed.
    #[error("{name}: read of {len} bytes at offset {offset} failed: {source}")]
    Io {
        /// Source name.
        name: String,
        /// Offset of the failed read.
        offset: u64,
        /// Length of the failed read.
        len: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Opening the source failed.
    #[error("{name}: cannot open: {source}")]
    Open {
        /// Path or URL.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The read ends beyond the end of the source: the file is truncated or
    /// a header points outside it.
    #[error(
        "{name}: read of {len} bytes at offset {offset} runs past the end ({size} bytes); the file is truncated or a table points outside it"
    )]
    OutOfRange {
        /// Source name.
        name: String,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Source length.
        size: u64,
    },
    /// A length taken from the image exceeds what we are willing to allocate.
    #[error("{name}: structure at offset {offset} claims {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// Source name.
        name: String,
        /// Offset of the structure.
        offset: u64,
        /// Claimed length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The source cannot reach other files (memory buffers).
    #[error("{source_name}: cannot open {sibling:?}: this source has no directory")]
    NoSiblings {
        /// Source name.
        source_name: String,
        /// The name asked for.
        sibling: String,
    },
    /// A decoder or transport reported bad data (CRC mismatch, bad stream).
    #[error("{name}: {structure} at offset {offset}: {reason}")]
    Corrupt {
        /// Source name.
        name: String,
        /// Which structure (gzip member, bzip2 block, HTTP response).
        structure: String,
        /// Offset (compressed or transport offset) where it was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A compressed stream decodes to more than the caller's limit
    /// (`max_uncompressed`): decoding stopped there, so a decompression bomb
    /// costs the limit, not the bomb. The check layer reports it as
    /// `size.too_large`.
    #[error(
        "{name}: {structure} decompresses to more than the limit of {limit} bytes (stopped at compressed offset {compressed_offset} after {uncompressed_so_far} bytes; the stream was not read to its end)"
    )]
    LimitExceeded {
        /// Source name.
        name: String,
        /// Container and structure ("gzip stream", "bzip2 stream").
        structure: String,
        /// The limit that was passed.
        limit: u64,
        /// Uncompressed bytes produced when decoding stopped (> limit).
        uncompressed_so_far: u64,
        /// Compressed offset reached when decoding stopped.
        compressed_offset: u64,
    },
    /// Anything else, with a message that already names the source.
    #[error("{0}")]
    Other(String),
}
