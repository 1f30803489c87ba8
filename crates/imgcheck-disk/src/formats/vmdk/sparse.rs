//! One hosted-sparse (KDMV) extent: grain directory, grain tables, grains.
//!
//! Used for monolithicSparse and streamOptimized files (the image itself)
//! and for the SPARSE extents of twoGbMaxExtentSparse descriptors (a sibling
//! file). The extent answers mappings relative to its own start; `mod.rs`
//! places it in the disk.
//!
//! What is kept in memory: the grain directory (bounded by
//! `Limits::max_table_bytes`, checked before it is read), up to
//! `Limits::table_cache_entries` grain tables (each ≤ 2 KiB: at most 512
//! entries), and a few decoded compressed grains (each ≤ the table limit,
//! see `header.rs`).
//!
//! Grain directory choice: the primary GD (`gdOffset`) is used, as qemu
//! does. If it is unusable (offset 0, outside the file, or naming grain
//! tables outside the file) and the header has a redundant GD (`FLAG_RGD`,
//! `rgdOffset`) that is usable, the redundant one is read instead; the
//! redundant GD points at its own copy of every grain table.

use std::sync::{Arc, Mutex};

use crate::cache::Lru;

use flate2::{Decompress, FlushDecompress, Status};
use imgcheck_source::{ByteSource, read_vec};

use super::header::{FLAG_RGD, GD_AT_END, Header, RawHeader, SECTOR, read_footer};
use crate::disk::{MapKind, Mapping};
use crate::error::{DiskError, corrupt};
use crate::limits::Limits;
use crate::parse::Regions;

/// How many decoded compressed grains are kept (partial-grain reads of a
/// streamOptimized image would otherwise inflate the same grain again).
const GRAIN_CACHE_ENTRIES: usize = 8;
/// Larger decoded grains are not cached (so the cache stays ≤ 16 MiB);
/// whole-grain reads never need the cache anyway.
const MAX_CACHED_GRAIN: u64 = 2 << 20;

/// State shared by every sparse extent of one image, so that a descriptor
/// listing thousands of extents costs the same bounded memory as one
/// extent: one grain-table cache, one decoded-grain cache, and one budget
/// for the grain directories of all extents together.
#[derive(Debug)]
pub struct Shared {
    gt: Mutex<Lru<Key, Arc<[u32]>>>,
    grains: Mutex<Lru<Key, Arc<Vec<u8>>>>,
    gd_budget: Mutex<u64>,
}

impl Shared {
    /// Caches sized by `limits`.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            gt: Mutex::new(Lru::new(limits.table_cache_entries)),
            grains: Mutex::new(Lru::new(GRAIN_CACHE_ENTRIES)),
            gd_budget: Mutex::new(limits.max_table_bytes),
        })
    }
}

/// Cache key: host file number and table or grain number.
type Key = (usize, u64);

/// What opening a KDMV file found.
#[derive(Debug)]
pub enum Opened {
    /// A sparse extent, with its embedded descriptor text if it has one.
    Sparse(Box<SparseExtent>, Option<(Vec<u8>, u64)>),
    /// `capacity == 0` with a descriptor: the file is only a container for
    /// a descriptor that lists other extents (qemu reads these too). The
    /// text and its offset.
    Descriptor(Vec<u8>, u64),
}

/// A grain table and an index into it.
type GtSlot = (Arc<[u32]>, usize);

/// What one grain-table entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grain {
    Unallocated,
    Zero,
    /// Grain (or grain marker, for compressed extents) at this sector.
    At(u64),
}

/// One opened KDMV extent.
#[derive(Debug)]
pub struct SparseExtent {
    /// Host file index of `src` in the image.
    file: usize,
    src: Arc<dyn ByteSource>,
    h: Header,
    /// First guest sector of this extent in the whole disk (grain markers
    /// may carry either extent- or disk-relative LBAs).
    base_sector: u64,
    gd: Vec<u32>,
    /// Which directory `gd` came from, for messages.
    gd_offset: u64,
    gt_bytes: u64,
    shared: Arc<Shared>,
}

