//! Parallel gzip and bzip2 of a raw disk stream (the Linode `.img.gz`, and
//! DigitalOcean's `.gz` / `.bz2` uploads).
//!
//! # gzip: the pigz method
//!
//! The guest disk is cut into [`GZ_BLOCK`]-byte blocks. Each block is read
//! and compressed independently on the worker pool as **raw deflate**,
//! primed with the 32 KiB that precede it as the dictionary
//! (`Compress::set_dictionary`, available with flate2's zlib-rs backend), so
//! matches can reach back across the block boundary and the ratio is that
//! of a single-threaded gzip. Every block but the last ends with a *sync
//! flush* (an empty stored block: byte-aligned, no BFINAL), so the blocks
//! concatenate into one valid deflate stream; the last block ends with
//! `finish` (BFINAL). The calling thread writes blocks in order and folds
//! their CRC-32s together (`crc32fast::Hasher::combine`), then appends the
//! trailer (CRC-32, size mod 2^32): one gzip member, as `gzip -t` expects.
//!
//! Zeros must still be compressed (a raw image has no holes once gzipped),
//! but a full block of zeros whose dictionary is also zeros always
//! compresses to the same bytes, so that result is computed once and
//! reused; such blocks are never read when the allocation map says they are
//! zero.
//!
//! # bzip2: the pbzip2 method
//!
//! Independent 900 000-byte blocks, each compressed as a complete bzip2
//! stream, concatenated. `bzip2 -d` and `bzip2 -t` accept multi-stream files.
//!
//! Memory is bounded by the pipeline window (4 jobs per thread) times one
//! block and its compressed form.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use flate2::{Compress, Compression, FlushCompress, Status};
use imgcheck_disk::VirtualDisk;

use crate::pipeline::{build_pool, run_ordered};
use crate::raw::is_zero;
use crate::{ConvertError, ConvertStats, Options, Progress};

/// gzip block size. pigz uses 128 KiB; a larger block costs nothing in
/// ratio (the dictionary carries across) and cuts per-block overhead
/// (dictionary hashing, sync-flush markers, job dispatch).
pub const GZ_BLOCK: u64 = 1 << 20;
/// Deflate's window: the dictionary for each block.
const DICT: u64 = 32 << 10;
/// bzip2 block: the largest bzip2 block size (-9), as pbzip2 cuts.
pub const BZ_BLOCK: u64 = 900_000;

/// Default compression levels: gzip's and bzip2's own defaults.
const GZ_DEFAULT_LEVEL: u32 = 6;
const BZ_DEFAULT_LEVEL: u32 = 9;

/// A compressed block and the CRC-32 of its input.
struct GzBlock {
    data: std::sync::Arc<Vec<u8>>,
    crc: crc32fast::Hasher,
    read: u64,
    len: u64,
}

fn internal(e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Internal(format!("deflate: {e}"))
}

/// Deflates `input` (after priming with `dict`) into `out`, ending with a
/// sync flush, or with finish when `last`.
fn deflate_block(
    c: &mut Compress,
    dict: &[u8],
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(), ConvertError> {
    c.reset();
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(internal)?;
    }
    out.clear();
    out.reserve(input.len() + input.len() / 16 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut rest = input;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let before = c.total_in();
        let status = c.compress_vec(rest, out, flush).map_err(internal)?;
        // total_in grows by at most rest.len(), so this fits in usize.
        let used = (c.total_in() - before) as usize;
        rest = &rest[used..];
        let room_left = out.capacity() > out.len();
        let done = if last {
            status == Status::StreamEnd
        } else {
            // zlib: the flush is complete when it returns with output space
            // to spare and no input left.
            rest.is_empty() && room_left
        };
        if done {
            return Ok(());
        }
    }
}

