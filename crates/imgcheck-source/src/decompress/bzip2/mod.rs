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
//! 3. decodes every block straight from its bit range in the held bytes,
//!    in parallel with rayon, one block per task, its inverse-BWT chain
//!    walked in segments at once (`block.rs`, hand-written: see there);
//!    the block decoder verifies each block CRC, and the stream CRCs are
//!    combined from the block CRCs and compared with each end-of-stream
//!    record. Randomised blocks (bzip2 before 0.9.5) go to libbz2 (`bzip2`
//!    crate, pure-Rust libbz2-rs backend) as a synthetic one-block stream:
//!    `BZh`, the block's bits re-aligned to a byte, an end-of-stream magic
//!    and a stream CRC equal to the block's CRC.
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
//! unreviewed machine translation. No crate decodes one block from a bit
//! offset (see `block.rs` for the decoder itself).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

mod block;

use super::{ChunkCache, DecompressOptions, Progress, StreamInfo, corrupt, limit_error, report};
use crate::{Access, ByteSource, SourceError, check_range};

const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
const EOS_MAGIC: u64 = 0x1772_4538_5090;
const MASK48: u64 = (1 << 48) - 1;
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

/// Decoded blocks are cached in pieces of this many bytes, and a piece of
/// one repeated byte is kept as that byte: a block of zeros can decode to
/// ~46 MB (runs of up to 259 bytes from every 5 symbols), which held whole
/// would break the memory bound.
const PIECE: u64 = 1 << 20;

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
    /// The stream's level (`BZh1..9`), which bounds the block length.
    level: u8,
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

/// The bytes holding bits `start..end` of `src`, plus up to 8 bytes after
/// them (the block decoder peeks ahead), and the byte offset of the first.
#[allow(clippy::cast_possible_truncation)] // spans ≤ MAX_BLOCK_BYTES + 8
fn block_bytes(src: &dyn ByteSource, start: u64, end: u64) -> Result<(Vec<u8>, u64), SourceError> {
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
    let stop = (last + 8).min(src.len()).max(last);
    // At most MAX_BLOCK_BYTES + 8: fits in usize.
    let mut raw = vec![0u8; (stop - first) as usize];
    src.read_exact_at(first, &mut raw)?;
    Ok((raw, first))
}

/// Builds a one-block bzip2 stream (level `level`) from the block bits of
/// `span`: the memo's key, and what libbz2 decodes for randomised blocks.
#[allow(clippy::cast_possible_truncation)] // spans ≤ MAX_BLOCK_BYTES + 8
fn synthetic_stream(span: &block::Span, crc: u32) -> Vec<u8> {
    let k = (span.start % 8) as u32;
    let nbits = span.end - span.start;
    let nbytes = nbits.div_ceil(8) as usize;
    let first = (span.start / 8) as usize;
    let raw = span.data.get(first..).unwrap_or(&[]);
    let mut out = Vec::with_capacity(nbytes + 16);
    out.extend_from_slice(b"BZh");
    out.push(b'0' + span.level);
    let byte = |i: usize| raw.get(i).copied().unwrap_or(0);
    if k == 0 {
        out.extend((0..nbytes).map(byte));
    } else {
        out.extend((0..nbytes).map(|i| (byte(i) << k) | (byte(i + 1) >> (8 - k))));
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
    w.out
}

thread_local! {
    /// Each worker's block-decoder buffers, reused from block to block.
    static SCRATCH: RefCell<block::Scratch> = RefCell::default();
}

/// Frees the workers' decoder buffers (up to 6 MB each) once the open pass
/// is over: later reads decode one block at a time on the reading thread, and
/// the decoded-piece cache wants the memory.
fn release_scratch() {
    rayon::broadcast(|_| {
        SCRATCH.with(|s| {
            // Busy: another open pass is decoding on this worker.
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = Default::default();
            }
        });
    });
}

/// The span of bits `start..end` in `bytes` (which start at byte `first`).
fn span_of(bytes: &[u8], first: u64, start: u64, end: u64, level: u8) -> block::Span<'_> {
    block::Span {
        data: bytes,
        start: start - first * 8,
        end: end - first * 8,
        level,
    }
}

