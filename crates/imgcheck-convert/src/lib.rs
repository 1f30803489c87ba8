//! Conversion: writes a [`VirtualDisk`] out as another format.
//!
//! Everything here is written on top of the disk layer's allocation map
//! ([`VirtualDisk::extents`]): runs that read as zero are never read and
//! become holes (raw) or absent clusters (qcow2); data runs are read in
//! large chunks, on all cores.
//!
//! | output | module | how |
//! |---|---|---|
//! | raw | `raw` | workers read and write their own chunks (positional writes), holes for zeros |
//! | qcow2 | `qcow2` | layout of one sequential pass (data, L2 tables, L1, refcounts, header last); workers write their own clusters, placed in guest order by turns |
//! | raw + gzip | `compress` | pigz method: independent deflate blocks primed with the previous 32 KiB |
//! | raw + bzip2 | `compress` | pbzip2 method: independent 900 kB bzip2 streams |
//! | qcow2 + gzip | `qcow2`, `compress` | qcow2 stream through the same parallel deflate; header in a fixed-size first member |
//!
//! The compressed outputs run the expensive part (reads, zero checks,
//! compression) on a worker pool through one ordered pipeline (`pipeline`)
//! with a bounded number of jobs in flight, and write sequentially in
//! order. Uncompressed outputs have nothing to keep in order but the qcow2
//! placement, so their workers read, check and write a chunk each, with the
//! bytes still in the CPU cache, in writes of at most 256 KiB
//! (`raw::WRITE_MAX` says why).
//!
//! Outputs are written to a temporary name in the target directory and
//! renamed into place only when complete ([`output::AtomicOutput`]), so an
//! interrupted convert never leaves a file that looks finished.

mod compress;
pub mod output;
mod pipeline;
mod qcow2;
mod raw;

pub use compress::{BZ_BLOCK, GZ_BLOCK, write_bzip2, write_gzip};
pub use output::AtomicOutput;
pub use qcow2::{CLUSTER as QCOW2_CLUSTER, write_qcow2, write_qcow2_gz};
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
    /// The requested combination is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// Something that should not happen (a compressor error, no threads).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Tuning shared by the writers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// Compression level (gzip 0-9, default 6; bzip2 1-9, default 9).
    pub level: Option<u32>,
}

/// Output container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Raw disk image.
    Raw,
    /// qcow2 v3, zero clusters left out.
    Qcow2,
}

/// Compression around the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// None.
    None,
    /// One gzip member (pigz-style parallel deflate).
    Gzip,
    /// Concatenated bzip2 streams (pbzip2-style).
    Bzip2,
}

/// Writes `disk` into `out` (a fresh [`AtomicOutput`]) as `format` wrapped
/// in `compress`, without committing it. Everything but qcow2 + bzip2 is
/// supported (the qcow2 header is written last into room kept for it; a
/// bzip2 stream cannot be padded to a fixed size the way a gzip member can).
pub fn convert(
    disk: &imgcheck_disk::VirtualDisk,
    out: &AtomicOutput,
    format: OutputFormat,
    compress: Compress,
    options: &Options,
    progress: Progress<'_>,
) -> Result<ConvertStats, ConvertError> {
    let path = out.temp_path();
    match (format, compress) {
        (OutputFormat::Raw, Compress::None) => {
            write_raw(disk, out.file(), path, options, progress)
        }
        (OutputFormat::Qcow2, Compress::None) => {
            write_qcow2(disk, out.file(), path, options, progress)
        }
        (OutputFormat::Raw, Compress::Gzip | Compress::Bzip2) => {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, out.file());
            let r = if compress == Compress::Gzip {
                write_gzip(disk, &mut w, options, progress)
            } else {
                write_bzip2(disk, &mut w, options, progress)
            };
            // Name the real file in write errors.
            r.map_err(|e| match e {
                ConvertError::Write { source, .. } => ConvertError::Write {
                    path: path.to_path_buf(),
                    source,
                },
                other => other,
            })
        }
        (OutputFormat::Qcow2, Compress::Gzip) => {
            write_qcow2_gz(disk, out.file(), path, options, progress)
        }
        (OutputFormat::Qcow2, Compress::Bzip2) => Err(ConvertError::Unsupported(
            "qcow2 output cannot be bzip2-compressed; use --compress gzip, or -O raw --compress bzip2"
                .into(),
        )),
    }
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

/// Worker threads for `threads` as the user gave it: 0 is one per core.
pub(crate) fn worker_count(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// Runs `work` on `threads` named scoped threads and waits for them all.
/// A thread that cannot be started is reported through `fail` (which must
/// also tell the running workers to stop), and no more are started.
pub(crate) fn run_workers(
    threads: usize,
    work: impl Fn() + Sync,
    fail: impl Fn(ConvertError) + Sync,
) {
    std::thread::scope(|s| {
        for i in 0..threads {
            let work = &work;
            let spawned = std::thread::Builder::new()
                .name(format!("imgcheck-convert-{i}"))
                .spawn_scoped(s, work);
            if let Err(e) = spawned {
                fail(ConvertError::Internal(format!(
                    "cannot start worker threads: {e}"
                )));
                break;
            }
        }
    });
}