/// Reads `len` bytes at `start` into `buf` unless the allocation map says
/// they all read as zero; returns true when the range is all zeros.
fn read_or_zero(
    disk: &VirtualDisk,
    start: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<(bool, u64), ConvertError> {
    let mut map_zero = true;
    for ext in disk.extents(start, len) {
        if !ext?.kind.reads_zero() {
            map_zero = false;
            break;
        }
    }
    buf.clear();
    if map_zero {
        return Ok((true, 0));
    }
    // len is at most one block plus the dictionary.
    buf.resize(len as usize, 0);
    disk.read_at(start, buf)?;
    Ok((is_zero(buf), len))
}

/// Writes `disk`'s guest bytes to `out` as one gzip member, compressed on
/// all cores. Returns stats; `bytes_written` is the compressed size.
pub fn write_gzip(
    disk: &VirtualDisk,
    out: &mut dyn Write,
    options: &Options,
    progress: Progress<'_>,
) -> Result<ConvertStats, ConvertError> {
    let size = disk.virtual_size();
    let level = options.level.unwrap_or(GZ_DEFAULT_LEVEL).min(9);
    let pool = build_pool(options.threads)?;
    let jobs = size.div_ceil(GZ_BLOCK).max(1);
    let window = pool.current_num_threads() * 4;
    let werr = |source| ConvertError::Write {
        path: "<gzip stream>".into(),
        source,
    };

    out.write_all(&gzip_header(level, 0)).map_err(werr)?;

    // Read buffers are recycled. Compressors are not: zlib-rs's reset
    // leaves state behind that changes (not breaks) the output, which then
    // depends on which block a compressor saw before, i.e. on scheduling.
    // A fresh one per block keeps the output a pure function of the input
    // (allocation is a few hundred KiB per MiB compressed: noise).
    let spare: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let zero_block: OnceLock<Result<std::sync::Arc<Vec<u8>>, String>> = OnceLock::new();
    let zero_crc = {
        let mut h = crc32fast::Hasher::new();
        h.update(&vec![0u8; GZ_BLOCK as usize]);
        h
    };
    let new_compress = || Compress::new(Compression::new(level), false);

    let job = |i: u64| -> Result<GzBlock, ConvertError> {
        let start = i * GZ_BLOCK;
        let len = GZ_BLOCK.min(size - start);
        let last = i + 1 == jobs;
        let dstart = start.saturating_sub(DICT);
        let dlen = (start - dstart) as usize;
        let mut buf = spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        let (zero, read) = read_or_zero(disk, dstart, start + len - dstart, &mut buf)?;
        let reusable = zero && !last && len == GZ_BLOCK && dlen as u64 == DICT;
        let result = if reusable {
            let z = zero_block.get_or_init(|| {
                let mut c = new_compress();
                let mut o = Vec::new();
                let zeros = vec![0u8; (DICT + GZ_BLOCK) as usize];
                deflate_block(
                    &mut c,
                    &zeros[..DICT as usize],
                    &zeros[DICT as usize..],
                    false,
                    &mut o,
                )
                .map(|()| std::sync::Arc::new(o))
                .map_err(|e| e.to_string())
            });
            let data = z.clone().map_err(ConvertError::Internal)?;
            GzBlock {
                data,
                crc: zero_crc.clone(),
                read,
                len,
            }
        } else {
            if buf.is_empty() {
                // Map said zero but the block is not reusable (first, last
                // or short): compress real zeros.
                buf.resize((start + len - dstart) as usize, 0);
            }
            let (dict, input) = buf.split_at(dlen);
            let mut outb = Vec::new();
            deflate_block(&mut new_compress(), dict, input, last, &mut outb)?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(input);
            GzBlock {
                data: std::sync::Arc::new(outb),
                crc,
                read,
                len,
            }
        };
        if let Ok(mut s) = spare.lock() {
            s.push(buf);
        }
        Ok(result)
    };

    let mut crc = crc32fast::Hasher::new();
    let mut stats = ConvertStats {
        virtual_size: size,
        bytes_written: 10,
        ..Default::default()
    };
    run_ordered(&pool, jobs, window, job, |b: GzBlock| {
        out.write_all(&b.data).map_err(werr)?;
        crc.combine(&b.crc);
        stats.bytes_read += b.read;
        stats.bytes_written += b.data.len() as u64;
        progress(b.len);
        Ok(())
    })?;
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the input size modulo 2^32 (RFC 1952).
    trailer[4..].copy_from_slice(&((size & 0xffff_ffff) as u32).to_le_bytes());
    out.write_all(&trailer).map_err(werr)?;
    out.flush().map_err(werr)?;
    stats.bytes_written += 8;
    Ok(stats)
}

/// gzip member header: ID1 ID2 CM=deflate FLG MTIME=0 XFL OS=unix.
fn gzip_header(level: u32, flags: u8) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, flags, 0, 0, 0, 0, xfl, 3]
}

/// A compressed block of a sequential stream and the CRC-32 of its input.
type StreamBlock = Result<(Vec<u8>, crc32fast::Hasher), ConvertError>;

