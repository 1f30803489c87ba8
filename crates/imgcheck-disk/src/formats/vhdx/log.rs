//! VHDX log replay, in memory.
//!
//! A VHDX writer puts metadata updates (and, rarely, data) in the log
//! before writing them in place; a header with LogGuid ≠ 0 says the log may
//! hold updates the file does not have yet. Reading such a file without
//! replaying would read stale BAT entries or metadata, so the spec (§2.3.3)
//! says: replay, or do not open. imgcheck never writes to an image, so the
//! replay goes into an overlay: [`Replayed`] is a [`ByteSource`] that reads
//! the file and then lays the logged sectors over it. Everything after the
//! headers (region tables, metadata, BAT, payload) is read through it.
//!
//! Finding what to replay (spec §2.3.3): scan the log (a circular buffer of
//! LogLength bytes) at every 4 KiB step for entries that are valid: the
//! `loge` signature, this file's LogGuid, a sane length, descriptors that
//! fit, every descriptor and data sector carrying the entry's sequence
//! number, and a matching CRC-32C over the whole entry. A candidate head
//! is valid when walking from its Tail field reaches it through valid
//! entries whose sequence numbers increase by one; the active sequence is
//! the valid one with the highest head sequence number. Its entries are
//! applied in order: data descriptors write one 4 KiB sector, zero
//! descriptors write zeros, and the file is extended to LastFileOffset.
//! No valid sequence is an error: the file cannot be read safely.
//!
//! Memory and time: the log itself is read whole, bounded by
//! `Limits::max_table_bytes` before reading; the overlay holds at most the
//! log's data sectors plus one record per zero descriptor. The scan jumps
//! over valid entries and checksums at most four times the log's length
//! (damaged entries claiming huge lengths at every 4 KiB would otherwise
//! cost quadratic time); runs of consecutive entries are found in one
//! pass, so choosing the head is linear too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use imgcheck_source::{Access, ByteSource, SourceError, check_range, read_vec};

use super::{Guid, Header, MIB, checksum, stored_checksum};
use crate::error::{DiskError, corrupt, limit};
use crate::limits::Limits;
use crate::parse::Fields;

const SECTOR: u64 = 4096;
/// [`SECTOR`] as a buffer length.
const SECTOR_BYTES: usize = 4096;

/// `v` as an in-memory index. Every caller passes an offset inside a
/// buffer it holds (the log, a read buffer), so this never saturates; if
/// it did, the slice lookup it feeds would fail instead of wrapping.
fn us(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}
const S_LOG: &str = "VHDX log";

/// What a range of the overlay reads as.
#[derive(Debug, Clone)]
enum Content {
    Zero,
    /// Bytes from `data[start..]`.
    Data(Arc<Vec<u8>>, usize),
}

/// The image file with a replayed log laid over it.
#[derive(Debug)]
pub(super) struct Replayed {
    base: Arc<dyn ByteSource>,
    /// Non-overlapping ranges: start → (end, content).
    overlay: BTreeMap<u64, (u64, Content)>,
    len: u64,
}

impl Replayed {
    /// Writes `content` over `start..end`, splitting what it covers.
    fn put(&mut self, start: u64, end: u64, content: Content) {
        let hits: Vec<u64> = self
            .overlay
            .range(..end)
            .rev()
            .take_while(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s)
            .collect();
        for s in hits {
            let Some((e, c)) = self.overlay.remove(&s) else {
                continue;
            };
            if s < start {
                self.overlay.insert(s, (start, c.clone()));
            }
            if e > end {
                let tail = match c {
                    Content::Zero => Content::Zero,
                    Content::Data(d, o) => Content::Data(d, o.saturating_add(us(end - s))),
                };
                self.overlay.insert(end, (e, tail));
            }
        }
        self.overlay.insert(start, (end, content));
        self.len = self.len.max(end);
    }
}

