//! Random access into bzip2 files (single- and multi-stream, as bzip2,
//! pbzip2 and lbzip2 write), with the open pass decoded in parallel.
//!
//! # How
//! bzip2 compresses in independent blocks (≤ 900 kB before the BWT) that
//! start at *bit-aligned* 48-bit magics `0x314159265359`; a stream ends with
//! `0x177245385090` and the stream CRC. The open pass
//! 1. scans the whole compressed file for both magics, in parallel chunks;
//! 2. walks the stream structure (`BZh1..9` headers, blocks, end-of-stream,
//!    byte padding, next stream);
//! 3. decodes every block on its own, in parallel with rayon, by handing
//!    libbz2 (`bzip2` crate, pure-Rust libbz2-rs backend) a synthetic stream:
//!    `BZh9`, the block's bits re-aligned to a byte, an end-of-stream magic
//!    and a stream CRC equal to the block's CRC. libbz2 then verifies the block
//!    CRC for us; the stream CRCs are combined from the block CRCs and
//!    compared with each end-of-stream record.
//!
//! A magic can also occur by chance inside compressed data (2^-48 per bit).
//! Such a false split makes the block before it fail to decode; the block is
//! then retried merged with the following piece(s), as lbzip2 does.
//!
//! The index is one entry per block (bit range, uncompressed offset); a
//! random read decodes the one block it needs (plus an LRU of decoded
//! blocks).
//!
//! # Why hand-written
//! `parallel_bzip2_decoder` needs C libbzip2 (via `bzip2 0.4`), memory-maps
//! the file and has no index or random access; `lbzip2` (the crate) is an
//! unreviewed machine translation. The scanner and splicer here are ~400
//! lines on top of the `bzip2` crate the workspace already uses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::{ChunkCache, DecompressOptions, Progress, StreamInfo, corrupt, limit_error, report};
use crate::{Access, ByteSource, SourceError, check_range};

const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
const EOS_MAGIC: u64 = 0x1772_4538_5090;
const MASK48: u64 = (1 << 48) - 1;
/// Compressed bytes scanned per parallel task.
const SCAN_CHUNK: u64 = 4 << 20;
/// Largest compressed span accepted for one block (a 900 kB block codes to
/// at most ~2.3 MB even with 20-bit Huffman codes).
const MAX_BLOCK_BYTES: u64 = 4 << 20;
/// How many following pieces a failed block may be merged with.
const MAX_MERGE: usize = 4;
/// Bytes per index entry, for the budget.
const ENTRY_BYTES: usize = std::mem::size_of::<Block>();

/// A magic found by the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Magic {
    bit: u64,
    eos: bool,
}

/// One block in the index.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Bit offset of the block magic.
    start: u64,
    /// Bit offset just past the block's last bit.
    end: u64,
    /// Uncompressed offset.
    out: u64,
    /// Uncompressed length.
    len: u64,
    /// Stream number (for messages).
    stream: u32,
    /// Block CRC from the block header.
    crc: u32,
    /// Bit offset of the first block with the same bits: decoded-block
    /// cache key, so repeats of one block share one cache entry.
    key: u64,
}

/// A bzip2 file, read as its uncompressed contents.
#[derive(Debug)]
pub struct Bzip2Source {
    name: String,
    inner: Arc<dyn ByteSource>,
    len: u64,
    blocks: Vec<Block>,
    info: StreamInfo,
    cache: Mutex<ChunkCache>,
}

