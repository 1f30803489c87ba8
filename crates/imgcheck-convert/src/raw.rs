//! Writing a raw image: guest bytes at guest offsets, holes for zeros.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use imgcheck_disk::{MapKind, VirtualDisk};
use rayon::prelude::*;

use crate::{ConvertError, ConvertStats, Progress};

/// Work unit: each rayon task maps, reads and writes one chunk. 4 MiB keeps
/// per-thread memory small and amortises the per-read cost of slow sources.
const CHUNK: u64 = 4 << 20;
/// Zero detection granularity inside data runs (a page-sized hole is the
/// smallest most filesystems keep).
const ZERO_BLOCK: usize = 64 << 10;

/// Writes `disk` to `out` as a raw image, sparse. `out` must be empty (it
/// is extended to the virtual size at the end, so untouched ranges are
/// holes). `path` is only for error messages.
pub fn write_raw(
    disk: &VirtualDisk,
    out: &File,
    path: &Path,
    progress: Progress<'_>,
) -> Result<ConvertStats, ConvertError> {
    let size = disk.virtual_size();
    let read = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let chunks = size.div_ceil(CHUNK);
    (0..chunks).into_par_iter().try_for_each_init(
        Vec::new,
        |buf: &mut Vec<u8>, i| -> Result<(), ConvertError> {
            let start = i * CHUNK;
            let len = CHUNK.min(size - start);
            for ext in disk.extents(start, len) {
                let ext = ext?;
                if ext.kind.reads_zero() {
                    continue;
                }
                debug_assert!(!matches!(ext.kind, MapKind::Zero | MapKind::Unallocated));
                // ext.len <= CHUNK, fits in usize.
                buf.resize(ext.len as usize, 0);
                disk.read_at(ext.guest_offset, buf)?;
                read.fetch_add(ext.len, Ordering::Relaxed);
                // Write maximal runs of non-zero blocks with one call each;
                // all-zero blocks stay holes.
                let base = ext.guest_offset;
                let mut run_start: Option<usize> = None;
                let write_run = |from: usize, to: usize| -> Result<(), ConvertError> {
                    out.write_all_at(&buf[from..to], base + from as u64)
                        .map_err(|source| ConvertError::Write {
                            path: path.to_path_buf(),
                            source,
                        })?;
                    written.fetch_add((to - from) as u64, Ordering::Relaxed);
                    Ok(())
                };
                let mut off = 0usize;
                while off < buf.len() {
                    let end = (off + ZERO_BLOCK).min(buf.len());
                    let zero = is_zero(&buf[off..end]);
                    match (zero, run_start) {
                        (false, None) => run_start = Some(off),
                        (true, Some(st)) => {
                            write_run(st, off)?;
                            run_start = None;
                        }
                        _ => {}
                    }
                    off = end;
                }
                if let Some(st) = run_start {
                    write_run(st, buf.len())?;
                }
            }
            progress(len);
            Ok(())
        },
    )?;
    out.set_len(size).map_err(|source| ConvertError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ConvertStats {
        virtual_size: size,
        bytes_read: read.into_inner(),
        bytes_written: written.into_inner(),
    })
}

/// True if every byte is zero. Word-at-a-time via `align_to` is not needed:
/// the compiler vectorises this loop.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |acc, &x| acc | x) == 0
}