/// Parallel gzip of a sequential byte stream (the qcow2 writer's output):
/// the same block scheme as [`write_gzip`], but fed by `write` calls
/// instead of reading a disk. Blocks are compressed on `pool` and written
/// to `out` in order; at most `window` blocks are in flight.
pub(crate) struct StreamGz<'p, W: Write> {
    out: W,
    pool: &'p rayon::ThreadPool,
    level: u32,
    /// The previous block's last 32 KiB (dictionary) then pending input.
    cur: Vec<u8>,
    dict_len: usize,
    inflight: std::collections::VecDeque<std::sync::mpsc::Receiver<StreamBlock>>,
    window: usize,
    crc: crc32fast::Hasher,
    total: u64,
    written: u64,
}

impl<'p, W: Write> StreamGz<'p, W> {
    /// Starts a gzip member on `out`.
    pub(crate) fn new(
        mut out: W,
        pool: &'p rayon::ThreadPool,
        level: Option<u32>,
    ) -> Result<Self, ConvertError> {
        let level = level.unwrap_or(GZ_DEFAULT_LEVEL).min(9);
        out.write_all(&gzip_header(level, 0)).map_err(stream_err)?;
        Ok(Self {
            out,
            pool,
            level,
            cur: Vec::with_capacity((DICT + GZ_BLOCK) as usize),
            dict_len: 0,
            inflight: std::collections::VecDeque::new(),
            window: pool.current_num_threads() * 4,
            crc: crc32fast::Hasher::new(),
            total: 0,
            written: 10,
        })
    }