/// Scans `src` for bit-aligned block and end-of-stream magics.
fn scan(src: &dyn ByteSource, max: usize) -> Result<Vec<Magic>, SourceError> {
    let len = src.len();
    let chunks = len.div_ceil(SCAN_CHUNK);
    let count = AtomicUsize::new(0);
    let parts: Result<Vec<Vec<Magic>>, SourceError> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let start = c * SCAN_CHUNK;
            let end = (start + SCAN_CHUNK).min(len);
            // Read 8 bytes of overlap before the chunk so magics that
            // straddle the boundary are found by the chunk they start in.
            let from = start.saturating_sub(8);
            let mut buf = vec![0u8; (end - from) as usize];
            src.read_exact_at(from, &mut buf)?;
            let mut found = Vec::new();
            let mut w: u64 = 0;
            for (i, &b) in buf.iter().enumerate() {
                w = (w << 8) | u64::from(b);
                if i < 5 {
                    continue;
                }
                // Test the 8 bit alignments of a 48-bit window ending here.
                let end_bit = (from + i as u64 + 1) * 8;
                for s in 0..8u64 {
                    if i == 5 && s > 0 {
                        break;
                    }
                    let v = (w >> s) & MASK48;
                    if v == BLOCK_MAGIC || v == EOS_MAGIC {
                        let bit = end_bit - s - 48;
                        if bit >= start * 8 && bit < end * 8 {
                            found.push(Magic {
                                bit,
                                eos: v == EOS_MAGIC,
                            });
                        }
                    }
                }
            }
            if count.fetch_add(found.len(), Ordering::Relaxed) + found.len() > max {
                return Err(SourceError::too_large(
                    src.name(),
                    start,
                    (count.load(Ordering::Relaxed) * ENTRY_BYTES) as u64,
                    (max * ENTRY_BYTES) as u64,
                ));
            }
            Ok(found)
        })
        .collect();
    let mut all: Vec<Magic> = parts?.into_iter().flatten().collect();
    all.sort_unstable();
    Ok(all)
}

/// Reads `n` ≤ 32 bits at bit offset `bit` (MSB first).
fn get_bits(src: &dyn ByteSource, bit: u64, n: u32) -> Result<u32, SourceError> {
    let byte = bit / 8;
    let mut b = [0u8; 5];
    let avail = src.len().saturating_sub(byte).min(5) as usize;
    let need = ((bit % 8) as usize + n as usize).div_ceil(8);
    if avail < need {
        return Err(corrupt(src.name(), "bzip2 stream", byte, "truncated"));
    }
    src.read_exact_at(byte, &mut b[..avail])?;
    let w = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], 0, 0, 0]);
    let shifted = w << (bit % 8);
    Ok((shifted >> (64 - n)) as u32)
}

/// Appends bits MSB-first.
struct BitWriter {
    out: Vec<u8>,
    nbits: u64,
}

impl BitWriter {
    fn push(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            let bit = (value >> i) & 1;
            let byte = (self.nbits / 8) as usize;
            if byte == self.out.len() {
                self.out.push(0);
            }
            if bit != 0 {
                self.out[byte] |= 0x80 >> (self.nbits % 8);
            }
            self.nbits += 1;
        }
    }
}

/// Builds a one-block bzip2 stream from the block bits `start..end`.
fn synthetic_stream(
    src: &dyn ByteSource,
    start: u64,
    end: u64,
    crc: u32,
) -> Result<Vec<u8>, SourceError> {
    let first = start / 8;
    let last = end.div_ceil(8);
    if last - first > MAX_BLOCK_BYTES {
        return Err(corrupt(
            src.name(),
            "bzip2 block",
            first,
            format!("no block boundary within {MAX_BLOCK_BYTES} bytes"),
        ));
    }
    let mut raw = vec![0u8; (last - first) as usize + 1];
    let n = raw.len() - 1;
    src.read_exact_at(first, &mut raw[..n])?;
    let k = (start % 8) as u32;
    let nbits = end - start;
    let nbytes = nbits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(nbytes + 16);
    out.extend_from_slice(b"BZh9");
    if k == 0 {
        out.extend_from_slice(&raw[..nbytes]);
    } else {
        out.extend(
            raw.windows(2)
                .take(nbytes)
                .map(|w| (w[0] << k) | (w[1] >> (8 - k))),
        );
    }
    // Clear the bits past the block end in the last byte.
    let tail = (nbits % 8) as u32;
    if tail != 0
        && let Some(b) = out.last_mut()
    {
        *b &= 0xffu8 << (8 - tail);
    }
    let mut w = BitWriter {
        out,
        nbits: 32 + nbits,
    };
    w.push(EOS_MAGIC, 48);
    w.push(u64::from(crc), 32);
    Ok(w.out)
}

