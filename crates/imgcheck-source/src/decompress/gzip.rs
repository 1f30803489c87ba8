//! Random access into gzip files (single- and multi-member, as gzip, pigz and
//! `cat a.gz b.gz` write), by the zran method.
//!
//! # How
//! The open pass inflates the whole file once, verifies every member's
//! CRC-32 and ISIZE (the true size is counted; ISIZE is only compared modulo
//! 2^32 because it wraps at 4 GiB), and every `spacing` bytes of output stops
//! at the next deflate block boundary to record a restart point: the
//! compressed *bit* offset there plus the last 32 KiB of output (the LZ77
//! window). A random read resets a raw inflater, primes it with the partial
//! byte's bits, loads the window as a dictionary, and decodes forward from
//! the nearest point; decoded 256 KiB chunks go into a small LRU, and a few
//! live decoders are kept so that sequential reads continue where the last
//! one stopped instead of restarting.
//!
//! The index is bounded: when the windows would pass
//! [`DecompressOptions::index_budget`], every other point is dropped and the
//! spacing doubles (so a 100 GiB stream gets a coarser index, not a bigger
//! one).
//!
//! # Why hand-written on zlib-rs
//! * flate2 (even on its zlib-rs backend) exposes neither `Z_BLOCK`,
//!   `data_type` nor `inflatePrime`, which restart points need; the zlib C
//!   API (`libz-rs-sys`, same engine as flate2's fastest backend) has them.
//! * zlib-rs inflates at ~1.2 GiB/s single-threaded on this machine vs
//!   ~390 MiB/s for miniz_oxide (benches/benches/decompress.rs), so
//!   `indexed_deflate` (zran on miniz_oxide, index kept on disk) would cost
//!   3x at open.
//! * `rapidgzip-core` (~20k lines, parallel speculative inflate + indexed
//!   reader) was not adopted and not measured: with the index pass already
//!   ~4x faster than `gzip -dc` on one core, its parallelism would buy
//!   little on a 2-core target, and we need our own limits (index memory,
//!   the bomb cut-off, CRC errors naming the member and offset) exactly
//!   where its API hides them. This file is ~700 lines.
//!

use std::sync::{Arc, Mutex};

use super::zstream::RawInflate;
use super::{ChunkCache, DecompressOptions, Progress, StreamInfo, corrupt, limit_error, report};
use crate::{Access, ByteSource, SourceError, check_range};

/// The stream decoded differently than during the open pass: the file
/// changed under us. Not evidence of damage, so an I/O error.
fn changed(name: &str, at: u64, what: String) -> SourceError {
    SourceError::new(
        crate::ErrorKind::Io,
        name,
        format!("{what} at {at} (file changed since open?)"),
    )
    .at("gzip stream", at)
}

/// zlib could not be set up: not about the file.
fn internal(name: &str, e: &dyn std::fmt::Display) -> SourceError {
    SourceError::new(crate::ErrorKind::Io, name, format!("decoder: {e}"))
}

/// The LZ77 window of deflate.
const WINDOW: usize = 32 * 1024;
/// Input read from the file at a time.
const IN_CHUNK: usize = 1 << 20;
/// Output buffer of the open pass.
const OUT_CHUNK: usize = 1 << 20;
/// Unit of the decoded-chunk cache.
const CACHE_CHUNK: u64 = 256 * 1024;
/// Starting restart spacing (doubles when the index is full).
const FIRST_SPACING: u64 = 1 << 20;
/// Longest FNAME / FCOMMENT accepted in a member header.
const MAX_HEADER_STRING: usize = 64 * 1024;
/// Live decoders kept for sequential reads.
const MAX_CURSORS: usize = 4;
/// Progress is reported every this many input bytes.
const PROGRESS_EVERY: u64 = 8 << 20;

/// A restart point.
#[derive(Debug)]
struct Point {
    /// Uncompressed offset.
    out: u64,
    /// Compressed bit offset where decoding resumes (for a member start:
    /// the byte offset of the header × 8).
    bit: u64,
    /// Index of the member (for messages).
    member: u64,
    /// Compressed offset of that member's header (for messages).
    member_start: u64,
    /// The last ≤ 32 KiB of this member's output; `None`: a member start.
    window: Option<Box<[u8]>>,
}