    /// Appends stream bytes.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> Result<(), ConvertError> {
        let full = self.dict_len + GZ_BLOCK as usize;
        while !data.is_empty() {
            let take = (full - self.cur.len()).min(data.len());
            self.cur.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.total += take as u64;
            if self.cur.len() == full {
                self.dispatch(false)?;
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> Result<(), ConvertError> {
        let keep = (self.cur.len() - self.dict_len).min(DICT as usize);
        let mut next = Vec::with_capacity((DICT + GZ_BLOCK) as usize);
        next.extend_from_slice(&self.cur[self.cur.len() - keep..]);
        let block = std::mem::replace(&mut self.cur, next);
        let dict_len = std::mem::replace(&mut self.dict_len, keep);
        let level = self.level;
        let (tx, rx) = std::sync::mpsc::channel();
        self.pool.spawn(move || {
            let (dict, input) = block.split_at(dict_len);
            let mut out = Vec::new();
            let mut c = Compress::new(Compression::new(level), false);
            let r = deflate_block(&mut c, dict, input, last, &mut out).map(|()| {
                let mut h = crc32fast::Hasher::new();
                h.update(input);
                (out, h)
            });
            let _ = tx.send(r);
        });
        self.inflight.push_back(rx);
        while self.inflight.len() > self.window {
            self.drain_one()?;
        }
        Ok(())
    }

    fn drain_one(&mut self) -> Result<(), ConvertError> {
        let Some(rx) = self.inflight.pop_front() else {
            return Ok(());
        };
        let (data, h) = rx
            .recv()
            .map_err(|_| ConvertError::Internal("compressor thread vanished".into()))??;
        self.out.write_all(&data).map_err(stream_err)?;
        self.crc.combine(&h);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Ends the member; returns the sink and the compressed size.
    pub(crate) fn finish(mut self) -> Result<(W, u64), ConvertError> {
        self.dispatch(true)?;
        while !self.inflight.is_empty() {
            self.drain_one()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&((self.total & 0xffff_ffff) as u32).to_le_bytes());
        self.out.write_all(&trailer).map_err(stream_err)?;
        self.out.flush().map_err(stream_err)?;
        Ok((self.out, self.written + 8))
    }
}

fn stream_err(source: std::io::Error) -> ConvertError {
    ConvertError::Write {
        path: "<gzip stream>".into(),
        source,
    }
}

/// A complete gzip member of `data` that is exactly `size` bytes long: the
/// compressed data is padded with an FEXTRA field (RFC 1952 2.3.1.1), which
/// every gunzip skips. Lets a writer reserve room at the front of a file for
/// a member whose content is only known at the end (the qcow2 header).
pub(crate) fn fixed_size_member(
    data: &[u8],
    level: Option<u32>,
    size: usize,
) -> Result<Vec<u8>, ConvertError> {
    let level = level.unwrap_or(GZ_DEFAULT_LEVEL).min(9);
    let mut deflated = Vec::new();
    deflate_block(
        &mut Compress::new(Compression::new(level), false),
        &[],
        data,
        true,
        &mut deflated,
    )?;
    // header 10 + XLEN 2 + subfield header 4 + payload + deflate + trailer 8
    let pad = size
        .checked_sub(10 + 2 + 4 + deflated.len() + 8)
        .filter(|p| *p <= 65_535 - 4)
        .ok_or_else(|| {
            ConvertError::Internal("qcow2 header does not fit its reserved gzip member".into())
        })?;
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(&gzip_header(level, 0x04)); // FLG.FEXTRA
    m.extend_from_slice(&((pad + 4) as u16).to_le_bytes()); // XLEN
    m.extend_from_slice(b"IP"); // subfield id: imgcheck padding
    m.extend_from_slice(&(pad as u16).to_le_bytes());
    m.resize(m.len() + pad, 0);
    m.extend_from_slice(&deflated);
    m.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    m.extend_from_slice(&((data.len() as u64 & 0xffff_ffff) as u32).to_le_bytes());
    debug_assert_eq!(m.len(), size);
    Ok(m)
}

/// One bzip2 stream of `input`.
fn bzip2_stream(input: &[u8], level: u32) -> Result<Vec<u8>, ConvertError> {
    let mut enc = bzip2::write::BzEncoder::new(
        Vec::with_capacity(input.len() / 2 + 1024),
        bzip2::Compression::new(level),
    );
    let e = |e: std::io::Error| ConvertError::Internal(format!("bzip2: {e}"));
    enc.write_all(input).map_err(e)?;
    enc.finish().map_err(e)
}

/// Writes `disk`'s guest bytes to `out` as concatenated bzip2 streams, one
/// per [`BZ_BLOCK`], compressed on all cores.
pub fn write_bzip2(
    disk: &VirtualDisk,
    out: &mut dyn Write,
    options: &Options,
    progress: Progress<'_>,
) -> Result<ConvertStats, ConvertError> {
    let size = disk.virtual_size();
    let level = options.level.unwrap_or(BZ_DEFAULT_LEVEL).clamp(1, 9);
    let pool = build_pool(options.threads)?;
    let jobs = size.div_ceil(BZ_BLOCK).max(1);
    let window = pool.current_num_threads() * 4;
    let werr = |source| ConvertError::Write {
        path: "<bzip2 stream>".into(),
        source,
    };
    let zero_stream: OnceLock<Result<std::sync::Arc<Vec<u8>>, String>> = OnceLock::new();
    let job = |i: u64| -> Result<(std::sync::Arc<Vec<u8>>, u64, u64), ConvertError> {
        let start = i * BZ_BLOCK;
        let len = BZ_BLOCK.min(size - start);
        let mut buf = Vec::new();
        let (zero, read) = read_or_zero(disk, start, len, &mut buf)?;
        if zero && len == BZ_BLOCK {
            let z = zero_stream.get_or_init(|| {
                bzip2_stream(&vec![0u8; BZ_BLOCK as usize], level)
                    .map(std::sync::Arc::new)
                    .map_err(|e| e.to_string())
            });
            return Ok((z.clone().map_err(ConvertError::Internal)?, read, len));
        }
        if buf.is_empty() {
            buf.resize(len as usize, 0);
        }
        Ok((std::sync::Arc::new(bzip2_stream(&buf, level)?), read, len))
    };
    let mut stats = ConvertStats {
        virtual_size: size,
        ..Default::default()
    };
    run_ordered(&pool, jobs, window, job, |(data, read, len)| {
        out.write_all(&data).map_err(werr)?;
        stats.bytes_read += read;
        stats.bytes_written += data.len() as u64;
        progress(len);
        Ok(())
    })?;
    out.flush().map_err(werr)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Sync-flushed blocks with dictionaries concatenate into one stream.
    #[test]
    fn blocks_concatenate() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| ((i % 251) ^ (i / 7)) as u8)
            .collect();
        let mut c = Compress::new(Compression::new(6), false);
        let mut all = Vec::new();
        let mut o = Vec::new();
        let bs = 100_000;
        for (k, block) in data.chunks(bs).enumerate() {
            let start = k * bs;
            let dict = &data[start.saturating_sub(DICT as usize)..start];
            deflate_block(&mut c, dict, block, start + bs >= data.len(), &mut o).unwrap();
            all.extend_from_slice(&o);
        }
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&all[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