/// Decodes a synthetic stream; `sink` gets the output in pieces. Returns the
/// uncompressed length.
fn decode(stream: &[u8], mut sink: impl FnMut(&[u8]) -> Result<(), String>) -> Result<u64, String> {
    let mut d = bzip2::Decompress::new(false);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let before_in = d.total_in();
        let before_out = d.total_out();
        let pos = usize::try_from(before_in).map_err(|e| e.to_string())?;
        let rest = stream.get(pos..).unwrap_or(&[]);
        let st = d.decompress(rest, &mut buf).map_err(|e| e.to_string())?;
        let produced = (d.total_out() - before_out) as usize;
        sink(&buf[..produced])?;
        if st == bzip2::Status::StreamEnd {
            return Ok(d.total_out());
        }
        if produced == 0 && d.total_in() == before_in {
            return Err("block ends early (truncated or corrupt)".into());
        }
    }
}

/// A candidate block: the bits between one block magic and the next magic.
struct Piece {
    start: u64,
    end: u64,
    stream: u32,
}

/// The stream structure: candidate blocks, and each stream's end-of-stream
/// bit offset.
struct Layout {
    pieces: Vec<Piece>,
    eos: Vec<u64>,
}

/// Walks the stream structure (`BZh` headers, blocks, end-of-stream, byte
/// padding, next stream) over the magics the scanner found.
fn walk_streams(src: &dyn ByteSource, magics: &[Magic]) -> Result<Layout, SourceError> {
    let name = src.name();
    let total = src.len();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut eos_bits: Vec<u64> = Vec::new();
    let mut pos = 0u64; // byte offset of the next stream header
    let mut mi = 0usize;
    while pos < total {
        let mut head = [0u8; 4];
        let avail = (total - pos).min(4) as usize;
        src.read_exact_at(pos, &mut head[..avail])?;
        let is_header = avail == 4 && &head[..3] == b"BZh" && (b'1'..=b'9').contains(&head[3]);
        if !is_header {
            if eos_bits.is_empty() {
                return Err(corrupt(
                    name,
                    "bzip2 stream 0 header",
                    pos,
                    "not a bzip2 header",
                ));
            }
            check_zero_tail(src, pos, eos_bits.len())?;
            break;
        }
        let stream_no = u32::try_from(eos_bits.len()).unwrap_or(u32::MAX);
        let first_bit = (pos + 4) * 8;
        while mi < magics.len() && magics[mi].bit < first_bit {
            mi += 1;
        }
        if mi >= magics.len() || magics[mi].bit != first_bit {
            return Err(corrupt(
                name,
                format!("bzip2 stream {stream_no}"),
                pos + 4,
                "no block or end-of-stream magic after the stream header (truncated or corrupt)",
            ));
        }
        let eos = loop {
            let Some(m) = magics.get(mi) else {
                return Err(corrupt(
                    name,
                    format!("bzip2 stream {stream_no}"),
                    total,
                    "truncated: the file ends before the end-of-stream marker",
                ));
            };
            if m.eos {
                break m.bit;
            }
            let next = magics.get(mi + 1).map_or(total * 8, |n| n.bit);
            pieces.push(Piece {
                start: m.bit,
                end: next,
                stream: stream_no,
            });
            mi += 1;
        };
        if eos + 80 > total * 8 {
            return Err(corrupt(
                name,
                format!("bzip2 stream {stream_no} end-of-stream marker"),
                eos / 8,
                "truncated: the stream CRC is missing",
            ));
        }
        eos_bits.push(eos);
        pos = (eos + 80).div_ceil(8);
    }
    if eos_bits.is_empty() {
        return Err(corrupt(name, "bzip2 stream 0 header", 0, "empty file"));
    }
    Ok(Layout {
        pieces,
        eos: eos_bits,
    })
}