/// Where the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a member header (or the end of the file).
    Header,
    /// Inside a deflate stream.
    Body,
    /// After the last member.
    Done,
}

/// One gzip decoder positioned somewhere in the file, crossing member
/// boundaries. Used by the open pass (with CRC checks) and by reads.
#[derive(Debug)]
struct Decoder {
    z: RawInflate,
    inbuf: Vec<u8>,
    /// File offset of `inbuf[0]`.
    in_file: u64,
    in_pos: usize,
    in_end: usize,
    /// Uncompressed offset of the next output byte.
    out: u64,
    state: State,
    member: u64,
    /// Compressed offset of the current member's header.
    member_start: u64,
    /// Output of the current member so far.
    member_out: u64,
    /// CRC of the current member (open pass only).
    crc: Option<crc32fast::Hasher>,
}

/// What one [`Decoder::step`] did.
struct StepOut {
    produced: usize,
    /// Stopped at a deflate block boundary at this compressed bit offset.
    boundary: Option<u64>,
    /// A new member header was just parsed.
    member_started: bool,
}

impl Decoder {
    fn new(verify: bool) -> Result<Self, String> {
        Ok(Self {
            z: RawInflate::new()?,
            inbuf: vec![0; IN_CHUNK],
            in_file: 0,
            in_pos: 0,
            in_end: 0,
            out: 0,
            state: State::Header,
            member: 0,
            member_start: 0,
            member_out: 0,
            crc: verify.then(crc32fast::Hasher::new),
        })
    }

    /// Compressed offset of the next unread byte.
    fn file_pos(&self) -> u64 {
        self.in_file + self.in_pos as u64
    }

    /// Position the decoder at `point`.
    fn seek(&mut self, src: &dyn ByteSource, p: &Point) -> Result<(), SourceError> {
        let name = src.name();
        self.out = p.out;
        self.member = p.member;
        self.in_pos = 0;
        self.in_end = 0;
        match &p.window {
            None => {
                self.in_file = p.bit / 8;
                self.state = State::Header;
                self.member_start = self.in_file;
                self.member_out = 0;
            }
            Some(win) => {
                let byte = p.bit / 8;
                let k = (p.bit % 8) as u32;
                self.z
                    .reset()
                    .map_err(|e| corrupt(name, "gzip restart point", byte, e))?;
                if k == 0 {
                    self.in_file = byte;
                } else {
                    let mut b = [0u8; 1];
                    src.read_exact_at(byte, &mut b)?;
                    let bits = 8 - k;
                    self.z
                        .prime(bits as i32, i32::from(b[0] >> k))
                        .map_err(|e| corrupt(name, "gzip restart point", byte, e))?;
                    self.in_file = byte + 1;
                }
                self.z
                    .set_dictionary(win)
                    .map_err(|e| corrupt(name, "gzip restart point", byte, e))?;
                self.state = State::Body;
                self.member_start = p.member_start;
                self.member_out = win.len() as u64;
            }
        }
        Ok(())
    }

    /// Makes at least `n` (≤ IN_CHUNK) unread bytes available; false at EOF.
    fn need(&mut self, src: &dyn ByteSource, n: usize) -> Result<bool, SourceError> {
        if self.in_end - self.in_pos >= n {
            return Ok(true);
        }
        // Compact, then fill from the file.
        self.inbuf.copy_within(self.in_pos..self.in_end, 0);
        self.in_file += self.in_pos as u64;
        self.in_end -= self.in_pos;
        self.in_pos = 0;
        let file_next = self.in_file + self.in_end as u64;
        let avail = src.len().saturating_sub(file_next);
        let want = ((IN_CHUNK - self.in_end) as u64).min(avail) as usize;
        if want > 0 {
            src.read_exact_at(file_next, &mut self.inbuf[self.in_end..self.in_end + want])?;
            self.in_end += want;
        }
        Ok(self.in_end - self.in_pos >= n)
    }

    fn member_label(&self) -> String {
        format!(
            "gzip member {} (header at offset {})",
            self.member, self.member_start
        )
    }