/// Decodes the block of `span` (randomised blocks through libbz2).
fn decode_span(
    span: &block::Span,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<block::Decoded, String> {
    let r = SCRATCH.with(|s| block::decode(span, &mut s.borrow_mut(), sink));
    match r {
        Err(block::BlockError::Randomised) => {
            let crc = span.stored_crc();
            let len = decode(&synthetic_stream(span, crc), sink)?;
            Ok(block::Decoded { crc, len })
        }
        r => r.map_err(|e| e.to_string()),
    }
}

/// Decodes a synthetic stream; `sink` gets the output in pieces. Returns the
/// uncompressed length.
fn decode(stream: &[u8], sink: &mut dyn FnMut(&[u8]) -> Result<(), String>) -> Result<u64, String> {
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
    level: u8,
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

/// The bits of `start..end` from the held bytes (or, if they are not
/// held, read from the file).
#[allow(clippy::cast_possible_truncation)] // spans ≤ MAX_BLOCK_BYTES + 8
fn held_bytes<'a>(held: &'a Held, start: u64, end: u64) -> Result<(Cow<'a, [u8]>, u64), String> {
    let first = start / 8;
    let last = end.div_ceil(8);
    if first >= held.base && last <= held.end() && last - first <= MAX_BLOCK_BYTES {
        // Inside `data`: both fit in usize.
        let a = (first - held.base) as usize;
        let b = ((last + 8).min(held.end()) - held.base) as usize;
        return Ok((Cow::Borrowed(&held.data[a..b]), first));
    }
    let (v, first) = block_bytes(held.inner, start, end).map_err(|e| e.to_string())?;
    Ok((Cow::Owned(v), first))
}

/// The memo key of a small block: its CRC and re-aligned bits as a
/// synthetic stream; None for a block too long to be worth remembering.
fn memo_key(held: &Held, p: &Piece) -> Result<Option<Vec<u8>>, String> {
    if (p.end - p.start) / 8 > MEMO_MAX_STREAM as u64 {
        return Ok(None);
    }
    let (bytes, first) = held_bytes(held, p.start, p.end)?;
    let span = span_of(&bytes, first, p.start, p.end, p.level);
    Ok(Some(synthetic_stream(&span, span.stored_crc())))
}

/// Decodes piece `p`, discarding the output.
fn decode_piece(held: &Held, p: &Piece) -> Result<block::Decoded, String> {
    let (bytes, first) = held_bytes(held, p.start, p.end)?;
    decode_span(
        &span_of(&bytes, first, p.start, p.end, p.level),
        &mut |_| Ok(()),
    )
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

/// Decodes one batch of pieces: repeats of known blocks (and of each other)
/// are answered from `memo`; the rest decode in parallel.
fn decode_batch(
    held: &Held,
    batch: &[Piece],
    memo: &mut Memo,
    work: &mut Work,
) -> Vec<Result<Known, String>> {
    let keys: Vec<Result<Option<Vec<u8>>, String>> =
        batch.par_iter().map(|p| memo_key(held, p)).collect();
    // First occurrence (in this batch) of every small block not yet known.
    let mut firsts: HashMap<&[u8], usize> = HashMap::new();
    let mut todo: Vec<usize> = Vec::new();
    for (k, r) in keys.iter().enumerate() {
        match r {
            Err(_) => {}
            // Only small blocks are remembered (and repeat): hashing a
            // megabyte block to look it up would cost more than it saves.
            Ok(None) => todo.push(k),
            Ok(Some(s)) => {
                if !memo.map.contains_key(s.as_slice()) && !firsts.contains_key(s.as_slice()) {
                    firsts.insert(s.as_slice(), k);
                    todo.push(k);
                }
            }
        }
    }
    let decoded: Vec<(usize, Result<block::Decoded, String>)> = todo
        .par_iter()
        .map(|&k| (k, decode_piece(held, &batch[k])))
        .collect();
    let mut fresh: HashMap<usize, Result<Known, String>> = HashMap::new();
    for (k, r) in decoded {
        let r = r.map(|d| {
            work.blocks += 1;
            work.bytes = work.bytes.saturating_add(d.len);
            let known = Known {
                crc: d.crc,
                len: d.len,
                key: batch[k].start,
            };
            if let Ok(Some(s)) = &keys[k] {
                memo.insert(s, known);
            }
            known
        });
        fresh.insert(k, r);
    }
    let not_decoded = || Err("block was not decoded".to_string());
    keys.iter()
        .enumerate()
        .map(|(k, r)| match r.as_ref().map_err(Clone::clone)? {
            None => fresh.get(&k).cloned().unwrap_or_else(not_decoded),
            Some(s) => {
                if let Some(known) = memo.map.get(s.as_slice()) {
                    return Ok(*known);
                }
                let first = firsts.get(s.as_slice()).copied().unwrap_or(k);
                fresh.get(&first).cloned().unwrap_or_else(not_decoded)
            }
        })
        .collect()
}

/// A piece failed to decode: a magic inside compressed data may have split
/// a block in two. Retries it merged with up to [`MAX_MERGE`] following
/// pieces of the same stream; returns the block and the last piece used.
fn merge_false_split(
    held: &Held,
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
        let merged = Piece {
            start: p.start,
            end: q.end,
            stream: p.stream,
            level: p.level,
        };
        if let Ok(d) = decode_piece(held, &merged) {
            work.blocks += 1;
            work.bytes = work.bytes.saturating_add(d.len);
            let known = Known {
                crc: d.crc,
                len: d.len,
                key: p.start,
            };
            return Ok((known, j + m));
        }
    }
    Err(corrupt(
        held.name(),
        format!("bzip2 stream {} block", p.stream),
        p.start / 8,
        format!("bit offset {}: {err}", p.start),
    ))
}

/// Compressed bytes read per step of the open pass.
const WINDOW: u64 = 4 << 20;

/// The compressed bytes the open pass holds, `base..base + data.len()` of
/// `inner`: the pass reads the file once, front to back, in windows, and
/// keeps only what undecoded blocks still need. Reads outside the held
/// bytes go to `inner` (the zero tail after the last stream).
#[derive(Debug)]
struct Held<'a> {
    inner: &'a dyn ByteSource,
    base: u64,
    data: Vec<u8>,
}