/// Zero padding after the last of `streams` streams is tolerated; anything
/// else there is an error.
fn check_zero_tail(src: &dyn ByteSource, pos: u64, streams: usize) -> Result<(), SourceError> {
    let total = src.len();
    let mut rest = vec![0u8; (total - pos).min(1 << 20) as usize];
    let mut at = pos;
    while at < total {
        let n = ((total - at) as usize).min(rest.len());
        src.read_exact_at(at, &mut rest[..n])?;
        if let Some(i) = rest[..n].iter().position(|&b| b != 0) {
            return Err(corrupt(
                src.name(),
                format!("data after bzip2 stream {}", streams - 1),
                at + i as u64,
                "not a bzip2 stream header",
            ));
        }
        at += n as u64;
    }
    Ok(())
}

/// What decoding a block's bits once taught us.
#[derive(Debug, Clone, Copy)]
struct Known {
    crc: u32,
    len: u64,
    /// Bit offset of the first block with these bits (the cache key).
    key: u64,
}

/// Compressed blocks decoded so far, by their re-aligned bits.
///
/// A decompression bomb is one small block (900 kB of RLE'd zeros, ~45 MB
/// out, ~40 bytes in) repeated thousands of times; a disk image's runs of
/// zeros give the same repeats. Identical bits with an identical CRC decode
/// to identical bytes, so a repeat is accounted (its length added to the
/// total, counted against the limit) without decoding it again. Only small
/// blocks are remembered (that is where the ratio is extreme), in a bounded
/// table.
#[derive(Default)]
struct Memo {
    map: HashMap<Vec<u8>, Known>,
    bytes: usize,
}

/// Synthetic streams at most this long are remembered.
const MEMO_MAX_STREAM: usize = 64 << 10;
/// Total bytes of remembered streams.
const MEMO_BUDGET: usize = 4 << 20;

impl Memo {
    fn insert(&mut self, stream: &[u8], known: Known) {
        if stream.len() <= MEMO_MAX_STREAM
            && self.bytes + stream.len() <= MEMO_BUDGET
            && !self.map.contains_key(stream)
        {
            self.bytes += stream.len();
            self.map.insert(stream.to_vec(), known);
        }
    }
}

/// Counters of the decode pass.
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    blocks: u64,
    bytes: u64,
}

/// Reads the CRC of the block at `start` and builds its synthetic stream.
fn prepare(src: &dyn ByteSource, start: u64, end: u64) -> Result<(u32, Vec<u8>), String> {
    let crc = get_bits(src, start + 48, 32).map_err(|e| e.to_string())?;
    let s = synthetic_stream(src, start, end, crc).map_err(|e| e.to_string())?;
    Ok((crc, s))
}

/// Decodes every piece (in parallel batches, repeats recognised through
/// `memo`), merges false splits, and builds the block index. Stops with
/// [`SourceError::LimitExceeded`] as soon as the output passes the limit.
fn decode_pieces(
    src: &dyn ByteSource,
    pieces: &[Piece],
    opts: &DecompressOptions,
) -> Result<(Vec<Block>, Work), SourceError> {
    let name = src.name();
    let threads = rayon::current_num_threads().max(1);
    let batch = 4 * threads;
    let mut blocks: Vec<Block> = Vec::with_capacity(pieces.len());
    let mut memo = Memo::default();
    let mut work = Work::default();
    let mut out = 0u64;
    let mut i = 0usize;
    while i < pieces.len() {
        let bend = (i + batch).min(pieces.len());
        let results = decode_batch(src, &pieces[i..bend], &mut memo, &mut work);
        let mut j = i;
        while j < bend {
            let p = &pieces[j];
            let (known, last) = match &results[j - i] {
                Ok(k) => (*k, j),
                Err(e) => merge_false_split(src, pieces, j, e, &mut work)?,
            };
            let end = pieces[last].end;
            blocks.push(Block {
                start: p.start,
                end,
                out,
                len: known.len,
                stream: p.stream,
                crc: known.crc,
                key: known.key,
            });
            out = out.saturating_add(known.len);
            if let Some(limit) = opts.max_uncompressed
                && out > limit
            {
                report_blocks(opts, src.len(), &blocks, work);
                return Err(limit_error(name, "bzip2 stream", limit, out, end / 8));
            }
            j = last + 1;
        }
        i = j;
        report_blocks(opts, src.len(), &blocks, work);
    }
    Ok((blocks, work))
}