    /// Zero padding after the last member (tape/dd blocking) is what gzip
    /// itself accepts; anything else after a member is not. Reads to the
    /// end of the file.
    fn skip_padding(&mut self, src: &dyn ByteSource) -> Result<(), SourceError> {
        loop {
            let chunk = &self.inbuf[self.in_pos..self.in_end];
            if let Some(i) = chunk.iter().position(|&b| b != 0) {
                return Err(corrupt(
                    src.name(),
                    format!("data after gzip member {}", self.member - 1),
                    self.file_pos() + i as u64,
                    "non-zero bytes after zero padding: not a gzip member",
                ));
            }
            self.in_pos = self.in_end;
            if !self.need(src, 1)? {
                self.state = State::Done;
                return Ok(());
            }
        }
    }

    /// Parses a member header at the current position, or finds the end of
    /// the file (EOF or zero padding).
    fn header(&mut self, src: &dyn ByteSource) -> Result<bool, SourceError> {
        let name = src.name();
        let at = self.file_pos();
        if !self.need(src, 1)? {
            self.state = State::Done;
            return Ok(false);
        }
        if self.inbuf[self.in_pos] == 0 && self.member > 0 {
            self.skip_padding(src)?;
            return Ok(false);
        }
        self.member_start = at;
        let label = format!("gzip member {} header", self.member);
        let trunc = |what: &str| corrupt(name, label.clone(), at, format!("truncated in {what}"));
        if !self.need(src, 10)? {
            return Err(trunc("the fixed header"));
        }
        let h = &self.inbuf[self.in_pos..self.in_pos + 10];
        if h[0] != 0x1f || h[1] != 0x8b {
            return Err(corrupt(
                name,
                label,
                at,
                if self.member == 0 {
                    "not a gzip header".to_owned()
                } else {
                    format!(
                        "trailing data after member {} is not a gzip member (magic {:02x} {:02x})",
                        self.member - 1,
                        h[0],
                        h[1]
                    )
                },
            ));
        }
        if h[2] != 8 {
            return Err(corrupt(
                name,
                label,
                at,
                format!("compression method {} is not deflate", h[2]),
            ));
        }
        let flg = h[3];
        if flg & 0xe0 != 0 {
            return Err(corrupt(
                name,
                label,
                at,
                format!("reserved flag bits set ({flg:#04x})"),
            ));
        }
        self.in_pos += 10;
        if flg & 0x04 != 0 {
            if !self.need(src, 2)? {
                return Err(trunc("FEXTRA"));
            }
            let xlen = usize::from(u16::from_le_bytes([
                self.inbuf[self.in_pos],
                self.inbuf[self.in_pos + 1],
            ]));
            if !self.need(src, 2 + xlen)? {
                return Err(trunc("FEXTRA"));
            }
            self.in_pos += 2 + xlen;
        }
        for (bit, what) in [(0x08u8, "FNAME"), (0x10, "FCOMMENT")] {
            if flg & bit == 0 {
                continue;
            }
            let mut scanned = 0;
            loop {
                let chunk = &self.inbuf[self.in_pos..self.in_end];
                if let Some(i) = chunk.iter().position(|&b| b == 0) {
                    self.in_pos += i + 1;
                    break;
                }
                scanned += chunk.len();
                self.in_pos = self.in_end;
                if scanned > MAX_HEADER_STRING {
                    return Err(corrupt(
                        name,
                        label,
                        at,
                        format!("{what} longer than {MAX_HEADER_STRING} bytes"),
                    ));
                }
                if !self.need(src, 1)? {
                    return Err(trunc(what));
                }
            }
        }
        if flg & 0x02 != 0 {
            if !self.need(src, 2)? {
                return Err(trunc("FHCRC"));
            }
            self.in_pos += 2;
        }
        self.z
            .reset()
            .map_err(|e| corrupt(name, label.clone(), at, e))?;
        self.member_out = 0;
        if self.crc.is_some() {
            self.crc = Some(crc32fast::Hasher::new());
        }
        self.state = State::Body;
        Ok(true)
    }