impl ByteSource for Replayed {
    fn name(&self) -> &str {
        self.base.name()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let end = check_range(self.name(), offset, buf.len(), self.len)?;
        // The file part first; beyond the file (extended by the log) zeros.
        let base_len = self.base.len();
        let in_base = us(base_len.saturating_sub(offset)).min(buf.len());
        if in_base > 0 {
            self.base.read_exact_at(offset, &mut buf[..in_base])?;
        }
        buf[in_base..].fill(0);
        let first = self
            .overlay
            .range(..=offset)
            .next_back()
            .map_or(offset, |(s, _)| *s);
        for (&s, (e, c)) in self.overlay.range(first..end) {
            let (lo, hi) = (s.max(offset), (*e).min(end));
            if lo >= hi {
                continue;
            }
            let Some(dst) = buf.get_mut(us(lo - offset)..us(hi - offset)) else {
                continue;
            };
            match c {
                Content::Zero => dst.fill(0),
                Content::Data(d, o) => {
                    let from = o.saturating_add(us(lo - s));
                    if let Some(src) = d.get(from..from.saturating_add(dst.len())) {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
        Ok(())
    }

    fn access(&self) -> Access {
        self.base.access()
    }

    fn bytes_fetched(&self) -> u64 {
        self.base.bytes_fetched()
    }

    fn allocated_size(&self) -> Option<u64> {
        self.base.allocated_size()
    }
}

/// One valid log entry.
#[derive(Debug)]
struct Entry {
    length: u64,
    tail: u64,
    sequence: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
    /// Zero descriptors (offset, length) and data sectors (offset, 4 KiB),
    /// in descriptor order.
    ops: Vec<Op>,
}

#[derive(Debug)]
enum Op {
    Zero { offset: u64, length: u64 },
    Data { offset: u64, sector: Vec<u8> },
}

/// Why [`parse_entry`] stopped: the scan checksummed more than its budget.
const OVER_BUDGET: &str = "over budget";

/// `len` bytes of the circular log from `off`.
fn circ(log: &[u8], off: u64, len: u64) -> Option<Vec<u8>> {
    let n = log.len() as u64;
    if len > n || off >= n {
        return None;
    }
    let first = (n - off).min(len);
    let mut v = log.get(us(off)..us(off + first))?.to_vec();
    v.extend_from_slice(log.get(..us(len - first))?);
    Some(v)
}

/// The entry at `off` if it is valid, or why not.
fn parse_entry(log: &[u8], off: u64, guid: &Guid, budget: &mut u64) -> Result<Entry, String> {
    let n = log.len() as u64;
    let head = circ(log, off, SECTOR).ok_or("outside the log")?;
    if head.get(..4) != Some(b"loge") {
        return Err("no \"loge\" signature".into());
    }
    let h = Fields::new("", "VHDX log entry", off, &head);
    let length = u64::from(h.le32(8)?);
    let tail = u64::from(h.le32(12)?);
    let sequence = h.le64(16)?;
    let count = u64::from(h.le32(24)?);
    if h.guid(32)? != *guid {
        return Err("another log GUID".into());
    }
    if length < SECTOR || length % SECTOR != 0 || length > n {
        return Err(format!("entry length {length}"));
    }
    if tail % SECTOR != 0 || tail >= n {
        return Err(format!("tail {tail}"));
    }
    // Header (64 bytes) + 32 bytes per descriptor, rounded up to sectors.
    let desc_sectors = (64 + count * 32).div_ceil(SECTOR);
    if desc_sectors * SECTOR > length {
        return Err(format!("{count} descriptors do not fit in {length} bytes"));
    }
    if *budget < length {
        return Err(OVER_BUDGET.into());
    }
    *budget -= length;
    let whole = circ(log, off, length).ok_or("entry does not fit")?;
    if checksum(&whole) != stored_checksum(&whole) {
        return Err("CRC-32C mismatch".into());
    }
    let w = Fields::new("", "VHDX log entry", off, &whole);
    let mut ops = Vec::new();
    let mut data_sector = desc_sectors;
    for i in 0..us(count) {
        let d = 64 + i * 32;
        let sig = whole.get(d..d + 4).unwrap_or(&[]);
        let offset = w.le64(d + 16)?;
        if w.le64(d + 24)? != sequence {
            return Err(format!("descriptor {i} has another sequence number"));
        }
        if !offset.is_multiple_of(SECTOR) {
            return Err(format!(
                "descriptor {i} file offset {offset} is not 4 KiB aligned"
            ));
        }
        if sig == b"zero" {
            let zl = w.le64(d + 8)?;
            if !zl.is_multiple_of(SECTOR) || offset.checked_add(zl).is_none() {
                return Err(format!("zero descriptor {i} length {zl}"));
            }
            ops.push(Op::Zero { offset, length: zl });
        } else if sig == b"desc" {
            let at = us(data_sector * SECTOR);
            let s = whole
                .get(at..at.saturating_add(SECTOR_BYTES))
                .ok_or_else(|| format!("data descriptor {i} has no data sector"))?;
            let sf = Fields::new("", "VHDX log entry", off, s);
            if s.get(..4) != Some(b"data")
                || u64::from(sf.le32(4)?) != sequence >> 32
                || u64::from(sf.le32(4092)?) != sequence & 0xFFFF_FFFF
            {
                return Err(format!("data sector of descriptor {i} is not valid"));
            }
            offset
                .checked_add(SECTOR)
                .ok_or_else(|| format!("descriptor {i} offset {offset}"))?;
            // The sector is: LeadingBytes, the 4084 data bytes, TrailingBytes.
            let mut sector = Vec::with_capacity(SECTOR_BYTES);
            sector.extend_from_slice(whole.get(d + 8..d + 16).unwrap_or(&[0; 8]));
            sector.extend_from_slice(s.get(8..4092).unwrap_or(&[]));
            sector.extend_from_slice(whole.get(d + 4..d + 8).unwrap_or(&[0; 4]));
            ops.push(Op::Data { offset, sector });
            data_sector += 1;
        } else {
            return Err(format!("descriptor {i} has an unknown signature"));
        }
    }
    if data_sector * SECTOR != length {
        return Err(format!(
            "{} data sectors do not fill the {length}-byte entry",
            data_sector - desc_sectors
        ));
    }
    Ok(Entry {
        length,
        tail,
        sequence,
        flushed_file_offset: h.le64(48)?,
        last_file_offset: h.le64(56)?,
        ops,
    })
}

/// Replays the log named by `h` over `file`.
pub(super) fn replay(
    file: Arc<dyn ByteSource>,
    h: &Header,
    limits: &Limits,
) -> Result<Arc<dyn ByteSource>, DiskError> {
    let name = file.name().to_owned();
    let at = h.log_offset;
    let len = u64::from(h.log_length);
    if len == 0 || !len.is_multiple_of(MIB) || at < MIB || !at.is_multiple_of(MIB) {
        return Err(corrupt(
            &name,
            S_LOG,
            at,
            format!(
                "the log needs replay but its location ({len} bytes at {at}) is not a MiB-aligned range after the header section"
            ),
        ));
    }
    if len > limits.max_table_bytes {
        return Err(limit(
            &name,
            S_LOG,
            at,
            "log size (bytes)",
            len,
            limits.max_table_bytes,
        ));
    }
    let log = read_vec(file.as_ref(), at, len, limits.max_table_bytes)?;
    let (entries, first_error) = scan(&log, h, &name, at)?;
    let Some(chain) = best_sequence(&entries, len) else {
        return Err(corrupt(
            &name,
            S_LOG,
            at,
            format!(
                "the header says the log must be replayed, but it holds no valid entry sequence ({}); refusing to read possibly stale data",
                first_error.unwrap_or_else(|| "no entry with this file's log GUID".into())
            ),
        ));
    };
    apply(file, entries, &chain, &name, at)
}

/// Every valid entry of the log by log offset, and the first reason an
/// entry-looking sector was not valid.
fn scan(
    log: &[u8],
    h: &Header,
    name: &str,
    at: u64,
) -> Result<(HashMap<u64, Entry>, Option<String>), DiskError> {
    let len = log.len() as u64;
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    let mut first_error = None;
    // Checking an entry costs its length (copy and CRC). A hostile log can
    // claim a full-length entry at every 4 KiB step, which would cost
    // length² / 4 KiB, so the bytes checked are capped at a few times the
    // log: a real log checks each byte about once, because the scan jumps
    // over every valid entry.
    let mut budget = len.saturating_mul(4);
    let mut off = 0;
    while off < len {
        if log.get(us(off)..us(off).saturating_add(4)) != Some(b"loge") {
            off += SECTOR;
            continue;
        }
        match parse_entry(log, off, &h.log_guid, &mut budget) {
            Ok(e) => {
                let next = off + e.length;
                entries.insert(off, e);
                off = next;
            }
            Err(why) if why == OVER_BUDGET => {
                return Err(corrupt(
                    name,
                    S_LOG,
                    at + off,
                    "the log needs replay, but too many damaged entries claim large sizes to check them all; refusing to read possibly stale data",
                ));
            }
            Err(why) => {
                first_error.get_or_insert(format!("entry at log offset {off}: {why}"));
                off += SECTOR;
            }
        }
    }
    Ok((entries, first_error))
}

/// The chain of entry offsets to replay: the valid sequence with the
/// highest sequence number, or `None`.
fn best_sequence(entries: &HashMap<u64, Entry>, len: u64) -> Option<Vec<u64>> {
    // Runs: entries that follow each other in the log with sequence
    // numbers increasing by one. A sequence from tail T to head H is valid
    // exactly when T is in H's run at or before H, so one pass over the
    // runs decides every head (a run cannot close on itself: its numbers
    // only grow).
    let follows = |off: u64| -> Option<u64> {
        let e = entries.get(&off)?;
        let next = (off + e.length) % len;
        let n = entries.get(&next)?;
        (e.sequence.checked_add(1) == Some(n.sequence)).then_some(next)
    };
    let has_pred: std::collections::HashSet<u64> =
        entries.keys().filter_map(|&o| follows(o)).collect();
    let mut best: Option<(u64, Vec<u64>)> = None;
    for &start in entries.keys().filter(|o| !has_pred.contains(o)) {
        let mut run = vec![start];
        let mut cur = start;
        while let Some(next) = follows(cur) {
            if run.len() > entries.len() {
                break;
            }
            run.push(next);
            cur = next;
        }
        let index: HashMap<u64, usize> = run.iter().enumerate().map(|(i, &o)| (o, i)).collect();
        for (i, off) in run.iter().enumerate() {
            let Some(head) = entries.get(off) else {
                continue;
            };
            if best.as_ref().is_some_and(|(s, _)| *s >= head.sequence) {
                continue;
            }
            if let Some(&t) = index.get(&head.tail).filter(|&&t| t <= i) {
                best = Some((head.sequence, run.get(t..=i).unwrap_or(&[]).to_vec()));
            }
        }
    }
    best.map(|(_, chain)| chain)
}

/// Applies the entries of `chain`, in order, as an overlay over `file`.
fn apply(
    file: Arc<dyn ByteSource>,
    mut entries: HashMap<u64, Entry>,
    chain: &[u64],
    name: &str,
    at: u64,
) -> Result<Arc<dyn ByteSource>, DiskError> {
    let base_len = file.len();
    let mut r = Replayed {
        base: file,
        overlay: BTreeMap::new(),
        len: base_len,
    };
    let mut last_file_offset = 0;
    for off in chain {
        let Some(e) = entries.remove(off) else {
            continue;
        };
        if e.flushed_file_offset > base_len {
            return Err(corrupt(
                name,
                S_LOG,
                at + off,
                format!(
                    "log entry {} says the file held {} bytes, but it has {base_len}: the file was truncated",
                    e.sequence, e.flushed_file_offset
                ),
            ));
        }
        for op in e.ops {
            match op {
                Op::Zero { offset, length } => {
                    if length > 0 {
                        r.put(offset, offset + length, Content::Zero);
                    }
                }
                Op::Data { offset, sector } => {
                    r.put(offset, offset + SECTOR, Content::Data(Arc::new(sector), 0));
                }
            }
        }
        last_file_offset = e.last_file_offset;
    }
    r.len = r.len.max(last_file_offset);
    Ok(Arc::new(r))
}