/// Calls the progress callback with the state after `blocks`.
fn report_blocks(opts: &DecompressOptions, total: u64, blocks: &[Block], work: Work) {
    report(
        opts,
        Progress {
            compressed_done: blocks.last().map_or(0, |b| b.end / 8),
            compressed_total: total,
            uncompressed: blocks.last().map_or(0, |b| b.out + b.len),
            decoded: work.bytes,
        },
    );
}

/// Bytes `base..base + data.len()` of `inner` held in memory; reads outside
/// go to `inner`.
#[derive(Debug)]
struct Span<'a> {
    inner: &'a dyn ByteSource,
    base: u64,
    data: Vec<u8>,
}

/// Largest batch span read at once (a batch is 4 × threads pieces of at
/// most ~2.3 MB each when valid).
const MAX_SPAN: u64 = 32 << 20;

impl<'a> Span<'a> {
    /// Reads `from..to` (plus the few bytes a block's CRC read may need past
    /// `to`), or `None` when the span is too large or the read fails (the
    /// pieces then read on their own and report their own errors).
    fn read(inner: &'a dyn ByteSource, from: u64, to: u64) -> Option<Self> {
        let to = to.saturating_add(8).min(inner.len());
        if to <= from || to - from > MAX_SPAN {
            return None;
        }
        let mut data = vec![0u8; usize::try_from(to - from).ok()?];
        inner.read_exact_at(from, &mut data).ok()?;
        Some(Self {
            inner,
            base: from,
            data,
        })
    }
}

impl ByteSource for Span<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let end = check_range(self.inner.name(), offset, buf.len(), self.inner.len())?;
        let span_end = self.base + self.data.len() as u64;
        if offset >= self.base && end <= span_end {
            // Both fit in usize: inside `data`.
            let at = (offset - self.base) as usize;
            buf.copy_from_slice(&self.data[at..at + buf.len()]);
            return Ok(());
        }
        self.inner.read_exact_at(offset, buf)
    }
}

