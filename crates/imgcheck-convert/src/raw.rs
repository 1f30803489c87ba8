//! Writing a raw image: guest bytes at guest offsets, holes for zeros.
//!
//! Profiled against `qemu-img convert -O raw`, both spend nearly all their
//! time in the kernel copying bytes: page cache → user buffer (`pread`) and
//! user buffer → page cache (`pwrite`). What is left to win is keeping
//! those copies cheap:
//!
//! * Each worker reads one [`PIECE`] into a buffer it reuses and writes it
//!   out at once, while the bytes are still in the CPU cache (handing
//!   multi-MiB buffers to a writer thread cost about 40% more kernel time
//!   in the write copy and kept tens of MiB resident).
//! * Writes are at most [`WRITE_MAX`] long: see there.
//! * Each span is allocated ([`preallocate`]) right before it is written.
//! * Workers take chunks from a shared counter and report progress
//!   themselves: raw output has no order to keep, so there is no ordered
//!   pipeline, no channel and no thread handoff per chunk.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use imgcheck_disk::VirtualDisk;

use crate::{ConvertError, ConvertStats, Options, Progress, run_workers, worker_count};

/// Work unit handed to a worker: it maps the chunk (one walk of the
/// allocation map) and copies its data runs piece by piece.
const CHUNK: u64 = 2 << 20;
/// Read unit: one piece stays in a core's L2 cache between the read copy
/// and the write copy.
const PIECE: usize = 256 << 10;
/// The largest write. The page cache sizes the folio of a buffered write
/// after the write (`fgf_set_order`): a 1 MiB write fills a 1 MiB folio.
/// Large folios come from the buddy allocator's large free blocks, which on
/// the benchmark's virtual machine are often cold (memory left free for a
/// few seconds is slow to touch again: the same copy started 8 s after
/// freeing its pages took 3× the kernel time of one started at once, a
/// host reclaiming idle guest memory would explain it). Copying cloud.qcow2 (705 MiB) with pread + pwrite, median of 9:
/// 1 MiB writes 0.64 s of kernel time, 512 KiB 0.36 s, 256 KiB 0.24 s (the
/// difference is all in `copy_folio_from_iter_atomic`). Smaller writes
/// were not better overall: 32 KiB helped the bare copy after idle pauses
/// but cost this writer 25% more kernel time (8× the syscalls, each taking
/// the inode lock and the dirty-page accounting).
pub(crate) const WRITE_MAX: usize = 256 << 10;
/// Zero detection granularity inside data runs: qemu-img's default
/// (`-S 4k`), so the output is as sparse as qemu-img's.
const ZERO_BLOCK: usize = 4 << 10;

/// Writes `disk` to `out` as a raw image, sparse. `out` must be empty (it
/// is extended to the virtual size at the end, so untouched ranges are
/// holes). `path` is only for error messages; `options.threads` workers
/// copy (0: one per core).
pub fn write_raw(
    disk: &VirtualDisk,
    out: &File,
    path: &Path,
    options: &Options,
    progress: Progress<'_>,
) -> Result<ConvertStats, ConvertError> {
    let size = disk.virtual_size();
    let threads = worker_count(options.threads);
    let shared = Shared {
        disk,
        out,
        path,
        progress,
        chunks: size.div_ceil(CHUNK),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
        write_turn: Mutex::new(()),
        read: AtomicU64::new(0),
        written: AtomicU64::new(0),
    };
    run_workers(threads, || shared.work(), |e| shared.fail(e));
    if let Some(e) = shared.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    out.set_len(size).map_err(|source| ConvertError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ConvertStats {
        virtual_size: size,
        bytes_read: shared.read.into_inner(),
        bytes_written: shared.written.into_inner(),
    })
}

/// What the workers of one [`write_raw`] share.
struct Shared<'a> {
    disk: &'a VirtualDisk,
    out: &'a File,
    path: &'a Path,
    progress: Progress<'a>,
    chunks: u64,
    /// Next chunk to hand out.
    next: AtomicU64,
    /// Set on the first error: workers take no new chunk.
    stop: AtomicBool,
    error: Mutex<Option<ConvertError>>,
    /// One writer at a time: buffered writes to one file serialise on its
    /// inode lock anyway, and the kernel lets a waiter spin on that lock
    /// (7% of a profile on a loaded machine); this lock sleeps instead,
    /// while the other worker reads its next piece.
    write_turn: Mutex<()>,
    read: AtomicU64,
    written: AtomicU64,
}

