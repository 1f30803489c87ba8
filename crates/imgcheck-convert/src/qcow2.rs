//! Writing qcow2 v3: 64 KiB clusters, 16-bit refcounts, no compression,
//! zero clusters left out.
//!
//! # Layout (one sequential pass, bounded memory)
//!
//! ```text
//! cluster 0            header (written last, when the table offsets are known)
//! clusters 1..         data clusters of L2 region 0 (guest order, zeros left out)
//!                      L2 table of region 0 (only if the region has data)
//!                      data clusters of region 1, L2 table of region 1, ...
//!                      L1 table
//!                      refcount table
//!                      refcount blocks
//! ```
//!
//! An L2 table maps 8192 clusters (512 MiB of guest space). Because data is
//! written in guest order, region *r*'s L2 table is complete as soon as the
//! stream passes the end of region *r*, so it is written right there: the
//! writer holds one L2 table (64 KiB) and the L1 table (8 bytes per 512 MiB
//! of guest space) in memory, never a map of the whole disk. Every cluster
//! from 0 to the end of the file is used exactly once and nothing is shared,
//! so every refcount is 1 and every L1/L2 entry carries the COPIED flag;
//! the refcount blocks are therefore "1 up to the end, 0 after", computed at
//! the end without remembering anything. The data is read once.
//!
//! Zero detection is per cluster: runs the allocation map reports as zero or
//! unallocated are never read, and data clusters that read as all zeros are
//! left out too (their L2 entry stays 0: unallocated, reads as zeros, since
//! the image has no backing file).
//!
//! A plain file is written by the workers themselves (`parallel`): each
//! reads a job, checks it and writes its data clusters at host offsets
//! handed out strictly in guest order, so the file is byte for byte the one
//! the sequential pass above describes. For `.qcow2.gz`
//! ([`write_qcow2_gz`]) the same bytes stream, in order, through the
//! parallel gzip compressor, and the header goes into a fixed-size first
//! gzip member written last (see there).
//!
//! The virtual size is rounded up to a multiple of 512 bytes, as
//! `qemu-img convert -O qcow2` does (QEMU counts qcow2 sizes in sectors).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use imgcheck_disk::VirtualDisk;

use crate::compress::{StreamGz, fixed_size_member};
use crate::pipeline::{build_pool, run_ordered};
use crate::raw::{is_zero, write_at};
use crate::{ConvertError, ConvertStats, Options, Progress};

mod parallel;

/// log2 of the cluster size.
const CLUSTER_BITS: u32 = 16;
/// Cluster size in bytes (64 KiB, QEMU's default).
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// [`CLUSTER`] as a buffer length.
const CLUSTER_LEN: usize = 1 << CLUSTER_BITS;
/// Entries per L2 table (one cluster of u64).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcounts per refcount block (16-bit entries).
const RC_PER_BLOCK: u64 = CLUSTER / 2;
/// Refcount-table entries per cluster.
const RT_PER_CLUSTER: u64 = CLUSTER / 8;
/// L1/L2 flag: refcount is exactly 1.
const COPIED: u64 = 1 << 63;
/// Clusters per read job: 32 × 64 KiB = 2 MiB, big enough to amortise the
/// per-job cost, small enough that `window` jobs stay a few MiB.
const JOB_CLUSTERS: u64 = 32;

/// A header field at its spec offset (formats.md A.1), big-endian.
fn put_be(buf: &mut [u8], off: usize, v: &[u8]) {
    buf[off..off + v.len()].copy_from_slice(v);
}

/// What a read job found: the chunk's bytes (absent when the allocation map
/// says the whole chunk reads as zero) and which clusters hold data.
struct Chunk {
    buf: Option<Vec<u8>>,
    data: Vec<bool>,
    read: u64,
    len: u64,
}

/// Sizes of the qcow2 file once the data is written (all in clusters).
struct Tail {
    l1_offset: u64,
    l1_clusters: u64,
    rt_offset: u64,
    rt_clusters: u64,
    rb_offset: u64,
    rb_count: u64,
}