/// Decodes one batch of pieces: repeats of known blocks (and of each other)
/// are answered from `memo`; the rest decode in parallel.
fn decode_batch(
    src: &dyn ByteSource,
    batch: &[Piece],
    memo: &mut Memo,
    work: &mut Work,
) -> Vec<Result<Known, String>> {
    // The batch's pieces are contiguous: read their span once, in order,
    // rather than two small reads per piece from two threads (a remote
    // source sees one sequential read instead of a scattered pattern).
    let span = match (batch.first(), batch.last()) {
        (Some(a), Some(b)) => Span::read(src, a.start / 8, b.end.div_ceil(8)),
        _ => None,
    };
    let view: &dyn ByteSource = match &span {
        Some(v) => v,
        None => src,
    };
    let prepared: Vec<Result<(u32, Vec<u8>), String>> = batch
        .par_iter()
        .map(|p| prepare(view, p.start, p.end))
        .collect();
    // First occurrence (in this batch) of every stream not yet known.
    let mut firsts: HashMap<&[u8], usize> = HashMap::new();
    let mut todo: Vec<usize> = Vec::new();
    for (k, r) in prepared.iter().enumerate() {
        if let Ok((_, s)) = r
            && !memo.map.contains_key(s.as_slice())
            && !firsts.contains_key(s.as_slice())
        {
            firsts.insert(s.as_slice(), k);
            todo.push(k);
        }
    }
    let decoded: Vec<(usize, Result<u64, String>)> = todo
        .par_iter()
        .map(|&k| {
            let r = match &prepared[k] {
                Ok((_, s)) => decode(s, |_| Ok(())),
                Err(e) => Err(e.clone()),
            };
            (k, r)
        })
        .collect();
    let mut fresh: HashMap<usize, Result<Known, String>> = HashMap::new();
    for (k, r) in decoded {
        let r = r.and_then(|len| match &prepared[k] {
            Ok((crc, s)) => {
                work.blocks += 1;
                work.bytes = work.bytes.saturating_add(len);
                let known = Known {
                    crc: *crc,
                    len,
                    key: batch[k].start,
                };
                memo.insert(s, known);
                Ok(known)
            }
            Err(e) => Err(e.clone()),
        });
        fresh.insert(k, r);
    }
    prepared
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let (_, s) = r.as_ref().map_err(Clone::clone)?;
            if let Some(known) = memo.map.get(s.as_slice()) {
                return Ok(*known);
            }
            let first = firsts.get(s.as_slice()).copied().unwrap_or(k);
            fresh
                .get(&first)
                .cloned()
                .unwrap_or_else(|| Err("block was not decoded".into()))
        })
        .collect()
}

/// A piece failed to decode: a magic inside compressed data may have split
/// a block in two. Retries it merged with up to [`MAX_MERGE`] following
/// pieces of the same stream; returns the block and the last piece used.
fn merge_false_split(
    src: &dyn ByteSource,
    pieces: &[Piece],
    j: usize,
    err: &str,
    work: &mut Work,
) -> Result<(Known, usize), SourceError> {
    let p = &pieces[j];
    for m in 1..=MAX_MERGE {
        let Some(q) = pieces.get(j + m) else { break };
        if q.stream != p.stream {
            break;
        }
        let Ok((crc, s)) = prepare(src, p.start, q.end) else {
            continue;
        };
        if let Ok(len) = decode(&s, |_| Ok(())) {
            work.blocks += 1;
            work.bytes = work.bytes.saturating_add(len);
            let known = Known {
                crc,
                len,
                key: p.start,
            };
            return Ok((known, j + m));
        }
    }
    Err(corrupt(
        src.name(),
        format!("bzip2 stream {} block", p.stream),
        p.start / 8,
        format!("bit offset {}: {err}", p.start),
    ))
}

impl Bzip2Source {
    /// Opens `inner` (a bzip2 file): scans, decodes and verifies every block
    /// in parallel, and builds the block index.
    pub fn open(inner: Arc<dyn ByteSource>, opts: &DecompressOptions) -> Result<Self, SourceError> {
        let src = inner.as_ref();
        let name = src.name().to_owned();
        let total = src.len();
        let max_entries = (opts.index_budget / ENTRY_BYTES).max(1024);
        let magics = scan(src, max_entries)?;
        let layout = walk_streams(src, &magics)?;
        drop(magics);
        let (blocks, work) = decode_pieces(src, &layout.pieces, opts)?;
        let out = blocks.last().map_or(0, |b| b.out + b.len);

        // Stream CRCs: combined = rotl1(combined) ^ block_crc.
        for (s, &eos) in layout.eos.iter().enumerate() {
            let stored = get_bits(src, eos + 48, 32)?;
            let combined = blocks
                .iter()
                .filter(|b| b.stream as usize == s)
                .fold(0u32, |c, b| c.rotate_left(1) ^ b.crc);
            if stored != combined {
                return Err(corrupt(
                    &name,
                    format!("bzip2 stream {s} end-of-stream marker"),
                    eos / 8,
                    format!(
                        "stream CRC mismatch: stored {stored:08x}, blocks combine to {combined:08x}"
                    ),
                ));
            }
        }
        let info = StreamInfo {
            container: "bzip2",
            compressed_size: total,
            uncompressed_size: out,
            members: layout.eos.len() as u64,
            blocks: blocks.len() as u64,
            blocks_decoded: work.blocks,
            index_points: blocks.len(),
            index_bytes: blocks.len() * ENTRY_BYTES,
            spacing: 0,
            complete: true,
        };
        Ok(Self {
            name: format!("{name} (bunzipped)"),
            len: out,
            blocks,
            info,
            cache: Mutex::new(ChunkCache::new(opts.cache_budget)),
            inner,
        })
    }