    /// Reads and (when verifying) checks the 8-byte trailer.
    fn trailer(&mut self, src: &dyn ByteSource) -> Result<(), SourceError> {
        let name = src.name();
        let at = self.file_pos();
        if !self.need(src, 8)? {
            return Err(corrupt(
                name,
                self.member_label(),
                at,
                "truncated: the file ends inside the 8-byte trailer (CRC32, ISIZE)",
            ));
        }
        let t = &self.inbuf[self.in_pos..self.in_pos + 8];
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if let Some(h) = self.crc.take() {
            let got = h.finalize();
            if got != crc {
                return Err(corrupt(
                    name,
                    self.member_label(),
                    at,
                    format!("CRC32 mismatch: trailer says {crc:08x}, data has {got:08x}"),
                ));
            }
            // ISIZE is the size modulo 2^32.
            let size_mod = (self.member_out & 0xffff_ffff) as u32;
            if size_mod != isize {
                return Err(corrupt(
                    name,
                    self.member_label(),
                    at,
                    format!(
                        "ISIZE mismatch: trailer says {isize} (mod 2^32), member decoded to {} bytes",
                        self.member_out
                    ),
                ));
            }
            self.crc = Some(crc32fast::Hasher::new());
        }
        self.in_pos += 8;
        self.member += 1;
        self.state = State::Header;
        Ok(())
    }

    /// One unit of work: a header, a trailer, or one inflate call into `out`.
    fn step(
        &mut self,
        src: &dyn ByteSource,
        out: &mut [u8],
        want_boundary: bool,
    ) -> Result<StepOut, SourceError> {
        let mut res = StepOut {
            produced: 0,
            boundary: None,
            member_started: false,
        };
        match self.state {
            State::Done => return Ok(res),
            State::Header => {
                res.member_started = self.header(src)?;
                return Ok(res);
            }
            State::Body => {}
        }
        if self.in_pos == self.in_end && !self.need(src, 1)? {
            return Err(corrupt(
                src.name(),
                self.member_label(),
                self.file_pos(),
                "truncated: the file ends inside the deflate stream",
            ));
        }
        let st = self
            .z
            .inflate(&self.inbuf[self.in_pos..self.in_end], out, want_boundary)
            .map_err(|e| {
                corrupt(
                    src.name(),
                    self.member_label(),
                    self.file_pos(),
                    format!("bad deflate data near this compressed offset: {e}"),
                )
            })?;
        self.in_pos += st.consumed;
        self.out += st.produced as u64;
        self.member_out += st.produced as u64;
        if let Some(h) = &mut self.crc {
            h.update(&out[..st.produced]);
        }
        res.produced = st.produced;
        if st.stream_end {
            self.trailer(src)?;
        } else if want_boundary && st.data_type & 128 != 0 && st.data_type & 64 == 0 {
            let unused = (st.data_type & 63) as u64;
            res.boundary = (self.file_pos() * 8).checked_sub(unused);
        } else if st.consumed == 0 && st.produced == 0 && !out.is_empty() {
            // No progress with input available and room for output: zlib
            // wants more input than a whole buffer; cannot happen for valid
            // deflate, so treat it as corrupt rather than spin.
            if !self.need(src, self.in_end - self.in_pos + 1)? {
                return Err(corrupt(
                    src.name(),
                    self.member_label(),
                    self.file_pos(),
                    "truncated: the file ends inside the deflate stream",
                ));
            }
        }
        Ok(res)
    }

    /// Decodes and discards output until `self.out == target`.
    fn skip_to(
        &mut self,
        src: &dyn ByteSource,
        target: u64,
        scratch: &mut [u8],
    ) -> Result<(), SourceError> {
        while self.out < target {
            let n = (target - self.out).min(scratch.len() as u64) as usize;
            let before = self.out;
            let st = self.step(src, &mut scratch[..n], false)?;
            if self.state == State::Done && self.out == before && st.produced == 0 {
                return Err(changed(
                    src.name(),
                    self.out,
                    format!("ended before offset {target}"),
                ));
            }
        }
        Ok(())
    }

    /// Fills `out` completely.
    fn fill(&mut self, src: &dyn ByteSource, out: &mut [u8]) -> Result<(), SourceError> {
        let mut done = 0;
        while done < out.len() {
            let st = self.step(src, &mut out[done..], false)?;
            done += st.produced;
            if self.state == State::Done && done < out.len() {
                return Err(changed(src.name(), self.out, "ended early".into()));
            }
        }
        Ok(())
    }
}