/// Places L1, refcount table and refcount blocks after `next` (the first
/// free cluster) so that the refcount blocks cover every cluster of the
/// file, themselves included.
fn plan_tail(next: u64, l1_size: u64) -> Result<Tail, ConvertError> {
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER).max(1);
    let before_rc = next + l1_clusters;
    // Grow until stable: blocks cover the file, the table covers the blocks.
    let (mut rt, mut rb) = (1u64, 1u64);
    loop {
        let total = before_rc + rt + rb;
        let need_rb = total.div_ceil(RC_PER_BLOCK);
        let need_rt = need_rb.div_ceil(RT_PER_CLUSTER);
        if need_rb <= rb && need_rt <= rt {
            break;
        }
        rb = rb.max(need_rb);
        rt = rt.max(need_rt);
    }
    let rt_clusters =
        u32::try_from(rt).map_err(|_| ConvertError::Internal("refcount table too large".into()))?;
    Ok(Tail {
        l1_offset: next * CLUSTER,
        l1_clusters,
        rt_offset: before_rc * CLUSTER,
        rt_clusters: u64::from(rt_clusters),
        rb_offset: (before_rc + rt) * CLUSTER,
        rb_count: rb,
    })
}

/// The 64 KiB header cluster.
fn header(size: u64, l1_size: u64, tail: &Tail) -> Vec<u8> {
    let mut h = vec![0u8; CLUSTER as usize];
    put_be(&mut h, 0, b"QFI\xfb");
    put_be(&mut h, 4, &3u32.to_be_bytes()); // version
    // 8: backing_file_offset, 16: backing_file_size = 0
    put_be(&mut h, 20, &CLUSTER_BITS.to_be_bytes());
    put_be(&mut h, 24, &size.to_be_bytes());
    // 32: crypt_method = 0
    // l1_size fits u32: checked by the caller.
    put_be(&mut h, 36, &(l1_size as u32).to_be_bytes());
    put_be(&mut h, 40, &tail.l1_offset.to_be_bytes());
    put_be(&mut h, 48, &tail.rt_offset.to_be_bytes());
    put_be(&mut h, 56, &(tail.rt_clusters as u32).to_be_bytes());
    // 60: nb_snapshots, 64: snapshots_offset, 72..96: feature bits = 0
    put_be(&mut h, 96, &4u32.to_be_bytes()); // refcount_order: 16 bits
    // header_length 112: includes compression_type (104, 0 = zlib) and
    // padding to 8 bytes, as QEMU writes it.
    put_be(&mut h, 100, &112u32.to_be_bytes());
    // 112..120: header extension "end" (type 0, length 0) = zeros.
    h
}

/// Where the body (everything after cluster 0) goes.
enum Sink<'a> {
    /// Plain file: positional writes straight from the read buffers (no
    /// copy into a stream buffer), at most `raw::WRITE_MAX` each (see there).
    File(&'a File),
    /// gzip member starting at [`GZ_HEADER_MEMBER`].
    Gzip(StreamGz<'a, BufWriter<&'a File>>),
}

/// Room reserved at the front of a `.qcow2.gz` for the gzip member that
/// holds the header cluster (written last). The header cluster is ~120
/// non-zero bytes then zeros: it deflates to well under 1 KiB.
const GZ_HEADER_MEMBER: usize = 4096;

/// Sequential writer of the qcow2 file body, counting clusters.
struct Body<'a> {
    w: Sink<'a>,
    /// Next free host cluster.
    next: u64,
    path: &'a Path,
}

impl Body<'_> {
    /// Writes `bytes` at host offset `at`, which is where the stream is.
    fn put(&mut self, bytes: &[u8], at: u64) -> Result<(), ConvertError> {
        let werr = |source| ConvertError::Write {
            path: self.path.to_path_buf(),
            source,
        };
        match &mut self.w {
            Sink::File(f) => write_at(f, bytes, at).map_err(werr),
            Sink::Gzip(g) => g.write(bytes).map_err(|e| match e {
                ConvertError::Write { source, .. } => werr(source),
                other => other,
            }),
        }
    }

    /// Appends whole clusters; returns the host offset of the first.
    fn append(&mut self, bytes: &[u8]) -> Result<u64, ConvertError> {
        let at = self.next * CLUSTER;
        self.put(bytes, at)?;
        let len = bytes.len() as u64;
        let pad = len.next_multiple_of(CLUSTER) - len;
        if pad > 0 {
            // Only the last guest cluster of an odd-sized disk is short.
            self.put(&vec![0u8; pad as usize], at + len)?;
        }
        self.next += len.div_ceil(CLUSTER);
        Ok(at)
    }
}