impl Held<'_> {
    fn end(&self) -> u64 {
        self.base + self.data.len() as u64
    }

    fn at_eof(&self) -> bool {
        self.end() >= self.inner.len()
    }

    /// Appends the next window of the file.
    fn fill(&mut self) -> Result<(), SourceError> {
        let end = self.end();
        let n = (self.inner.len().saturating_sub(end)).min(WINDOW) as usize;
        let old = self.data.len();
        self.data.resize(old + n, 0);
        self.inner.read_exact_at(end, &mut self.data[old..])
    }

    /// Forgets the bytes before byte offset `keep`.
    fn trim(&mut self, keep: u64) {
        if keep > self.base {
            let n = usize::try_from(keep - self.base)
                .unwrap_or(usize::MAX)
                .min(self.data.len());
            self.data.drain(..n);
            self.base += n as u64;
        }
    }
}

impl ByteSource for Held<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let end = check_range(self.inner.name(), offset, buf.len(), self.inner.len())?;
        if offset >= self.base && end <= self.end() {
            // Both fit in usize: inside `data`.
            let at = (offset - self.base) as usize;
            buf.copy_from_slice(&self.data[at..at + buf.len()]);
            return Ok(());
        }
        self.inner.read_exact_at(offset, buf)
    }
}

/// The values the byte before the last one of a 48-bit window ending at a
/// byte boundary can have when the window holds a magic at any of the 8
/// alignments (that byte lies wholly inside the magic at every alignment):
/// 16 of 256, so the scan tests the alignments at one byte in 16.
const SCAN_CANDIDATES: [bool; 256] = {
    let mut t = [false; 256];
    let mut s = 0;
    while s < 8 {
        t[((BLOCK_MAGIC << s >> 8) & 0xff) as usize] = true;
        t[((EOS_MAGIC << s >> 8) & 0xff) as usize] = true;
        s += 1;
    }
    t
};

/// Finds the magics that start at bit `from_bit` or later and lie wholly
/// inside `data` (which starts at byte offset `base`).
fn scan_bytes(data: &[u8], base: u64, from_bit: u64) -> Vec<Magic> {
    let mut found = Vec::new();
    let mut w: u64 = 0;
    for (i, &b) in data.iter().enumerate() {
        w = (w << 8) | u64::from(b);
        if i < 5 || !SCAN_CANDIDATES[((w >> 8) & 0xff) as usize] {
            continue;
        }
        // Test the 8 bit alignments of a 48-bit window ending here.
        let end_bit = (base + i as u64 + 1) * 8;
        for s in 0..8u64 {
            if i == 5 && s > 0 {
                break;
            }
            let v = (w >> s) & MASK48;
            if v == BLOCK_MAGIC || v == EOS_MAGIC {
                let bit = end_bit - s - 48;
                if bit >= from_bit {
                    found.push(Magic {
                        bit,
                        eos: v == EOS_MAGIC,
                    });
                }
            }
        }
    }
    found
}