    /// What the open pass learned.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// The compressed file.
    pub fn inner(&self) -> &Arc<dyn ByteSource> {
        &self.inner
    }

    fn block_data(&self, i: usize) -> Result<Arc<[u8]>, SourceError> {
        let b = self.blocks[i];
        if let Some(d) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(b.key)
        {
            return Ok(d);
        }
        let src = self.inner.as_ref();
        let s = synthetic_stream(src, b.start, b.end, b.crc)?;
        let len = usize::try_from(b.len)
            .map_err(|_| SourceError::too_large(&self.name, b.start, b.len, usize::MAX as u64))?;
        let mut data = Vec::with_capacity(len);
        decode(&s, |piece| {
            if data.len() + piece.len() > len {
                return Err("block decodes longer than at open (file changed?)".into());
            }
            data.extend_from_slice(piece);
            Ok(())
        })
        .map_err(|e| {
            corrupt(
                src.name(),
                format!("bzip2 stream {} block", b.stream),
                b.start / 8,
                format!("bit offset {}: {e}", b.start),
            )
        })?;
        if data.len() != len {
            return Err(corrupt(
                src.name(),
                format!("bzip2 stream {} block", b.stream),
                b.start / 8,
                "block decodes shorter than at open (file changed?)",
            ));
        }
        let data: Arc<[u8]> = data.into();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(b.key, data.clone());
        Ok(data)
    }
}

