//! Conversion: writes a [`VirtualDisk`] out as another format.
//!
//! Everything here is written on top of the disk layer's allocation map
//! ([`VirtualDisk::extents`]): runs that read as zero are never read and
//! become holes (raw) or absent clusters (qcow2); data runs are read in
//! large chunks, on all cores.
//!
//! Outputs are written to a temporary name in the target directory and
//! renamed into place only when complete ([`output::AtomicOutput`]), so an
//! interrupted convert never leaves a file that looks finished.

pub mod output;
mod raw;

pub use output::AtomicOutput;
pub use raw::write_raw;

use imgcheck_disk::DiskError;
use std::path::PathBuf;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// Reading the input failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Writing the output failed.
    #[error("{path}: write failed: {source}")]
    Write {
        /// Output path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The output exists and `force` was not given.
    #[error("{0}: already exists (pass --force to overwrite)")]
    Exists(PathBuf),
}

/// What a conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Guest bytes covered (the virtual size).
    pub virtual_size: u64,
    /// Guest bytes read from the input (data runs).
    pub bytes_read: u64,
    /// Bytes written to the output (zero blocks inside data runs are skipped).
    pub bytes_written: u64,
}

/// Progress callback: called with the number of guest bytes just finished.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);