/// Scans the held bytes for magics starting at `from_bit` or later, in
/// parallel parts; returns them sorted.
fn scan_held(held: &Held, from_bit: u64) -> Vec<Magic> {
    let first = usize::try_from((from_bit / 8).saturating_sub(held.base))
        .unwrap_or(usize::MAX)
        .min(held.data.len());
    let data = &held.data[first..];
    let base = held.base + first as u64;
    let parts = rayon::current_num_threads().clamp(1, 8);
    let step = data.len().div_ceil(parts).max(1 << 16);
    let mut found: Vec<Magic> = (0..data.len().div_ceil(step))
        .into_par_iter()
        .flat_map_iter(|k| {
            let a = k * step;
            let b = (a + step).min(data.len());
            // A part owns the magics starting in its bytes; it reads 6
            // bytes on so a magic crossing its end is whole.
            let stop = (base + b as u64) * 8;
            let last = b == data.len();
            scan_bytes(&data[a..(b + 6).min(data.len())], base + a as u64, from_bit)
                .into_iter()
                .filter(move |m| last || m.bit < stop)
        })
        .collect();
    found.sort_unstable();
    found
}

/// Where the walk over the stream structure is.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Expecting a stream header (`BZh1..9`) at this byte offset.
    Header(u64),
    /// Inside a stream; `open` is the block magic whose end is not known yet.
    Stream {
        stream: u32,
        level: u8,
        open: Option<u64>,
    },
    /// Past the last stream.
    Done,
}

/// The stream structure (`BZh` headers, blocks, end-of-stream, byte
/// padding, next stream), walked as the magics are found.
struct Walk {
    at: At,
    /// Each stream's end-of-stream bit offset and stored stream CRC.
    eos: Vec<(u64, u32)>,
}

impl Walk {
    /// Byte offset of the first byte the walk still needs.
    fn needs(&self, held_end: u64) -> u64 {
        match self.at {
            At::Header(pos) => pos,
            At::Stream {
                open: Some(bit), ..
            } => bit / 8,
            At::Stream { open: None, .. } => held_end,
            At::Done => held_end,
        }
    }