/// Writes `disk` to `out` (empty, seekable) as qcow2. `path` is only for
/// error messages.
pub fn write_qcow2(
    disk: &VirtualDisk,
    out: &File,
    path: &Path,
    options: &Options,
    progress: Progress<'_>,
) -> Result<ConvertStats, ConvertError> {
    write(disk, out, path, options, progress, false)
}

/// Writes `disk` to `out` (empty, seekable) as a gzip-compressed qcow2
/// (`.qcow2.gz`): `gzip -dc` of it is the same qcow2 [`write_qcow2`] makes.
///
/// The file holds two gzip members. The body (clusters 1..end) is one
/// member, compressed in parallel as it streams past, starting at byte
/// 4096. The header cluster, known only at the end, is the first member,
/// padded to exactly 4096 bytes with a gzip FEXTRA field and written
/// last into the room left for it. Concatenated members are one valid
/// gzip file (RFC 1952 2.2; `gzip -t`, `gzip -dc` read them).
pub fn write_qcow2_gz(
    disk: &VirtualDisk,
    out: &File,
    path: &Path,
    options: &Options,
    progress: Progress<'_>,
) -> Result<ConvertStats, ConvertError> {
    write(disk, out, path, options, progress, true)
}

/// What the body writers work on.
struct Target<'a> {
    disk: &'a VirtualDisk,
    out: &'a File,
    /// For error messages.
    path: &'a Path,
    progress: Progress<'a>,
    /// The virtual size rounded up to 512 bytes.
    size: u64,
}

fn write(
    disk: &VirtualDisk,
    out: &File,
    path: &Path,
    options: &Options,
    progress: Progress<'_>,
    gzip: bool,
) -> Result<ConvertStats, ConvertError> {
    let size = disk.virtual_size().next_multiple_of(512);
    let clusters = size.div_ceil(CLUSTER);
    let l1_size = clusters.div_ceil(L2_ENTRIES);
    if u32::try_from(l1_size).is_err() {
        return Err(ConvertError::Internal(format!(
            "virtual size {size} is too large for a qcow2 L1 table"
        )));
    }
    let werr = |source| ConvertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let t = Target {
        disk,
        out,
        path,
        progress,
        size,
    };
    let tables = Tables {
        l1: vec![0u64; l1_size as usize],
        l2: vec![0u64; L2_ENTRIES as usize],
        region: 0,
        used: false,
    };
    // The gzip stream is one ordered pipeline; a plain file is written by
    // the workers themselves (`parallel`).
    let pool = if gzip {
        Some(build_pool(options.threads)?)
    } else {
        None
    };
    let (mut body, mut tables, bytes_read) = match &pool {
        Some(pool) => body_streamed(&t, pool, options.level, tables)?,
        None => parallel::write_body(&t, options.threads, tables)?,
    };
    tables.flush_l2(&mut body)?;
    let tail = put_tail(&mut body, &tables.l1)?;

    let h = header(size, l1_size, &tail);
    let end = match body.w {
        Sink::File(_) => {
            out.write_all_at(&h, 0).map_err(werr)?;
            let end = body.next * CLUSTER;
            out.set_len(end).map_err(werr)?;
            end
        }
        Sink::Gzip(g) => {
            let (mut w, n) = g.finish().map_err(|e| match e {
                ConvertError::Write { source, .. } => werr(source),
                other => other,
            })?;
            w.flush().map_err(werr)?;
            drop(w);
            let member = fixed_size_member(&h, options.level, GZ_HEADER_MEMBER)?;
            out.write_all_at(&member, 0).map_err(werr)?;
            GZ_HEADER_MEMBER as u64 + n
        }
    };
    Ok(ConvertStats {
        virtual_size: size,
        bytes_read,
        bytes_written: end,
    })
}