/// Opens the KDMV file `src` (host file number `file`, starting at guest
/// sector `base_sector`). `allow_descriptor` is false for extents listed by
/// a descriptor, so a descriptor-only KDMV cannot nest another descriptor.
pub fn open(
    src: Arc<dyn ByteSource>,
    file: usize,
    base_sector: u64,
    limits: &Limits,
    allow_descriptor: bool,
    shared: &Arc<Shared>,
) -> Result<Opened, DiskError> {
    let name = src.name().to_owned();
    let len = src.len();
    let mut raw = RawHeader::read(src.as_ref(), 0)?;
    let mut raw_at = 0;
    if raw.capacity == 0 && raw.desc_offset != 0 {
        if !allow_descriptor {
            return Err(corrupt(
                &name,
                "VMDK sparse header",
                0,
                "extent has capacity 0 and a descriptor of its own (nested descriptors are not read)",
            ));
        }
        return Ok(Opened::Descriptor(
            read_descriptor(src.as_ref(), &raw, limits)?,
            raw.desc_offset.saturating_mul(SECTOR),
        ));
    }
    if raw.gd_offset == GD_AT_END {
        (raw, raw_at) = read_footer(src.as_ref())?;
    }
    let h = raw.validate(&name, raw_at, len, limits)?;
    let gt_bytes = h.gtes_per_gt * 4;
    {
        // One budget for the directories of all extents of the image.
        let mut budget = lock(&shared.gd_budget);
        let need = h.gd_entries * 4;
        if need > *budget {
            return Err(crate::error::limit(
                &name,
                "VMDK grain directory",
                raw_at,
                "grain directory bytes of all extents",
                limits
                    .max_table_bytes
                    .saturating_sub(*budget)
                    .saturating_add(need),
                limits.max_table_bytes,
            ));
        }
        *budget -= need;
    }
    let metadata = header_regions(&name, &raw, raw_at, limits)?;
    let gd_at = |gd| GdAt {
        sector: gd,
        metadata: &metadata,
    };
    let primary = read_gd(src.as_ref(), gd_at(raw.gd_offset), &h, gt_bytes, limits);
    let (gd, gd_offset) = match primary {
        Ok(gd) => (gd, raw.gd_offset),
        Err(e) if raw.flags & FLAG_RGD != 0 && raw.rgd_offset != 0 => {
            // The redundant directory exists for exactly this case.
            match read_gd(src.as_ref(), gd_at(raw.rgd_offset), &h, gt_bytes, limits) {
                Ok(gd) => (gd, raw.rgd_offset),
                Err(_) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let desc = if raw.desc_offset != 0 && raw.desc_size != 0 {
        Some((
            read_descriptor(src.as_ref(), &raw, limits)?,
            raw.desc_offset.saturating_mul(SECTOR),
        ))
    } else {
        None
    };
    Ok(Opened::Sparse(
        Box::new(SparseExtent {
            file,
            src,
            h,
            base_sector,
            gd,
            gd_offset,
            gt_bytes,
            shared: shared.clone(),
        }),
        desc,
    ))
}

/// Reads the embedded descriptor named by the header, bounded by
/// `Limits::max_descriptor_bytes`.
fn read_descriptor(
    src: &dyn ByteSource,
    raw: &RawHeader,
    limits: &Limits,
) -> Result<Vec<u8>, DiskError> {
    const S: &str = "VMDK embedded descriptor";
    let at = raw.desc_offset.checked_mul(SECTOR);
    let size = raw.desc_size.checked_mul(SECTOR);
    let (Some(at), Some(size)) = (at, size) else {
        return Err(corrupt(
            src.name(),
            S,
            0,
            "descriptor offset or size overflows",
        ));
    };
    if size == 0 {
        return Err(corrupt(src.name(), S, at, "descriptor size is 0"));
    }
    if size > limits.max_descriptor_bytes {
        return Err(crate::error::limit(
            src.name(),
            S,
            at,
            "descriptor size (bytes)",
            size,
            limits.max_descriptor_bytes,
        ));
    }
    Ok(read_vec(src, at, size, limits.max_descriptor_bytes)?)
}

/// The header sector, the stream footer (header copy between its two
/// markers) and the embedded descriptor: what no grain directory or grain
/// table may overlap.
fn header_regions(
    name: &str,
    raw: &RawHeader,
    raw_at: u64,
    limits: &Limits,
) -> Result<Regions, DiskError> {
    let mut r = Regions::new();
    r.claim(name, "VMDK sparse header", 0, SECTOR)?;
    if raw_at != 0 {
        r.claim(
            name,
            "VMDK stream footer",
            raw_at.saturating_sub(SECTOR),
            3 * SECTOR,
        )?;
    }
    // An offset or size that overflows, or a size over the cap, is
    // reported by read_descriptor.
    if let (Some(at), Some(len)) = (
        raw.desc_offset.checked_mul(SECTOR),
        raw.desc_size.checked_mul(SECTOR),
    ) && at != 0
        && len <= limits.max_descriptor_bytes
    {
        r.claim(name, "VMDK embedded descriptor", at, len)?;
    }
    Ok(r)
}

/// Where a grain directory is, and the metadata it must not overlap.
struct GdAt<'a> {
    sector: u64,
    metadata: &'a Regions,
}

/// Reads and checks the grain directory at sector `gd_sector`: it must lie
/// inside the file and on no other metadata, and every grain table it
/// names must too.
fn read_gd(
    src: &dyn ByteSource,
    gd_at: GdAt<'_>,
    h: &Header,
    gt_bytes: u64,
    limits: &Limits,
) -> Result<Vec<u32>, DiskError> {
    const S: &str = "VMDK grain directory";
    let gd_sector = gd_at.sector;
    let len = src.len();
    let name = src.name();
    if gd_sector == 0 {
        return Err(corrupt(name, S, 0, "gdOffset is 0 (no grain directory)"));
    }
    let bytes = h.gd_entries * 4; // <= max_table_bytes, checked in validate
    let at = gd_sector
        .checked_mul(SECTOR)
        .filter(|a| a.checked_add(bytes).is_some_and(|end| end <= len))
        .ok_or_else(|| {
            corrupt(
                name,
                S,
                gd_sector.saturating_mul(SECTOR),
                format!(
                    "{bytes} bytes at sector {gd_sector} run past the end of the file ({len} bytes)"
                ),
            )
        })?;
    gd_at.metadata.check(name, S, at, bytes)?;
    let raw = read_vec(src, at, bytes, limits.max_table_bytes)?;
    let gd: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (i, &e) in gd.iter().enumerate() {
        if e == 0 {
            continue;
        }
        let gt = u64::from(e) * SECTOR;
        if gt.checked_add(gt_bytes).is_none_or(|end| end > len) {
            return Err(corrupt(
                name,
                S,
                at + 4 * i as u64,
                format!(
                    "entry {i} names a grain table at byte {gt}, past the end of the file ({len} bytes)"
                ),
            ));
        }
        if let Some(what) = gd_at
            .metadata
            .overlap(gt, gt_bytes)
            .or_else(|| (gt < at + bytes && at < gt + gt_bytes).then_some(S))
        {
            return Err(corrupt(
                name,
                S,
                at + 4 * i as u64,
                format!("entry {i} names a grain table at byte {gt} that overlaps the {what}"),
            ));
        }
    }
    Ok(gd)
}

impl SparseExtent {
    /// Extent size in bytes.
    pub fn capacity(&self) -> u64 {
        self.h.capacity
    }

    /// Capacity in sectors, as the header states it.
    pub fn capacity_sectors(&self) -> u64 {
        self.h.raw.capacity
    }

    /// Grain size in bytes.
    pub fn grain(&self) -> u64 {
        self.h.grain
    }

    /// Grains are compressed (streamOptimized).
    pub fn compressed(&self) -> bool {
        self.h.compressed
    }

    /// The uncleanShutdown byte.
    pub fn unclean(&self) -> bool {
        self.h.raw.unclean_shutdown
    }

    fn name(&self) -> &str {
        self.src.name()
    }

    /// Grain table number `gd_idx`, from the cache or the file.
    fn gt(&self, gd_idx: u64, sector: u32) -> Result<Arc<[u32]>, DiskError> {
        if let Some(t) = lock(&self.shared.gt).get((self.file, gd_idx)) {
            return Ok(t);
        }
        // Read outside the lock so parallel readers do not queue on I/O.
        // In bounds: read_gd checked every entry against the file length.
        let at = u64::from(sector) * SECTOR;
        let raw = read_vec(self.src.as_ref(), at, self.gt_bytes, self.gt_bytes)?;
        let t: Arc<[u32]> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // A grain that starts past the end of the file means a truncated
        // file (or a damaged table): say which grain, once, here.
        let len = self.src.len();
        for (j, &e) in t.iter().enumerate() {
            if let Grain::At(s) = self.classify(e)
                && s * SECTOR >= len
            {
                let g = gd_idx * self.h.gtes_per_gt + j as u64;
                return Err(corrupt(
                    self.name(),
                    "VMDK grain table",
                    at + 4 * j as u64,
                    format!(
                        "entry {j} puts grain {g} at byte {}, past the end of the file ({len} bytes): the file is truncated or the table is damaged",
                        s * SECTOR
                    ),
                ));
            }
        }
        lock(&self.shared.gt).put((self.file, gd_idx), t.clone());
        Ok(t)
    }

    fn classify(&self, gte: u32) -> Grain {
        match gte {
            0 => Grain::Unallocated,
            1 if self.h.zeroed_grain => Grain::Zero,
            s => Grain::At(u64::from(s)),
        }
    }

    /// The grain-table entry for grain `g`, or `None` when its whole table
    /// is absent (GD entry 0).
    fn lookup(&self, g: u64) -> Result<Option<GtSlot>, DiskError> {
        let gd_idx = g / self.h.gtes_per_gt;
        let gt_idx = usize::try_from(g % self.h.gtes_per_gt).unwrap_or(usize::MAX);
        let gde = usize::try_from(gd_idx)
            .ok()
            .and_then(|i| self.gd.get(i))
            .copied()
            .ok_or_else(|| {
                corrupt(
                    self.name(),
                    "VMDK grain directory",
                    self.gd_offset.saturating_mul(SECTOR),
                    format!("no entry {gd_idx} for grain {g}"),
                )
            })?;
        if gde == 0 {
            return Ok(None);
        }
        Ok(Some((self.gt(gd_idx, gde)?, gt_idx)))
    }

    /// Where extent byte `rel` lives, for at most `max_len` bytes
    /// (`rel < capacity`, `max_len >= 1`). Runs of grains of one kind (and,
    /// for data, contiguous in the file) are merged within a grain table.
    pub fn map(&self, rel: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let grain = self.h.grain;
        let per_gt = self.h.gtes_per_gt;
        let g = rel / grain;
        let in_grain = rel % grain;
        let max_len = max_len.min(self.h.capacity.saturating_sub(rel)).max(1);
        let Some((gt, i)) = self.lookup(g)? else {
            // A missing table: unallocated up to the next present one.
            let mut next_gt = g / per_gt + 1;
            while next_gt
                .saturating_mul(per_gt)
                .saturating_mul(grain)
                .saturating_sub(rel)
                < max_len
                && usize::try_from(next_gt).ok().and_then(|i| self.gd.get(i)) == Some(&0)
            {
                next_gt += 1;
            }
            let len = next_gt
                .saturating_mul(per_gt)
                .saturating_mul(grain)
                .saturating_sub(rel);
            return Ok(Mapping {
                kind: MapKind::Unallocated,
                len: len.min(max_len),
            });
        };
        let first = self.classify(gt.get(i).copied().unwrap_or(0));
        let mut len = grain - in_grain;
        if let (Grain::At(_), true) = (first, self.h.compressed) {
            // One grain per run: each is its own deflate stream.
            return Ok(Mapping {
                kind: MapKind::Encoded,
                len: len.min(max_len),
            });
        }
        let grain_sectors = grain / SECTOR;
        let mut j = i + 1;
        let mut k = 1u64;
        while len < max_len {
            let Some(&e) = gt.get(j) else { break };
            let next = self.classify(e);
            let same = match (first, next) {
                (Grain::At(a), Grain::At(b)) => {
                    !self.h.compressed && a.checked_add(k * grain_sectors) == Some(b)
                }
                (a, b) => a == b,
            };
            if !same {
                break;
            }
            len += grain;
            j += 1;
            k += 1;
        }
        let kind = match first {
            Grain::Unallocated => MapKind::Unallocated,
            Grain::Zero => MapKind::Zero,
            Grain::At(s) => MapKind::Data {
                file: self.file,
                host_offset: s
                    .checked_mul(SECTOR)
                    .and_then(|o| o.checked_add(in_grain))
                    .ok_or_else(|| {
                        corrupt(self.name(), "VMDK grain table", 0, "grain offset overflows")
                    })?,
            },
        };
        Ok(Mapping {
            kind,
            len: len.min(max_len),
        })
    }

    /// The grain size as a buffer length (compressed grains are decoded
    /// whole; `validate` bounded them by the table limit).
    fn grain_usize(&self) -> Result<usize, DiskError> {
        usize::try_from(self.h.grain).map_err(|_| {
            crate::error::limit(
                self.name(),
                "VMDK sparse header",
                0,
                "grain size (bytes)",
                self.h.grain,
                usize::MAX as u64,
            )
        })
    }

    /// Decodes extent bytes `rel..rel + buf.len()` of a compressed extent.
    pub fn read_encoded(&self, rel: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let grain = self.h.grain;
        let grain_us = self.grain_usize()?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = rel.saturating_add(done as u64);
            let g = pos / grain;
            // pos % grain < grain, which fits in usize (grain_usize).
            let in_grain = usize::try_from(pos % grain).unwrap_or(grain_us);
            let n = (buf.len() - done).min(grain_us - in_grain);
            let dst = &mut buf[done..done + n];
            let kind = match self.lookup(g)? {
                None => Grain::Unallocated,
                Some((gt, i)) => self.classify(gt.get(i).copied().unwrap_or(0)),
            };
            match kind {
                Grain::Unallocated | Grain::Zero => dst.fill(0),
                Grain::At(s) if in_grain == 0 && n == grain_us && !self.cached(g) => {
                    // A whole grain: inflate straight into the caller's
                    // buffer (sequential reads and conversion), no copy.
                    let got = self.inflate(g, s, dst)?;
                    if got != n {
                        return Err(corrupt(
                            self.name(),
                            "VMDK compressed grain",
                            s.saturating_mul(SECTOR),
                            format!(
                                "grain {g} decompresses to {got} bytes, not the grain size {n}"
                            ),
                        ));
                    }
                }
                Grain::At(s) => {
                    let data = self.decoded(g, s)?;
                    let src = data.get(in_grain..in_grain + n).ok_or_else(|| {
                        corrupt(
                            self.name(),
                            "VMDK compressed grain",
                            s.saturating_mul(SECTOR),
                            format!(
                                "grain {g} decompresses to {} bytes; bytes {in_grain}..{} were needed",
                                data.len(),
                                in_grain + n
                            ),
                        )
                    })?;
                    dst.copy_from_slice(src);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// True when grain `g` is in the decoded-grain cache.
    fn cached(&self, g: u64) -> bool {
        lock(&self.shared.grains).contains(&(self.file, g))
    }

    /// Grain `g` (stored at sector `s`) decompressed, from the cache or the
    /// file.
    fn decoded(&self, g: u64, s: u64) -> Result<Arc<Vec<u8>>, DiskError> {
        if let Some(d) = lock(&self.shared.grains).get((self.file, g)) {
            return Ok(d);
        }
        // grain <= max_table_bytes (validate), so this allocation is bounded.
        let mut out = vec![0u8; self.grain_usize()?];
        let n = self.inflate(g, s, &mut out)?;
        out.truncate(n);
        let out = Arc::new(out);
        if self.h.grain <= MAX_CACHED_GRAIN {
            lock(&self.shared.grains).put((self.file, g), out.clone());
        }
        Ok(out)
    }

    /// Inflates grain `g` (stored at sector `s`) into `out` and returns the
    /// bytes produced; a stream that would produce more than `out.len()`
    /// bytes is an error.
    fn inflate(&self, g: u64, s: u64, out: &mut [u8]) -> Result<usize, DiskError> {
        const S: &str = "VMDK compressed grain";
        let grain = self.h.grain;
        let at = s
            .checked_mul(SECTOR)
            .ok_or_else(|| corrupt(self.name(), S, 0, format!("grain {g} offset overflows")))?;
        let bad = |why: String| corrupt(self.name(), S, at, why);
        // qemu reads at most two grains of compressed data per grain.
        let max_in = grain * 2;
        let input = if self.h.markers {
            let mut m = [0u8; 12];
            self.src.read_exact_at(at, &mut m)?;
            let mut lba = [0u8; 8];
            lba.copy_from_slice(&m[..8]);
            let lba = u64::from_le_bytes(lba);
            let size = u64::from(u32::from_le_bytes([m[8], m[9], m[10], m[11]]));
            if size == 0 {
                return Err(bad(format!(
                    "grain {g} points at a metadata marker, not a grain"
                )));
            }
            if size > max_in {
                return Err(bad(format!(
                    "grain {g} claims {size} compressed bytes, more than twice the grain size"
                )));
            }
            let want = g * (grain / SECTOR);
            if lba != want && Some(lba) != want.checked_add(self.base_sector) {
                return Err(bad(format!(
                    "grain marker says sector {lba}, but the grain table puts it at sector {want}"
                )));
            }
            read_vec(self.src.as_ref(), at + 12, size, max_in)?
        } else {
            // No marker: the stream length is unknown; it ends itself.
            let avail = self.src.len().saturating_sub(at).min(max_in);
            read_vec(self.src.as_ref(), at, avail, max_in)?
        };
        let (status, produced) = with_inflater(|z| {
            let st = z.decompress(&input, out, FlushDecompress::Finish);
            (st, usize::try_from(z.total_out()).unwrap_or(usize::MAX))
        });
        let status = status.map_err(|e| bad(format!("grain {g}: bad zlib data: {e}")))?;
        if status != Status::StreamEnd {
            return Err(bad(if produced >= out.len() {
                format!(
                    "grain {g} decompresses to more than {} bytes (grain size {grain})",
                    out.len()
                )
            } else {
                format!("grain {g}: zlib stream is truncated")
            }));
        }
        Ok(produced)
    }
}

/// Runs `f` with this thread's zlib decoder, reset. A stream-optimized
/// image is one zlib stream per 64 KiB grain, and setting a decoder up
/// (state and window allocations) cost as much as a tenth of inflating the
/// grain; conversion threads reuse theirs.
fn with_inflater<R>(f: impl FnOnce(&mut Decompress) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(true));
    }
    INFLATER.with(|z| match z.try_borrow_mut() {
        Ok(mut z) => {
            z.reset(true);
            f(&mut z)
        }
        // Re-entered (cannot happen today): a fresh decoder is as correct.
        Err(_) => f(&mut Decompress::new(true)),
    })
}

/// Locks a cache; a poisoned lock only means another reader panicked while
/// holding it, and the caches hold no invariant a half-done update breaks.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