/// A gzip file, read as its uncompressed contents.
#[derive(Debug)]
pub struct GzipSource {
    name: String,
    inner: Arc<dyn ByteSource>,
    len: u64,
    points: Vec<Point>,
    info: StreamInfo,
    cache: Mutex<ChunkCache>,
    cursors: Mutex<Vec<Decoder>>,
}

impl GzipSource {
    /// Opens `inner` (a gzip file): one full decoding pass that verifies
    /// every member and builds the restart index.
    pub fn open(inner: Arc<dyn ByteSource>, opts: &DecompressOptions) -> Result<Self, SourceError> {
        let src = inner.as_ref();
        let name = src.name().to_owned();
        let compressed_total = src.len();
        let max_points = (opts.index_budget / (WINDOW + 64)).max(4);
        let mut spacing = FIRST_SPACING;
        let mut points: Vec<Point> = vec![Point {
            out: 0,
            bit: 0,
            member: 0,
            member_start: 0,
            window: None,
        }];
        let mut dec = Decoder::new(true).map_err(|e| internal(&name, &e))?;
        // Output buffer: [history (≤ WINDOW) | new output].
        let mut obuf = vec![0u8; WINDOW + OUT_CHUNK];
        let mut filled = 0usize;
        let mut next_progress = PROGRESS_EVERY;
        loop {
            if dec.state == State::Done {
                break;
            }
            if obuf.len() - filled < 64 * 1024 {
                obuf.copy_within(filled - WINDOW..filled, 0);
                filled = WINDOW;
            }
            let last = points.last().map_or(0, |p| p.out);
            let want = dec.state == State::Body && dec.out - last >= spacing;
            let st = dec.step(src, &mut obuf[filled..], want)?;
            filled += st.produced;
            if let Some(limit) = opts.max_uncompressed
                && dec.out > limit
            {
                return Err(limit_error(
                    &name,
                    "gzip stream",
                    limit,
                    dec.out,
                    dec.file_pos(),
                ));
            }
            let point = if let Some(bit) = st.boundary {
                let wlen = (dec.member_out.min(WINDOW as u64)) as usize;
                Some(Point {
                    out: dec.out,
                    bit,
                    member: dec.member,
                    member_start: dec.member_start,
                    window: Some(obuf[filled - wlen..filled].into()),
                })
            } else if st.member_started && dec.out - last >= spacing {
                Some(Point {
                    out: dec.out,
                    bit: dec.member_start * 8,
                    member: dec.member,
                    member_start: dec.member_start,
                    window: None,
                })
            } else {
                None
            };
            if let Some(p) = point {
                points.push(p);
                if points.len() > max_points {
                    // Halve the index: keep every other point.
                    let mut i = 0usize;
                    points.retain(|_| {
                        i += 1;
                        i % 2 == 1
                    });
                    spacing = spacing.saturating_mul(2);
                }
            }
            if dec.file_pos() >= next_progress {
                next_progress = dec.file_pos() + PROGRESS_EVERY;
                report(
                    opts,
                    Progress {
                        compressed_done: dec.file_pos(),
                        compressed_total,
                        uncompressed: dec.out,
                        decoded: dec.out,
                    },
                );
            }
        }
        report(
            opts,
            Progress {
                compressed_done: compressed_total,
                compressed_total,
                uncompressed: dec.out,
                decoded: dec.out,
            },
        );
        let index_bytes = points
            .iter()
            .map(|p| std::mem::size_of::<Point>() + p.window.as_ref().map_or(0, |w| w.len()))
            .sum();
        let info = StreamInfo {
            container: "gzip",
            compressed_size: compressed_total,
            uncompressed_size: dec.out,
            members: dec.member,
            blocks: 0,
            blocks_decoded: 0,
            index_points: points.len(),
            index_bytes,
            spacing,
            complete: true,
        };
        dec.crc = None;
        Ok(Self {
            name: format!("{name} (gunzipped)"),
            len: dec.out,
            points,
            info,
            cache: Mutex::new(ChunkCache::new(opts.cache_budget)),
            cursors: Mutex::new(Vec::new()),
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

    /// Decodes cache chunk `k`.
    fn decode_chunk(&self, k: u64) -> Result<Arc<[u8]>, SourceError> {
        let start = k * CACHE_CHUNK;
        let end = (start + CACHE_CHUNK).min(self.len);
        let src = self.inner.as_ref();
        // The nearest restart point at or before `start`.
        let pi = self
            .points
            .partition_point(|p| p.out <= start)
            .saturating_sub(1);
        let point = &self.points[pi];
        // A live decoder between that point and `start` is at least as good.
        let mut dec = {
            let mut cur = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
            let best = cur
                .iter()
                .enumerate()
                .filter(|(_, d)| d.out <= start && d.out >= point.out)
                .max_by_key(|(_, d)| d.out)
                .map(|(i, _)| i);
            best.map(|i| cur.swap_remove(i))
        };
        if dec.is_none() {
            let mut d = Decoder::new(false).map_err(|e| internal(&self.name, &e))?;
            d.seek(src, point)?;
            dec = Some(d);
        }
        let Some(mut dec) = dec else {
            return Err(internal(&self.name, &"no decoder"));
        };
        let mut data = vec![0u8; (end - start) as usize];
        if dec.out < start {
            let mut scratch = vec![0u8; CACHE_CHUNK as usize];
            dec.skip_to(src, start, &mut scratch)?;
        }
        dec.fill(src, &mut data)?;
        let mut cur = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        if cur.len() >= MAX_CURSORS {
            cur.remove(0);
        }
        cur.push(dec);
        Ok(data.into())
    }
}

impl ByteSource for GzipSource {
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
            let k = pos / CACHE_CHUNK;
            let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(k);
            let chunk = match cached {
                Some(c) => c,
                None => {
                    let c = self.decode_chunk(k)?;
                    self.cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .put(k, c.clone());
                    c
                }
            };
            let within = (pos - k * CACHE_CHUNK) as usize;
            let n = (chunk.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&chunk[within..within + n]);
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

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        // Build with the system gzip-compatible encoder from zlib-rs via
        // flate2 is not a dependency here; use a stored-block writer.
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        let _ = level;
        let mut chunks = data.chunks(65535).peekable();
        if data.is_empty() {
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            out.push(u8::from(last));
            let n = c.len() as u16;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(c);
        }
        out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn open(bytes: Vec<u8>, opts: &DecompressOptions) -> Result<GzipSource, SourceError> {
        GzipSource::open(Arc::new(MemSource::new("t.gz", bytes)), opts)
    }

    #[test]
    fn stored_members_concatenated() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let mut f = gz(&a, 0);
        f.extend(gz(&b, 0));
        let s = open(f, &DecompressOptions::default()).unwrap();
        assert_eq!(s.len(), 400_000);
        assert_eq!(s.info().members, 2);
        let mut buf = vec![0u8; 1000];
        s.read_exact_at(299_500, &mut buf).unwrap();
        assert_eq!(&buf[..500], &a[299_500..]);
        assert_eq!(&buf[500..], &b[..500]);
    }

    #[test]
    fn bad_crc_names_member() {
        let mut f = gz(b"hello world", 0);
        let n = f.len();
        f[n - 8] ^= 1;
        let err = open(f, &DecompressOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gzip member 0") && msg.contains("CRC32"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_is_an_error() {
        let f = gz(&[7u8; 5000], 0);
        for cut in [5, 12, 100, f.len() - 3] {
            let err = open(f[..cut].to_vec(), &DecompressOptions::default()).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{cut}: {err}");
        }
    }

    #[test]
    fn trailing_zeros_ok_garbage_not() {
        let mut f = gz(b"abc", 0);
        f.extend_from_slice(&[0; 100]);
        assert_eq!(
            open(f.clone(), &DecompressOptions::default())
                .unwrap()
                .len(),
            3
        );
        f.push(1);
        assert!(open(f, &DecompressOptions::default()).is_err());
    }

    #[test]
    fn limit_stops_early() {
        let f = gz(&[0u8; 200_000], 0);
        let opts = DecompressOptions {
            max_uncompressed: Some(100_000),
            ..Default::default()
        };
        let err = open(f, &opts).unwrap_err();
        assert!(
            matches!(&err.kind, crate::ErrorKind::LimitExceeded(l) if l.limit == 100_000),
            "{err}"
        );
    }
}
