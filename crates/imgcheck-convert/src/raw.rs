//! Writing a raw image: guest bytes at guest offsets, holes for zeros.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use imgcheck_disk::{MapKind, VirtualDisk};

use crate::pipeline::{build_pool, run_ordered};
use crate::{ConvertError, ConvertStats, Progress};

/// Work unit: each worker maps and reads one chunk. 4 MiB keeps
/// per-thread memory small and amortises the per-read cost of slow sources.
const CHUNK: u64 = 4 << 20;
/// Zero detection granularity inside data runs (a page-sized hole is the
/// smallest most filesystems keep).
const ZERO_BLOCK: usize = 64 << 10;
/// Chunks read ahead of the writer.
const WINDOW: usize = 8;

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
    let mut written = 0u64;
    let chunks = size.div_ceil(CHUNK);
    // Workers map, read and zero-check chunks; this thread writes their
    // non-zero runs in order, so the output grows sequentially as
    // qemu-img's does (parallel writes at scattered offsets cost more
    // kernel time than they save). At most WINDOW chunks are in memory.
    let pool = build_pool(0)?;
    run_ordered(
        &pool,
        chunks,
        WINDOW,
        |i| -> Result<(u64, Vec<(u64, Vec<u8>)>), ConvertError> {
            let start = i * CHUNK;
            let len = CHUNK.min(size - start);
            let mut runs = Vec::new();
            for ext in disk.extents(start, len) {
                let ext = ext?;
                if ext.kind.reads_zero() {
                    continue;
                }
                debug_assert!(!matches!(ext.kind, MapKind::Zero | MapKind::Unallocated));
                // ext.len <= CHUNK, fits in usize.
                let mut buf = vec![0u8; ext.len as usize];
                disk.read_at(ext.guest_offset, &mut buf)?;
                read.fetch_add(ext.len, Ordering::Relaxed);
                // Maximal runs of non-zero blocks; all-zero blocks stay holes.
                let mut run_start: Option<usize> = None;
                let mut off = 0usize;
                let mut spans = Vec::new();
                while off < buf.len() {
                    let end = (off + ZERO_BLOCK).min(buf.len());
                    match (is_zero(&buf[off..end]), run_start) {
                        (false, None) => run_start = Some(off),
                        (true, Some(st)) => {
                            spans.push((st, off));
                            run_start = None;
                        }
                        _ => {}
                    }
                    off = end;
                }
                if let Some(st) = run_start {
                    spans.push((st, buf.len()));
                }
                if spans.len() == 1 && spans[0] == (0, buf.len()) {
                    runs.push((ext.guest_offset, buf));
                } else {
                    for (a, b) in spans {
                        runs.push((ext.guest_offset + a as u64, buf[a..b].to_vec()));
                    }
                }
            }
            Ok((len, runs))
        },
        |(len, runs)| {
            for (at, data) in runs {
                out.write_all_at(&data, at)
                    .map_err(|source| ConvertError::Write {
                        path: path.to_path_buf(),
                        source,
                    })?;
                written += data.len() as u64;
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
        bytes_written: written,
    })
}

/// True if every byte is zero. Word-at-a-time via `align_to` is not needed:
/// the compiler vectorises this loop.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |acc, &x| acc | x) == 0
}