/// The body of a `.qcow2.gz`: chunks read and checked on `pool`, appended
/// in order to the parallel gzip stream, which starts after the room kept
/// for the header member. Returns the body (to append the tail to), the
/// tables and the bytes read.
fn body_streamed<'a>(
    t: &Target<'a>,
    pool: &'a rayon::ThreadPool,
    level: Option<u32>,
    mut tables: Tables,
) -> Result<(Body<'a>, Tables, u64), ConvertError> {
    let mut file = BufWriter::with_capacity(1 << 20, t.out);
    file.seek(SeekFrom::Start(GZ_HEADER_MEMBER as u64))
        .map_err(|source| ConvertError::Write {
            path: t.path.to_path_buf(),
            source,
        })?;
    let mut body = Body {
        w: Sink::Gzip(StreamGz::new(file, pool, level)?),
        next: 1,
        path: t.path,
    };
    // Chunk buffers go back here once written: a few, reused, instead of a
    // fresh zeroed allocation per chunk.
    let spare: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let jobs = t.size.div_ceil(CLUSTER).div_ceil(JOB_CLUSTERS);
    let window = pool.current_num_threads() * 4;
    let read_job = |j: u64| read_chunk(t.disk, &spare, j, t.size);
    let mut guest_cluster = 0u64;
    let mut read = 0u64;
    run_ordered(pool, jobs, window, read_job, |chunk: Chunk| {
        put_chunk(&mut body, &mut tables, &chunk, guest_cluster)?;
        guest_cluster += chunk.data.len() as u64;
        read += chunk.read;
        (t.progress)(chunk.len);
        if let Some(b) = chunk.buf {
            spare.lock().unwrap_or_else(|p| p.into_inner()).push(b);
        }
        Ok(())
    })?;
    Ok((body, tables, read))
}

/// Reads job `j` of the streamed writer (guest bytes from
/// `j * JOB_CLUSTERS` clusters on, the disk taken as `size` bytes) into a
/// recycled buffer and finds its data clusters.
fn read_chunk(
    disk: &VirtualDisk,
    spare: &Mutex<Vec<Vec<u8>>>,
    j: u64,
    size: u64,
) -> Result<Chunk, ConvertError> {
    let start = j * JOB_CLUSTERS * CLUSTER;
    let len = (JOB_CLUSTERS * CLUSTER).min(size - start);
    let n = len.div_ceil(CLUSTER) as usize;
    let recycled = spare.lock().ok().and_then(|mut s| s.pop());
    let mut buf = recycled.unwrap_or_else(|| vec![0u8; (JOB_CLUSTERS * CLUSTER) as usize]);
    let mut data = vec![false; n];
    let read = fill_job(disk, start, &mut buf[..n * CLUSTER as usize], &mut data)?;
    let buf = if read.is_some() {
        Some(buf)
    } else {
        if let Ok(mut s) = spare.lock() {
            s.push(buf);
        }
        None
    };
    Ok(Chunk {
        buf,
        data,
        read: read.unwrap_or(0),
        len,
    })
}

/// Fills `buf` (whole clusters) with the guest bytes from `start`: the data
/// runs of the allocation map are read, everything else is zeros (also past
/// the guest size, which the qcow2 size rounds up to 512), and `data[k]`
/// says whether cluster `k` has a non-zero byte. Runs the map reports as
/// zero are neither read nor scanned. Returns the bytes read, or `None`
/// (`buf` untouched) when the map says the whole range reads as zero.
///
/// Every byte of `buf` is written once, so a recycled buffer needs no
/// clearing.
fn fill_job(
    disk: &VirtualDisk,
    start: u64,
    buf: &mut [u8],
    data: &mut [bool],
) -> Result<Option<u64>, ConvertError> {
    const C: usize = CLUSTER_LEN;
    let guest_len = (buf.len() as u64).min(disk.virtual_size().saturating_sub(start));
    data.fill(false);
    let mut filled = 0usize;
    let mut read = None;
    for ext in disk.extents(start, guest_len) {
        let ext = ext?;
        if ext.kind.reads_zero() {
            continue;
        }
        // Inside the job: both fit in usize.
        let from = (ext.guest_offset - start) as usize;
        let to = from + ext.len as usize;
        buf[filled..from].fill(0);
        disk.read_at(ext.guest_offset, &mut buf[from..to])?;
        filled = to;
        *read.get_or_insert(0) += ext.len;
        data[from / C..to.div_ceil(C)].fill(true);
    }
    if read.is_none() {
        return Ok(None);
    }
    buf[filled..].fill(0);
    for (k, flag) in data.iter_mut().enumerate() {
        if *flag {
            *flag = !is_zero(&buf[k * C..((k + 1) * C).min(buf.len())]);
        }
    }
    Ok(read)
}