    /// Walks over `magics` (all magics starting before bit `found_to`; all
    /// of them once the whole file is held), pushing every piece whose end
    /// is known. Returns when it needs more of the file or is done.
    fn advance(
        &mut self,
        held: &Held,
        magics: &mut VecDeque<Magic>,
        found_to: u64,
        out: &mut Vec<Piece>,
    ) -> Result<(), SourceError> {
        let name = held.name();
        let total = held.len();
        let eof = held.at_eof();
        loop {
            match self.at {
                At::Done => return Ok(()),
                At::Header(pos) => {
                    if pos >= total {
                        self.at = At::Done;
                        continue;
                    }
                    let first_bit = (pos + 4) * 8;
                    if !eof && (pos + 4 > held.end() || first_bit + 48 > found_to) {
                        return Ok(());
                    }
                    let mut head = [0u8; 4];
                    let avail = (total - pos).min(4) as usize;
                    held.read_exact_at(pos, &mut head[..avail])?;
                    let is_header =
                        avail == 4 && &head[..3] == b"BZh" && (b'1'..=b'9').contains(&head[3]);
                    if !is_header {
                        if self.eos.is_empty() {
                            return Err(corrupt(
                                name,
                                "bzip2 stream 0 header",
                                pos,
                                "not a bzip2 header",
                            ));
                        }
                        check_zero_tail(held, pos, self.eos.len())?;
                        self.at = At::Done;
                        continue;
                    }
                    let stream = u32::try_from(self.eos.len()).unwrap_or(u32::MAX);
                    while magics.front().is_some_and(|m| m.bit < first_bit) {
                        magics.pop_front();
                    }
                    if magics.front().map(|m| m.bit) != Some(first_bit) {
                        return Err(corrupt(
                            name,
                            format!("bzip2 stream {stream}"),
                            pos + 4,
                            "no block or end-of-stream magic after the stream header (truncated or corrupt)",
                        ));
                    }
                    self.at = At::Stream {
                        stream,
                        level: head[3] - b'0',
                        open: None,
                    };
                }
                At::Stream {
                    stream,
                    level,
                    open,
                } => {
                    if !self.stream_step(held, magics, (stream, level), open, out)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One magic inside stream `stream`. Returns false when it has to wait
    /// for more of the file.
    fn stream_step(
        &mut self,
        held: &Held,
        magics: &mut VecDeque<Magic>,
        (stream, level): (u32, u8),
        open: Option<u64>,
        out: &mut Vec<Piece>,
    ) -> Result<bool, SourceError> {
        let name = held.name();
        let total = held.len();
        let Some(m) = magics.front().copied() else {
            if held.at_eof() {
                return Err(corrupt(
                    name,
                    format!("bzip2 stream {stream}"),
                    total,
                    "truncated: the file ends before the end-of-stream marker",
                ));
            }
            // No boundary yet: a block longer than any valid one is an
            // error now rather than more bytes held.
            if let Some(start) = open
                && held.end() - start / 8 > MAX_BLOCK_BYTES + WINDOW
            {
                return Err(corrupt(
                    name,
                    format!("bzip2 stream {stream} block"),
                    start / 8,
                    format!("no block boundary within {MAX_BLOCK_BYTES} bytes"),
                ));
            }
            return Ok(false);
        };
        let crc_end = m.bit + 80;
        if m.eos && crc_end <= total * 8 && crc_end > held.end() * 8 {
            return Ok(false); // the stream CRC is in the next window
        }
        if let Some(start) = open {
            if (m.bit - start) / 8 > MAX_BLOCK_BYTES {
                // Longer than any valid block, merged or not: fail now
                // rather than hold it for the decoder.
                return Err(corrupt(
                    name,
                    format!("bzip2 stream {stream} block"),
                    start / 8,
                    format!("no block boundary within {MAX_BLOCK_BYTES} bytes"),
                ));
            }
            out.push(Piece {
                start,
                end: m.bit,
                stream,
                level,
            });
        }
        magics.pop_front();
        if !m.eos {
            self.at = At::Stream {
                stream,
                level,
                open: Some(m.bit),
            };
            return Ok(true);
        }
        if crc_end > total * 8 {
            return Err(corrupt(
                name,
                format!("bzip2 stream {stream} end-of-stream marker"),
                m.bit / 8,
                "truncated: the stream CRC is missing",
            ));
        }
        let crc = get_bits(held, m.bit + 48, 32)?;
        self.eos.push((m.bit, crc));
        self.at = At::Header(crc_end.div_ceil(8));
        Ok(true)
    }
}

/// The index being built by the open pass.
struct Built {
    blocks: Vec<Block>,
    memo: Memo,
    work: Work,
    out: u64,
}

/// Pieces per batch at most: most are small (runs of zeros, answered
/// from the memo), so a batch is cut by its large pieces, see [`batch_len`].
const BATCH_PIECES: usize = 64;

/// The length of the first full batch in `queue`: up to `large` pieces too
/// large for the memo (those are always decoded: they set the work) or
/// [`BATCH_PIECES`] pieces. None while the queue holds less. Counting
/// pieces alone left a batch of an lbzip2-made file's mostly-zero pieces
/// with one or two blocks to decode, and a worker idle.
fn batch_len(queue: &[Piece], large: usize) -> Option<usize> {
    let mut seen = 0usize;
    for (k, p) in queue.iter().enumerate() {
        if (p.end - p.start) / 8 > MEMO_MAX_STREAM as u64 {
            seen += 1;
        }
        if seen >= large || k + 1 >= BATCH_PIECES {
            return Some(k + 1);
        }
    }
    None
}

/// Decodes queued pieces in batches (see [`batch_len`]; all of them when `last`),
/// merging false splits, appending to the index. A failed piece with fewer
/// than [`MAX_MERGE`] pieces after it waits for more unless `last`.
fn decode_queue(
    held: &Held,
    queue: &mut Vec<Piece>,
    batch: usize,
    last: bool,
    built: &mut Built,
    opts: &DecompressOptions,
) -> Result<(), SourceError> {
    loop {
        let n = match batch_len(queue, batch) {
            // Room after the batch for a false split's merge.
            Some(n) if queue.len() > n + MAX_MERGE || last => n,
            _ if last && !queue.is_empty() => queue.len(),
            _ => break,
        };
        let results = decode_batch(held, &queue[..n], &mut built.memo, &mut built.work);
        let mut j = 0usize;
        while j < n {
            let p = &queue[j];
            let (known, used) = match &results[j] {
                Ok(k) => (*k, j),
                Err(_) if !last && queue.len() - j - 1 < MAX_MERGE => {
                    queue.drain(..j);
                    return Ok(());
                }
                Err(e) => merge_false_split(held, queue, j, e, &mut built.work)?,
            };
            let end = queue[used].end;
            built.blocks.push(Block {
                start: p.start,
                end,
                out: built.out,
                len: known.len,
                stream: p.stream,
                level: p.level,
                crc: known.crc,
                key: known.key,
            });
            built.out = built.out.saturating_add(known.len);
            if let Some(limit) = opts.max_uncompressed
                && built.out > limit
            {
                report_blocks(opts, held.len(), &built.blocks, built.work);
                let name = held.name();
                return Err(limit_error(name, "bzip2 stream", limit, built.out, end / 8));
            }
            j = used + 1;
        }
        queue.drain(..j.min(queue.len()));
        report_blocks(opts, held.len(), &built.blocks, built.work);
    }
    Ok(())
}

/// The open pass: reads the file once, front to back, in windows; scans
/// each window for magics, walks the stream structure and decodes the
/// complete blocks in parallel batches while it reads on, so nothing is
/// fetched twice (a remote file sees one sequential read).
fn open_pass(
    src: &dyn ByteSource,
    opts: &DecompressOptions,
    max_magics: usize,
) -> Result<(Built, Vec<(u64, u32)>), SourceError> {
    let batch = 8 * rayon::current_num_threads();
    let mut held = Held {
        inner: src,
        base: 0,
        data: Vec::new(),
    };
    let mut magics: VecDeque<Magic> = VecDeque::new();
    let mut found_to = 0u64; // every magic starting before this bit is found
    let mut counted = 0usize;
    let mut walk = Walk {
        at: At::Header(0),
        eos: Vec::new(),
    };
    let mut queue: Vec<Piece> = Vec::new();
    let mut built = Built {
        blocks: Vec::new(),
        memo: Memo::default(),
        work: Work::default(),
        out: 0,
    };
    loop {
        if !matches!(walk.at, At::Done) {
            if !held.at_eof() {
                held.fill()?;
                let found = scan_held(&held, found_to);
                counted = counted.saturating_add(found.len());
                if counted > max_magics {
                    return Err(SourceError::too_large(
                        src.name(),
                        held.end(),
                        (counted * ENTRY_BYTES) as u64,
                        (max_magics * ENTRY_BYTES) as u64,
                    ));
                }
                magics.extend(found);
                found_to = if held.at_eof() {
                    src.len() * 8
                } else {
                    held.end() * 8 - 47
                };
            }
            walk.advance(&held, &mut magics, found_to, &mut queue)?;
            if held.at_eof() && !matches!(walk.at, At::Done) {
                // Cannot happen: with the whole file held the walk ends
                // or fails. Guards against looping forever.
                return Err(corrupt(src.name(), "bzip2 stream", src.len(), "truncated"));
            }
        }
        let done = matches!(walk.at, At::Done);
        decode_queue(&held, &mut queue, batch, done, &mut built, opts)?;
        if done {
            return Ok((built, walk.eos));
        }
        let mut keep = walk.needs(held.end()).min(found_to / 8);
        if let Some(p) = queue.first() {
            keep = keep.min(p.start / 8);
        }
        if let Some(m) = magics.front() {
            keep = keep.min(m.bit / 8);
        }
        held.trim(keep);
    }
}

impl Bzip2Source {
    /// Opens `inner` (a bzip2 file): scans, decodes and verifies every block
    /// in parallel, and builds the block index.
    pub fn open(inner: Arc<dyn ByteSource>, opts: &DecompressOptions) -> Result<Self, SourceError> {
        let src = inner.as_ref();
        let name = src.name().to_owned();
        let total = src.len();
        let max_entries = (opts.index_budget / ENTRY_BYTES).max(1024);
        let pass = open_pass(src, opts, max_entries);
        release_scratch();
        let (Built { blocks, work, .. }, eos) = pass?;
        if eos.is_empty() {
            return Err(corrupt(&name, "bzip2 stream 0 header", 0, "empty file"));
        }
        let out = blocks.last().map_or(0, |b| b.out + b.len);

        // Stream CRCs: combined = rotl1(combined) ^ block_crc.
        for (s, &(eos, stored)) in eos.iter().enumerate() {
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
            members: eos.len() as u64,
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

    /// Piece `piece` (of [`PIECE`] bytes) of block `i`'s output, from the
    /// cache or by decoding the block (which caches all its pieces). A piece
    /// of one repeated byte comes back as that one byte.
    fn piece_data(&self, i: usize, piece: u64) -> Result<Arc<[u8]>, SourceError> {
        let b = self.blocks[i];
        // Pieces per block are fewer than 64 (a block decodes to at most
        // ~46.6 MB: 900k symbols, runs of up to 259 bytes per 5).
        let key = |p: u64| b.key.checked_mul(64).map(|k| k + p);
        let cache = || self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = key(piece).and_then(|k| cache().get(k)) {
            return Ok(d);
        }
        let src = self.inner.as_ref();
        let (bytes, first) = block_bytes(src, b.start, b.end)?;
        let span = span_of(&bytes, first, b.start, b.end, b.level);
        let mut cur: Vec<u8> = Vec::with_capacity(PIECE.min(b.len) as usize);
        let (mut idx, mut total, mut wanted) = (0u64, 0u64, None);
        let mut finish = |cur: &mut Vec<u8>, idx: u64| {
            let uniform = cur.iter().all(|&x| x == cur[0]);
            let data: Arc<[u8]> = if uniform {
                cur[..1].into()
            } else {
                cur[..].into()
            };
            if let Some(k) = key(idx) {
                cache().put(k, data.clone());
            }
            if idx == piece {
                wanted = Some(data);
            }
            cur.clear();
        };
        decode_span(&span, &mut |mut chunk| {
            total += chunk.len() as u64;
            if total > b.len {
                return Err("block decodes longer than at open (file changed?)".into());
            }
            while !chunk.is_empty() {
                let take = (PIECE as usize - cur.len()).min(chunk.len());
                cur.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if cur.len() == PIECE as usize {
                    finish(&mut cur, idx);
                    idx += 1;
                }
            }
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
        if !cur.is_empty() {
            finish(&mut cur, idx);
        }
        match wanted {
            Some(d) if total == b.len => Ok(d),
            _ => Err(corrupt(
                src.name(),
                format!("bzip2 stream {} block", b.stream),
                b.start / 8,
                "block decodes shorter than at open (file changed?)",
            )),
        }
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
            let within = pos - b.out;
            let piece = within / PIECE;
            let off = (within % PIECE) as usize;
            let plen = PIECE.min(b.len - piece * PIECE) as usize;
            let data = self.piece_data(i, piece)?;
            let n = (plen - off).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            if data.len() == plen {
                dst.copy_from_slice(&data[off..off + n]);
            } else {
                // A piece of one repeated byte.
                dst.fill(data[0]);
            }
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

    /// `data` compressed by libbz2 at `level` (also the block tests' input).
    pub(super) fn bz(data: &[u8], level: u32) -> Vec<u8> {
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

    /// A block that decodes to several pieces (runs of zeros and of 0xAA
    /// around text) reads back byte for byte across piece boundaries, and
    /// its uniform pieces are cached as one byte each.
    #[test]
    fn large_blocks_read_in_pieces() {
        let mut data = vec![0u8; 3 << 20];
        data.extend(pattern(200_000, 7));
        data.extend(vec![0xAAu8; (2 << 20) + 123]);
        data.extend(pattern(50_000, 1));
        let s = open(bz(&data, 9), &DecompressOptions::default()).unwrap();
        assert_eq!(s.info().blocks, 1, "{:?}", s.info());
        assert_eq!(s.len(), data.len() as u64);
        let mut rng = 12345u64;
        for _ in 0..200 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = (rng >> 33) as usize % data.len();
            let n = ((rng >> 7) as usize % 3_000_000).min(data.len() - at);
            let mut buf = vec![1u8; n];
            s.read_exact_at(at as u64, &mut buf).unwrap();
            assert!(buf == data[at..at + n], "read at {at}, {n} bytes");
        }
        let mut all = vec![0u8; data.len()];
        s.read_exact_at(0, &mut all).unwrap();
        assert!(all == data);
        // Two pieces hold text; the other four are one byte each (the
        // block whole would be 5.3 MB).
        let cache = s.cache.lock().unwrap();
        assert!(cache.used < 2 << 20, "cached {} bytes", cache.used);
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
    fn bomb_stops_at_limit_decoding_each_distinct_block_once() {
        // 60 MB of zeros: 11 identical blocks (100 000 symbols at level 1:
        // 5.18 MB each) and a shorter last one, all in one batch. The limit
        // is passed by accounting repeats: only the first block and the
        // different last one are decoded, less than two blocks' output.
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
        assert!(p.decoded > 5_000_000 && p.decoded < 10_360_000, "{p:?}");
    }

    /// A source that counts the bytes read from it.
    #[derive(Debug)]
    struct Counting(MemSource, std::sync::atomic::AtomicU64);

    impl ByteSource for Counting {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
            self.1
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.0.read_exact_at(offset, buf)
        }
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)]
    fn open_reads_every_compressed_byte_once() {
        // ~9 MB of barely compressible data at level 1 (100 kB blocks):
        // about 90 blocks over three windows, so blocks and magics cross
        // window boundaries.
        let mut data = Vec::new();
        let mut x = 0x9e37_79b9u32;
        for _ in 0..9_000_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push((x >> 8) as u8);
        }
        let mut f = bz(&data, 1);
        f.extend(bz(&data[..1_000_000], 9)); // and a second stream
        let total = f.len() as u64;
        assert!(total > 2 * WINDOW, "{total}");
        let src = Arc::new(Counting(
            MemSource::new("t.bz2", f),
            std::sync::atomic::AtomicU64::new(0),
        ));
        let s = Bzip2Source::open(src.clone(), &DecompressOptions::default()).unwrap();
        let fetched = src.1.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(fetched, total, "the open pass reads each byte once");
        assert_eq!(s.info().members, 2);
        assert!(s.info().blocks > 80, "{:?}", s.info());
        let mut all = vec![0u8; s.len() as usize];
        s.read_exact_at(0, &mut all).unwrap();
        assert!(all[..data.len()] == data[..]);
        assert!(all[data.len()..] == data[..1_000_000]);
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)]
    fn parallel_scan_finds_magics_across_part_boundaries() {
        // A magic at each bit alignment around every part boundary; the
        // single-pass scan of the whole buffer is the reference.
        let mut bytes = vec![0x55u8; 1 << 20];
        let magic = BLOCK_MAGIC.to_be_bytes();
        for k in 1..16u64 {
            let at = k * 65_536 - 3 + (k % 8); // straddles a 64 KiB boundary
            let shift = (k % 8) as u32;
            // Write the magic shifted right by `shift` bits at byte `at`.
            let v = u64::from_be_bytes(magic) << 16 >> shift;
            for (i, b) in v.to_be_bytes().iter().enumerate().take(7) {
                bytes[at as usize + i] = if i == 0 {
                    (bytes[at as usize] & !(0xffu8 >> shift)) | b
                } else {
                    *b
                };
            }
        }
        let src = MemSource::new("m", bytes.clone());
        let held = Held {
            inner: &src,
            base: 0,
            data: bytes.clone(),
        };
        let reference = scan_bytes(&bytes, 0, 0);
        assert_eq!(reference.len(), 15, "{reference:?}");
        assert_eq!(scan_held(&held, 0), reference);
        let from = reference[7].bit;
        assert_eq!(scan_held(&held, from), reference[7..].to_vec());
    }

    #[test]
    fn no_block_boundary_fails_without_reading_on() {
        // A header, a block magic, then 40 MB without another magic: the
        // pass gives up after about two block lengths, not at the end.
        let mut f = b"BZh9".to_vec();
        f.extend_from_slice(&BLOCK_MAGIC.to_be_bytes()[2..]);
        f.resize(40 << 20, 0);
        let src = Arc::new(Counting(
            MemSource::new("t.bz2", f),
            std::sync::atomic::AtomicU64::new(0),
        ));
        let err = Bzip2Source::open(src.clone(), &DecompressOptions::default()).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("no block boundary"), "{err}");
        assert!(src.1.load(std::sync::atomic::Ordering::Relaxed) <= 3 * WINDOW);
    }
}