impl ByteSource for Bzip2Source {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        check_range(&self.name, offset, buf.len(), self.len)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let i = self.blocks.partition_point(|b| b.out + b.len <= pos);
            let b = self.blocks.get(i).copied().ok_or_else(|| {
                SourceError::new(
                    crate::ErrorKind::Io,
                    &self.name,
                    format!("no block holds offset {pos} (internal error)"),
                )
            })?;
            let data = self.block_data(i)?;
            let within = (pos - b.out) as usize;
            let n = (data.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn access(&self) -> Access {
        Access::Slow
    }

    fn bytes_fetched(&self) -> u64 {
        self.inner.bytes_fetched()
    }

    fn allocated_size(&self) -> Option<u64> {
        self.inner.allocated_size()
    }

    fn open_sibling(&self, name: &str) -> Result<Arc<dyn ByteSource>, SourceError> {
        self.inner.open_sibling(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemSource;
    use std::io::Write;

    fn bz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn open(bytes: Vec<u8>, opts: &DecompressOptions) -> Result<Bzip2Source, SourceError> {
        Bzip2Source::open(Arc::new(MemSource::new("t.bz2", bytes)), opts)
    }

    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 7) as u8 // compressible but not trivially
            })
            .collect()
    }

    #[test]
    fn multi_block_multi_stream_reads() {
        let a = pattern(350_000, 3);
        let b = pattern(120_000, 9);
        let mut f = bz(&a, 1); // 100 kB blocks: several blocks
        f.extend(bz(&b, 9));
        f.extend(bz(b"", 9)); // an empty stream too
        let s = open(f, &DecompressOptions::default()).unwrap();
        assert_eq!(s.len(), 470_000);
        assert_eq!(s.info().members, 3);
        assert!(s.info().blocks >= 4, "{:?}", s.info());
        let mut buf = vec![0u8; 2000];
        s.read_exact_at(349_000, &mut buf).unwrap();
        assert_eq!(&buf[..1000], &a[349_000..]);
        assert_eq!(&buf[1000..], &b[..1000]);
        s.read_exact_at(99_000, &mut buf).unwrap();
        assert_eq!(&buf[..], &a[99_000..101_000]);
    }

    #[test]
    fn corrupt_block_and_truncation_are_errors() {
        let a = pattern(250_000, 5);
        let f = bz(&a, 1);
        let mut bad = f.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        let err = open(bad, &DecompressOptions::default()).unwrap_err();
        assert!(err.to_string().contains("block"), "{err}");
        let err = open(f[..f.len() - 3].to_vec(), &DecompressOptions::default()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = open(f[..f.len() / 2].to_vec(), &DecompressOptions::default()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn limit_stops_early() {
        let f = bz(&vec![0u8; 3_000_000], 1);
        let opts = DecompressOptions {
            max_uncompressed: Some(1_000_000),
            ..Default::default()
        };
        let err = open(f, &opts).unwrap_err();
        assert!(
            matches!(err.kind, crate::ErrorKind::LimitExceeded(_)),
            "{err}"
        );
    }

    /// Progress callback that remembers the last report.
    fn last_progress() -> (DecompressOptions, Arc<Mutex<Option<Progress>>>) {
        let last = Arc::new(Mutex::new(None));
        let l = last.clone();
        let opts = DecompressOptions {
            progress: Some(crate::ProgressFn::new(move |p| {
                *l.lock().unwrap() = Some(p);
            })),
            ..Default::default()
        };
        (opts, last)
    }

    #[test]
    fn repeated_blocks_decode_once() {
        // Level 1: ~5.2 MB of zeros per block (100 kB after RLE), so 21 MB
        // is four identical full blocks at four different bit alignments
        // in one stream, and a shorter last one.
        let zeros = vec![0u8; 21_000_000];
        let f = bz(&zeros, 1);
        let (opts, last) = last_progress();
        let s = open(f, &opts).unwrap();
        assert_eq!(s.len(), zeros.len() as u64);
        assert_eq!(s.info().blocks, 5, "{:?}", s.info());
        assert_eq!(s.info().blocks_decoded, 2, "{:?}", s.info());
        let p = last.lock().unwrap().unwrap();
        assert_eq!(p.uncompressed, zeros.len() as u64);
        assert!(p.decoded < 11_000_000, "{p:?}");
        let mut buf = vec![1u8; 3_000_000];
        for off in [0u64, 5_000_000, 12_345_678, 18_000_000] {
            s.read_exact_at(off, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0), "at {off}");
            buf.fill(1);
        }
        // Different data between the repeats is still decoded and read.
        let mut mixed = pattern(300_000, 7);
        mixed.extend(vec![0u8; 11_000_000]);
        mixed.extend(pattern(300_000, 8));
        let s = open(bz(&mixed, 1), &DecompressOptions::default()).unwrap();
        let mut all = vec![0u8; mixed.len()];
        s.read_exact_at(0, &mut all).unwrap();
        assert!(all == mixed);
    }

    #[test]
    fn bomb_stops_at_limit_after_one_decoded_block() {
        // 60 MB of zeros: ~12 identical blocks. The limit is passed by
        // accounting repeats, with a single block decoded.
        let f = bz(&vec![0u8; 60_000_000], 1);
        let (mut opts, last) = last_progress();
        opts.max_uncompressed = Some(30_000_000);
        let err = open(f, &opts).unwrap_err();
        assert!(
            matches!(&err.kind, crate::ErrorKind::LimitExceeded(l)
                if l.value > 30_000_000 && l.value < 36_000_000),
            "{err}"
        );
        let p = last.lock().unwrap().unwrap();
        assert!(p.uncompressed > 30_000_000, "{p:?}");
        assert!(p.decoded > 0 && p.decoded < 6_000_000, "{p:?}");
    }
}