/// Appends the data clusters of `chunk` (which starts at guest cluster
/// `first`) to the body and maps them in the L2 table, one write per run
/// of consecutive data clusters.
fn put_chunk(
    body: &mut Body<'_>,
    tables: &mut Tables,
    chunk: &Chunk,
    first: u64,
) -> Result<(), ConvertError> {
    const C: usize = CLUSTER_LEN;
    let n = chunk.data.len();
    let mut k = 0;
    while k < n {
        let guest = first + k as u64;
        let region = guest / L2_ENTRIES;
        if region != tables.region {
            tables.flush_l2(body)?;
            tables.region = region;
        }
        // `data` is only ever true for a chunk that was read.
        let (true, Some(buf)) = (chunk.data[k], &chunk.buf) else {
            k += 1;
            continue;
        };
        // The run: data clusters up to the end of the chunk or region.
        let region_end = ((region + 1) * L2_ENTRIES - first).min(n as u64) as usize;
        let run = chunk.data[k..region_end].iter().take_while(|&&d| d).count();
        let host = body.append(&buf[k * C..(k + run) * C])?;
        for i in 0..run {
            let g = guest + i as u64;
            tables.l2[(g % L2_ENTRIES) as usize] = (host + i as u64 * CLUSTER) | COPIED;
        }
        tables.used = true;
        k += run;
    }
    Ok(())
}

/// Appends the L1 table, the refcount table and the refcount blocks after
/// the last L2 table; returns where they went.
fn put_tail(body: &mut Body<'_>, l1: &[u64]) -> Result<Tail, ConvertError> {
    let tail = plan_tail(body.next, l1.len() as u64)?;
    let mut bytes = Vec::with_capacity((tail.l1_clusters * CLUSTER) as usize);
    for e in l1 {
        bytes.extend_from_slice(&e.to_be_bytes());
    }
    let at = body.append(&bytes)?;
    debug_assert_eq!(at, tail.l1_offset);

    // Refcount table: one entry per refcount block.
    let mut rt = Vec::with_capacity((tail.rt_clusters * CLUSTER) as usize);
    for b in 0..tail.rb_count {
        rt.extend_from_slice(&(tail.rb_offset + b * CLUSTER).to_be_bytes());
    }
    let at = body.append(&rt)?;
    debug_assert_eq!(at, tail.rt_offset);

    // Refcount blocks: every cluster of the file is used once.
    let total = body.next + tail.rb_count;
    let mut block = vec![0u8; CLUSTER as usize];
    for b in 0..tail.rb_count {
        let first = b * RC_PER_BLOCK;
        for (i, e) in block.chunks_mut(2).enumerate() {
            let in_file = first + (i as u64) < total;
            e.copy_from_slice(if in_file { &[0, 1] } else { &[0, 0] });
        }
        body.append(&block)?;
    }
    debug_assert_eq!(body.next, total);
    Ok(tail)
}

/// The L1 table and the one L2 table being filled.
struct Tables {
    l1: Vec<u64>,
    l2: Vec<u64>,
    /// The L2 region (512 MiB of guest space) `l2` maps.
    region: u64,
    /// Whether `l2` maps anything.
    used: bool,
}

impl Tables {
    /// Writes the L2 table if it maps anything, records it in L1, and
    /// clears it for the next region.
    fn flush_l2(&mut self, body: &mut Body<'_>) -> Result<(), ConvertError> {
        if !self.used {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(CLUSTER as usize);
        for e in &self.l2 {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        let at = body.append(&bytes)?;
        if let Some(slot) = self.l1.get_mut(self.region as usize) {
            *slot = at | COPIED;
        }
        self.l2.fill(0);
        self.used = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_covers_itself() {
        for next in [
            1,
            2,
            100,
            RC_PER_BLOCK - 3,
            RC_PER_BLOCK,
            5 * RC_PER_BLOCK + 7,
        ] {
            let t = plan_tail(next, 3).unwrap();
            let end = t.rb_offset / CLUSTER + t.rb_count;
            assert!(t.rb_count * RC_PER_BLOCK >= end, "next={next}");
            assert!(t.rt_clusters * RT_PER_CLUSTER >= t.rb_count);
        }
    }
}