impl Shared<'_> {
    /// One worker: chunks until none is left or something failed.
    fn work(&self) {
        let mut buf = vec![0u8; PIECE];
        while !self.stop.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.chunks {
                break;
            }
            match self.chunk(i, &mut buf) {
                Ok(len) => (self.progress)(len),
                Err(e) => self.fail(e),
            }
        }
    }

    /// Keeps the first error and stops the others.
    fn fail(&self, e: ConvertError) {
        self.stop.store(true, Ordering::Relaxed);
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// Copies the data of chunk `i`; returns its length in guest bytes.
    fn chunk(&self, i: u64, buf: &mut [u8]) -> Result<u64, ConvertError> {
        let size = self.disk.virtual_size();
        let start = i * CHUNK;
        let len = CHUNK.min(size - start);
        for ext in self.disk.extents(start, len) {
            let ext = ext?;
            if ext.kind.reads_zero() {
                continue;
            }
            let end = ext.guest_offset + ext.len;
            let mut pos = ext.guest_offset;
            while pos < end {
                let n = usize::try_from(end - pos).map_or(PIECE, |l| l.min(PIECE));
                let data = &mut buf[..n];
                self.disk.read_at(pos, data)?;
                self.read.fetch_add(n as u64, Ordering::Relaxed);
                self.write_nonzero(data, pos)?;
                pos += n as u64;
            }
        }
        Ok(len)
    }

    /// Writes the non-zero blocks of `data` at `at`; zero blocks stay holes.
    fn write_nonzero(&self, data: &[u8], at: u64) -> Result<(), ConvertError> {
        let mut spans = NonzeroSpans::new(data).peekable();
        if spans.peek().is_none() {
            return Ok(());
        }
        let _turn = self.write_turn.lock().unwrap_or_else(|p| p.into_inner());
        for (a, b) in spans {
            preallocate(self.out, at + a as u64, (b - a) as u64);
            write_at(self.out, &data[a..b], at + a as u64).map_err(|source| {
                ConvertError::Write {
                    path: self.path.to_path_buf(),
                    source,
                }
            })?;
            self.written.fetch_add((b - a) as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// `bytes` at `at`, in writes of at most [`WRITE_MAX`] (see there).
pub(crate) fn write_at(out: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    let mut at = at;
    for piece in bytes.chunks(WRITE_MAX) {
        out.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Allocates `len` bytes of `out` at `at` for the write that follows, as
/// `qemu-img convert -O qcow2` does before its data writes. A buffered
/// write into allocated (unwritten) blocks skips ext4's delayed-allocation
/// bookkeeping per block (reservation, quota, extent-status tree): copying
/// cloud.qcow2 with pread + pwrite took 0.22 s of kernel time instead of
/// 0.27 s (median of 7). The blocks are those the write would allocate
/// anyway, so holes stay holes. Only a hint: a filesystem without
/// fallocate writes as before, and a real lack of space fails the write.
pub(crate) fn preallocate(out: &File, at: u64, len: u64) {
    let _ = rustix::fs::fallocate(out, rustix::fs::FallocateFlags::empty(), at, len);
}

/// The maximal runs `a..b` of `data` made of blocks of [`ZERO_BLOCK`]
/// bytes that are not all zero; all-zero blocks stay holes.
struct NonzeroSpans<'a> {
    data: &'a [u8],
    /// Offset of the next block to look at.
    pos: usize,
}

impl<'a> NonzeroSpans<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The block at `pos`, or `None` at the end.
    fn block(&self, pos: usize) -> Option<&'a [u8]> {
        let end = (pos + ZERO_BLOCK).min(self.data.len());
        self.data.get(pos..end).filter(|b| !b.is_empty())
    }
}

impl Iterator for NonzeroSpans<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        // Skip zero blocks, then extend over non-zero ones.
        while is_zero(self.block(self.pos)?) {
            self.pos += ZERO_BLOCK;
        }
        let start = self.pos;
        while let Some(b) = self.block(self.pos) {
            if is_zero(b) {
                break;
            }
            self.pos += b.len();
        }
        Some((start, self.pos))
    }
}

/// True if every byte is zero. Data blocks are usually non-zero near their
/// start, so this looks at 64-byte pieces (one cache line, which the
/// compiler vectorises) and stops at the first that is not zero instead of
/// reading the whole block.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let mut pieces = b.chunks_exact(64);
    pieces.all(|p| p.iter().fold(0u8, |acc, &x| acc | x) == 0)
        && pieces.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_check_sees_every_byte() {
        for len in [0usize, 1, 63, 64, 65, 4096, 4097] {
            let z = vec![0u8; len];
            assert!(is_zero(&z), "{len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len == 0 {
                    continue;
                }
                let mut d = z.clone();
                d[at] = 1;
                assert!(!is_zero(&d), "{len} {at}");
            }
        }
    }

    fn spans(d: &[u8]) -> Vec<(usize, usize)> {
        NonzeroSpans::new(d).collect()
    }

    #[test]
    fn spans_cover_nonzero_blocks_only() {
        let mut d = vec![0u8; ZERO_BLOCK * 5 + 100];
        d[ZERO_BLOCK + 7] = 1;
        d[ZERO_BLOCK * 2 + 9] = 1;
        d[ZERO_BLOCK * 5 + 99] = 1;
        assert_eq!(
            spans(&d),
            vec![
                (ZERO_BLOCK, ZERO_BLOCK * 3),
                (ZERO_BLOCK * 5, ZERO_BLOCK * 5 + 100)
            ]
        );
        assert!(spans(&vec![0u8; 3 * ZERO_BLOCK]).is_empty());
        assert!(spans(&[]).is_empty());
        assert_eq!(spans(&[1]), vec![(0, 1)]);
        assert_eq!(spans(&vec![1u8; 2 * ZERO_BLOCK]), vec![(0, 2 * ZERO_BLOCK)]);
        // A short zero tail after data is not written.
        let mut d = vec![0u8; ZERO_BLOCK + 10];
        d[0] = 1;
        assert_eq!(spans(&d), vec![(0, ZERO_BLOCK)]);
    }
}
