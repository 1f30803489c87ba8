//! VHDX: Hyper-V virtual hard disks (version 2), fixed, dynamic and
//! differencing.
//!
//! Layout (MS-VHDX): the first MiB holds the file identifier, two headers
//! (64 KiB and 128 KiB) and two copies of the region table (192 KiB and
//! 256 KiB). The region table places the BAT and the metadata region; the
//! metadata region holds the block size, virtual size, sector sizes and (for
//! differencing disks) the parent locator. The BAT has one u64 entry per
//! payload block, with one sector-bitmap entry after every `chunk_ratio`
//! payload entries.
//!
//! This module owns header selection, the region table, metadata, the BAT
//! and mapping; [`log`] owns log replay. What is checked, and why:
//!
//! * headers: signature and CRC-32C; the valid one with the higher sequence
//!   number wins (the other is a torn update); neither valid is corrupt;
//! * region tables: signature, CRC-32C and entry count; the second copy is
//!   used when the first is damaged (qemu reads only the first); an unknown
//!   region marked Required means data we do not understand: refused;
//! * metadata: every item inside the region, the items qemu requires, an
//!   unknown Required item refused; block size a power of two in
//!   1..=256 MiB, sector sizes 512 or 4096, virtual size ≤ 64 TiB;
//! * BAT: its size is checked against `Limits::max_table_bytes` *before* it
//!   is read (it is kept whole in memory: 8 bytes per block, so 32 KiB per
//!   TiB at the default 32 MiB blocks); every payload state is known,
//!   PARTIALLY_PRESENT only in differencing disks, and every present block
//!   lies inside the file.
//!
//! Payload states: NOT_PRESENT and UNDEFINED read as unallocated; ZERO and
//! UNMAPPED (3 in the current spec, 5 in qemu's older header) as zero;
//! FULLY_PRESENT as data. Differencing disks (HasParent) report the parent
//! from the parent locator and never open it: blocks the child does not
//! hold read as zeros (unallocated).
//!
//! A non-empty log (LogGuid ≠ 0) means the metadata or data on disk may be
//! stale: the log is replayed into an in-memory overlay that every read
//! goes through ([`log`]); a log that cannot be replayed is an error, never
//! silently skipped.
//!
//! Why not the `vhdx-rs` crate: it declares `rust-version = "1.96"` and
//! this workspace builds with stable 1.95; it also reads with `std::fs`
//! rather than through a [`ByteSource`], which we need for URLs and
//! compressed sources.

mod log;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use imgcheck_source::{ByteSource, read_vec};
use serde_json::json;

use crate::context::OpenContext;
use crate::disk::{DiskImage, DiskInfo, ExternalRef, MapKind, Mapping};
use crate::error::{DiskError, corrupt, limit, unsupported};
use crate::format::Format;
use crate::limits::{
    VHDX_MAX_BLOCK as MAX_BLOCK, VHDX_MAX_TABLE_ENTRIES as MAX_TABLE_ENTRIES,
    VHDX_MAX_VIRTUAL_SIZE as MAX_VIRTUAL, VHDX_MIN_BLOCK as MIN_BLOCK,
};
use crate::parse::{Fields, Regions};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Header slots (4 KiB each used).
const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
const HEADER_LEN: usize = 4096;
/// Region table copies (64 KiB each).
const REGION_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
const REGION_LEN: usize = 64 * 1024;
/// Metadata table header and entry area (items start at 64 KiB or later).
const METADATA_TABLE_LEN: usize = 64 * 1024;

// Payload block states (BAT bits 0..=2).
const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_UNDEFINED: u64 = 1;
const PAYLOAD_ZERO: u64 = 2;
const PAYLOAD_UNMAPPED: u64 = 3;
/// UNMAPPED as numbered by an older draft, which qemu still uses.
const PAYLOAD_UNMAPPED_QEMU: u64 = 5;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
/// Sector-bitmap block state meaning "the bitmap exists".
const SB_PRESENT: u64 = 6;

/// A GUID as stored on disk (first three fields little-endian).
type Guid = [u8; 16];

/// Builds the on-disk bytes of the GUID written as `d1-d2-d3-d4`.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

const REGION_BAT: Guid = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
const REGION_METADATA: Guid = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const META_FILE_PARAMETERS: Guid = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const META_VIRTUAL_DISK_SIZE: Guid = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const META_PAGE83: Guid = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const META_LOGICAL_SECTOR: Guid = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const META_PHYSICAL_SECTOR: Guid = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
const META_PARENT_LOCATOR: Guid = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

const S_IDENT: &str = "VHDX file identifier";
const S_HEADER: &str = "VHDX header";
const S_REGION: &str = "VHDX region table";
const S_METADATA: &str = "VHDX metadata";
const S_BAT: &str = "VHDX BAT";
const S_BITMAP: &str = "VHDX sector bitmap";

/// CRC-32C of `buf` with its checksum field (bytes 4..8) taken as zero,
/// as every VHDX structure computes it.
fn checksum(buf: &[u8]) -> u32 {
    let head = buf.get(..4).unwrap_or(buf);
    let crc = crc32c::crc32c_append(crc32c::crc32c(head), &[0; 4]);
    crc32c::crc32c_append(crc, buf.get(8..).unwrap_or(&[]))
}

/// The checksum stored at bytes 4..8 of a structure.
fn stored_checksum(buf: &[u8]) -> u32 {
    // Every caller passes a whole structure (≥ 4 KiB); a short one has no
    // valid checksum.
    buf.get(4..8)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(!checksum(buf), u32::from_le_bytes)
}

fn checksum_ok(buf: &[u8]) -> bool {
    checksum(buf) == stored_checksum(buf)
}

/// The fields of the current header we use.
#[derive(Debug, Clone)]
struct Header {
    /// Which slot (0 or 1) it came from (the tests check the choice).
    #[cfg_attr(not(test), allow(dead_code))]
    slot: usize,
    sequence: u64,
    log_guid: Guid,
    log_length: u32,
    log_offset: u64,
}

/// Why a header slot is not valid, or the header.
fn read_header(src: &dyn ByteSource, slot: usize) -> Result<Header, String> {
    let at = HEADER_OFFSETS.get(slot).copied().unwrap_or(0);
    let b = read_vec(src, at, HEADER_LEN as u64, HEADER_LEN as u64).map_err(|e| e.to_string())?;
    let f = Fields::new(src.name(), S_HEADER, at, &b);
    if b.get(..4) != Some(b"head") {
        return Err("no \"head\" signature".into());
    }
    if !checksum_ok(&b) {
        return Err(format!(
            "CRC-32C mismatch (stored {:#010x}, computed {:#010x})",
            stored_checksum(&b),
            checksum(&b)
        ));
    }
    let log_version = f.le16(64)?;
    let version = f.le16(66)?;
    if version != 1 || log_version != 0 {
        return Err(format!(
            "version {version} / log version {log_version} (only 1 / 0 exist)"
        ));
    }
    Ok(Header {
        slot,
        sequence: f.le64(8)?,
        log_guid: f.guid(48)?,
        log_length: f.le32(68)?,
        log_offset: f.le64(72)?,
    })
}

/// Picks the valid header with the higher sequence number.
fn current_header(src: &dyn ByteSource, name: &str) -> Result<Header, DiskError> {
    let h1 = read_header(src, 0);
    let h2 = read_header(src, 1);
    match (h1, h2) {
        (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(e1), Err(e2)) => Err(corrupt(
            name,
            S_HEADER,
            HEADER_OFFSETS[0],
            format!("neither header is valid (header 1: {e1}; header 2 at 131072: {e2})"),
        )),
    }
}

/// A region (BAT or metadata).
#[derive(Debug, Clone, Copy)]
struct Region {
    offset: u64,
    length: u64,
}

/// Reads one region-table copy. `Ok(None)`: damaged (signature or CRC), so
/// the other copy may be tried. `Err`: a valid table we cannot accept.
fn read_regions(
    src: &dyn ByteSource,
    name: &str,
    at: u64,
) -> Result<Result<(Region, Region), String>, DiskError> {
    let b = match read_vec(src, at, REGION_LEN as u64, REGION_LEN as u64) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let f = Fields::new(name, S_REGION, at, &b);
    if b.get(..4) != Some(b"regi") {
        return Ok(Err("no \"regi\" signature".into()));
    }
    if !checksum_ok(&b) {
        return Ok(Err(format!(
            "CRC-32C mismatch (stored {:#010x}, computed {:#010x})",
            stored_checksum(&b),
            checksum(&b)
        )));
    }
    let count = f.le32(8)?;
    if count > MAX_TABLE_ENTRIES {
        return Ok(Err(format!(
            "{count} entries, more than the {MAX_TABLE_ENTRIES} allowed"
        )));
    }
    let file_len = src.len();
    let (mut bat, mut meta) = (None, None);
    for i in 0..count as usize {
        let e = 16 + i * 32;
        let id = f.guid(e)?;
        let offset = f.le64(e + 16)?;
        let length = u64::from(f.le32(e + 24)?);
        let required = f.le32(e + 28)? & 1 != 0;
        let eat = at + e as u64;
        let slot = if id == REGION_BAT {
            &mut bat
        } else if id == REGION_METADATA {
            &mut meta
        } else if required {
            return Err(unsupported(
                name,
                format!(
                    "VHDX region {} marked Required (region table entry at offset {eat})",
                    guid_text(&id)
                ),
                None,
            ));
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(corrupt(
                name,
                S_REGION,
                eat,
                format!("region {} listed twice", guid_text(&id)),
            ));
        }
        if offset < MIB || !offset.is_multiple_of(MIB) || length == 0 || !length.is_multiple_of(MIB)
        {
            return Err(corrupt(
                name,
                S_REGION,
                eat,
                format!(
                    "region {} at {offset}, {length} bytes: not a non-empty MiB-aligned range after the header section",
                    guid_text(&id)
                ),
            ));
        }
        match offset.checked_add(length) {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(corrupt(
                    name,
                    S_REGION,
                    eat,
                    format!(
                        "region {} at {offset}, {length} bytes, runs past the end of the file ({file_len} bytes)",
                        guid_text(&id)
                    ),
                ));
            }
        }
        *slot = Some(Region { offset, length });
    }
    match (bat, meta) {
        (Some(b), Some(m)) => {
            if b.offset < m.offset + m.length && m.offset < b.offset + b.length {
                return Err(corrupt(
                    name,
                    S_REGION,
                    at,
                    "the BAT and metadata regions overlap",
                ));
            }
            Ok(Ok((b, m)))
        }
        _ => Err(corrupt(
            name,
            S_REGION,
            at,
            "the BAT or the metadata region is missing",
        )),
    }
}

/// `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` of an on-disk GUID.
fn guid_text(g: &Guid) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    let h = |r: &[u8]| r.iter().map(|x| format!("{x:02X}")).collect::<String>();
    format!(
        "{d1:08X}-{d2:04X}-{d3:04X}-{}-{}",
        h(&g[8..10]),
        h(&g[10..16])
    )
}

/// What the metadata region says.
#[derive(Debug, Default)]
struct Metadata {
    block_size: u64,
    leave_allocated: bool,
    has_parent: bool,
    virtual_size: u64,
    logical_sector: u64,
    physical_sector: u64,
    /// (key, value) pairs of the parent locator.
    parent: Vec<(String, String)>,
}

fn read_metadata(
    src: &dyn ByteSource,
    name: &str,
    region: Region,
    max_item: u64,
) -> Result<Metadata, DiskError> {
    let at = region.offset;
    let t = read_vec(
        src,
        at,
        METADATA_TABLE_LEN as u64,
        METADATA_TABLE_LEN as u64,
    )?;
    let f = Fields::new(name, S_METADATA, at, &t);
    if t.get(..8) != Some(b"metadata") {
        return Err(corrupt(name, S_METADATA, at, "no \"metadata\" signature"));
    }
    let count = u32::from(f.le16(10)?);
    if count > MAX_TABLE_ENTRIES {
        return Err(corrupt(
            name,
            S_METADATA,
            at,
            format!("{count} entries, more than the {MAX_TABLE_ENTRIES} allowed"),
        ));
    }
    let mut m = Metadata::default();
    let mut seen = [false; 6];
    for i in 0..count as usize {
        let e = 32 + i * 32;
        let eat = at + e as u64;
        let id = f.guid(e)?;
        let off = u64::from(f.le32(e + 16)?);
        let len = u64::from(f.le32(e + 20)?);
        let flags = f.le32(e + 24)?;
        let required = flags & 4 != 0;
        let which = [
            META_FILE_PARAMETERS,
            META_VIRTUAL_DISK_SIZE,
            META_PAGE83,
            META_LOGICAL_SECTOR,
            META_PHYSICAL_SECTOR,
            META_PARENT_LOCATOR,
        ]
        .iter()
        .position(|g| *g == id);
        let Some(which) = which else {
            if required {
                return Err(unsupported(
                    name,
                    format!(
                        "VHDX metadata item {} marked Required (metadata entry at offset {eat})",
                        guid_text(&id)
                    ),
                    None,
                ));
            }
            continue;
        };
        if std::mem::replace(&mut seen[which], true) {
            return Err(corrupt(
                name,
                S_METADATA,
                eat,
                format!("item {} listed twice", guid_text(&id)),
            ));
        }
        let fixed_len = [8u64, 8, 16, 4, 4, 0][which];
        let bad_len = if which == 5 {
            len < 20 || len > max_item
        } else {
            len < fixed_len
        };
        let inside = off >= METADATA_TABLE_LEN as u64
            && off.checked_add(len).is_some_and(|end| end <= region.length);
        if bad_len || !inside {
            return Err(corrupt(
                name,
                S_METADATA,
                eat,
                format!(
                    "item {} at region offset {off}, {len} bytes: wrong size or outside the {}-byte region",
                    guid_text(&id),
                    region.length
                ),
            ));
        }
        let want = if which == 5 { len } else { fixed_len };
        let item_at = at + off;
        let d = read_vec(src, item_at, want, max_item)?;
        let item = Fields::new(name, S_METADATA, item_at, &d);
        match which {
            0 => {
                m.block_size = u64::from(item.le32(0)?);
                let flags = item.le32(4)?;
                m.leave_allocated = flags & 1 != 0;
                m.has_parent = flags & 2 != 0;
            }
            1 => m.virtual_size = item.le64(0)?,
            2 => {}
            3 => m.logical_sector = u64::from(item.le32(0)?),
            4 => m.physical_sector = u64::from(item.le32(0)?),
            _ => m.parent = parse_locator(name, item_at, &d)?,
        }
    }
    check_metadata(name, at, &m, &seen)?;
    Ok(m)
}

/// The checks on the metadata as a whole: the items qemu requires, block
/// and sector sizes, the spec's largest disk, a parent for a differencing
/// disk. `seen` says which of the known items were present.
fn check_metadata(name: &str, at: u64, m: &Metadata, seen: &[bool; 6]) -> Result<(), DiskError> {
    // qemu requires these five; so do we (an image qemu reads, we read).
    let names = [
        "file parameters",
        "virtual disk size",
        "page 83 data",
        "logical sector size",
        "physical sector size",
    ];
    if let Some(i) = seen[..5].iter().position(|s| !s) {
        return Err(corrupt(
            name,
            S_METADATA,
            at,
            format!("the required {} item is missing", names[i]),
        ));
    }
    let bs = m.block_size;
    if !bs.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&bs) {
        return Err(corrupt(
            name,
            S_METADATA,
            at,
            format!("block size {bs} is not a power of two from 1 MiB to 256 MiB"),
        ));
    }
    for (what, v) in [
        ("logical", m.logical_sector),
        ("physical", m.physical_sector),
    ] {
        if v != 512 && v != 4096 {
            return Err(corrupt(
                name,
                S_METADATA,
                at,
                format!("{what} sector size {v} is neither 512 nor 4096"),
            ));
        }
    }
    if m.virtual_size > MAX_VIRTUAL {
        return Err(corrupt(
            name,
            S_METADATA,
            at,
            format!(
                "virtual disk size {} is over the 64 TiB maximum",
                m.virtual_size
            ),
        ));
    }
    if m.has_parent && !seen[5] {
        return Err(corrupt(
            name,
            S_METADATA,
            at,
            "a differencing disk (HasParent) without a parent locator",
        ));
    }
    Ok(())
}

/// The parent locator's key/value pairs (UTF-16LE strings).
fn parse_locator(name: &str, at: u64, d: &[u8]) -> Result<Vec<(String, String)>, DiskError> {
    let f = Fields::new(name, "VHDX parent locator", at, d);
    let count = usize::from(f.le16(18)?);
    let bad = |why: String| corrupt(name, "VHDX parent locator", at, why);
    count
        .checked_mul(12)
        .and_then(|n| n.checked_add(20))
        .filter(|&n| n <= d.len())
        .ok_or_else(|| bad(format!("{count} entries do not fit in {} bytes", d.len())))?;
    let text = |off: u32, len: u16| -> Result<String, DiskError> {
        let off = off as usize;
        let s = off
            .checked_add(usize::from(len))
            .and_then(|end| d.get(off..end))
            .filter(|s| s.len() % 2 == 0)
            .ok_or_else(|| {
                bad(format!(
                    "string at {off}, {len} bytes, is outside the locator"
                ))
            })?;
        let units: Vec<u16> = s
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(String::from_utf16_lossy(&units))
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = 20 + i * 12;
        let k = text(f.le32(e)?, f.le16(e + 8)?)?;
        let v = text(f.le32(e + 4)?, f.le16(e + 10)?)?;
        out.push((k, v));
    }
    Ok(out)
}

/// An opened VHDX image.
#[derive(Debug)]
pub struct VhdxImage {
    /// The image, seen through the replayed log when there was one.
    file: Arc<dyn ByteSource>,
    info: DiskInfo,
    bat: Vec<u64>,
    block_size: u64,
    chunk_ratio: u64,
    logical_sector: u64,
    differencing: bool,
}

/// Opens `ctx.source` as VHDX.
pub fn open(ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>, DiskError> {
    let name = ctx.name();
    let raw = ctx.source.as_ref();
    let mut ident = [0u8; 8];
    if imgcheck_source::read_prefix(raw, 0, &mut ident)? != 8 || &ident != b"vhdxfile" {
        return Err(corrupt(name, S_IDENT, 0, "no \"vhdxfile\" signature"));
    }
    let header = current_header(raw, name)?;
    let file: Arc<dyn ByteSource> = if header.log_guid == [0; 16] {
        ctx.source.clone()
    } else {
        log::replay(ctx.source.clone(), &header, ctx.limits)?
    };
    let src = file.as_ref();
    let (bat_region, meta_region) = region_table(src, name)?;
    let metadata = claim_regions(name, &header, bat_region, meta_region)?;
    let m = read_metadata(src, name, meta_region, ctx.limits.max_metadata_bytes)?;
    if m.virtual_size > ctx.limits.max_virtual_size {
        return Err(limit(
            name,
            S_METADATA,
            meta_region.offset,
            "virtual disk size (bytes)",
            m.virtual_size,
            ctx.limits.max_virtual_size,
        ));
    }
    let bat = Bat::read(ctx, src, &m, bat_region)?;
    let allocated = bat.check_payload(name, src.len(), &m, &metadata)?;
    let info = vhdx_info(&header, &m, allocated);
    Ok(Arc::new(VhdxImage {
        file,
        info,
        bat: bat.entries,
        block_size: m.block_size,
        chunk_ratio: bat.chunk_ratio,
        logical_sector: m.logical_sector,
        differencing: m.has_parent,
    }))
}

/// The region table: the first copy, or the second when the first is
/// damaged.
fn region_table(src: &dyn ByteSource, name: &str) -> Result<(Region, Region), DiskError> {
    Ok(match read_regions(src, name, REGION_OFFSETS[0])? {
        Ok(r) => r,
        Err(e1) => match read_regions(src, name, REGION_OFFSETS[1])? {
            Ok(r) => r,
            Err(e2) => {
                return Err(corrupt(
                    name,
                    S_REGION,
                    REGION_OFFSETS[0],
                    format!(
                        "neither region table is valid (table 1: {e1}; table 2 at 262144: {e2})"
                    ),
                ));
            }
        },
    })
}

/// The BAT, read whole, with its geometry.
struct Bat {
    entries: Vec<u64>,
    /// Payload blocks per sector-bitmap block.
    chunk_ratio: u64,
    /// Payload blocks of the disk.
    blocks: u64,
    /// Where the BAT starts in the file.
    offset: u64,
}

impl Bat {
    /// Sizes the BAT from the metadata, checks it against the caps and
    /// its region, and reads it.
    fn read(
        ctx: &OpenContext<'_>,
        src: &dyn ByteSource,
        m: &Metadata,
        bat_region: Region,
    ) -> Result<Self, DiskError> {
        let name = ctx.name();
        let bs = m.block_size;
        // 2^23 sectors per chunk: ≥ 16 for the largest block and smallest sector.
        let chunk_ratio = ((1u64 << 23) * m.logical_sector) / bs;
        let blocks = m.virtual_size.div_ceil(bs);
        let entries = if blocks == 0 {
            0
        } else if m.has_parent {
            ((blocks - 1) / chunk_ratio + 1) * (chunk_ratio + 1)
        } else {
            blocks + (blocks - 1) / chunk_ratio
        };
        let bat_bytes = entries * 8;
        if bat_bytes > ctx.limits.max_table_bytes {
            return Err(limit(
                name,
                S_BAT,
                bat_region.offset,
                "BAT size (bytes)",
                bat_bytes,
                ctx.limits.max_table_bytes,
            ));
        }
        if bat_bytes > bat_region.length {
            return Err(corrupt(
                name,
                S_BAT,
                bat_region.offset,
                format!(
                    "{entries} entries needed for {blocks} blocks do not fit in the {}-byte BAT region",
                    bat_region.length
                ),
            ));
        }
        let raw_bat = read_vec(
            src,
            bat_region.offset,
            bat_bytes,
            ctx.limits.max_table_bytes,
        )?;
        let bat: Vec<u64> = raw_bat
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(Self {
            entries: bat,
            chunk_ratio,
            blocks,
            offset: bat_region.offset,
        })
    }

    /// Validates every payload entry once, so `map` can trust them, and
    /// counts the allocated blocks.
    fn check_payload(
        &self,
        name: &str,
        file_len: u64,
        m: &Metadata,
        metadata: &Regions,
    ) -> Result<u64, DiskError> {
        let (bat, blocks, chunk_ratio, bs) =
            (&self.entries, self.blocks, self.chunk_ratio, m.block_size);
        let mut allocated = 0u64;
        for b in 0..blocks {
            let i = b + b / chunk_ratio;
            let e = usize::try_from(i)
                .ok()
                .and_then(|i| bat.get(i))
                .copied()
                .unwrap_or(0);
            let eat = self.offset + i * 8;
            let state = e & 7;
            match state {
                PAYLOAD_NOT_PRESENT
                | PAYLOAD_UNDEFINED
                | PAYLOAD_ZERO
                | PAYLOAD_UNMAPPED
                | PAYLOAD_UNMAPPED_QEMU => {}
                PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT => {
                    if state == PAYLOAD_PARTIALLY_PRESENT && !m.has_parent {
                        return Err(corrupt(
                            name,
                            S_BAT,
                            eat,
                            format!("block {b} is PARTIALLY_PRESENT in a disk without a parent"),
                        ));
                    }
                    let host = block_host(e);
                    let used = bs.min(m.virtual_size - b * bs);
                    if host < MIB || host.checked_add(used).is_none_or(|end| end > file_len) {
                        return Err(corrupt(
                            name,
                            S_BAT,
                            eat,
                            format!(
                                "block {b} at file offset {host} is outside the file's data area ({file_len} bytes)"
                            ),
                        ));
                    }
                    // A block over the header section, the BAT, the metadata
                    // or the log would read the image's own tables as guest
                    // data (qemu refuses these too).
                    if let Some(what) = metadata.overlap(host, used) {
                        return Err(corrupt(
                            name,
                            S_BAT,
                            eat,
                            format!("block {b} at file offset {host} overlaps the {what}"),
                        ));
                    }
                    allocated += 1;
                }
                _ => {
                    return Err(corrupt(
                        name,
                        S_BAT,
                        eat,
                        format!("block {b} has the undefined payload state {state}"),
                    ));
                }
            }
        }
        Ok(allocated)
    }
}

/// What `imgcheck info` shows for a VHDX.
fn vhdx_info(header: &Header, m: &Metadata, allocated: u64) -> DiskInfo {
    let bs = m.block_size;
    let subformat = if m.has_parent {
        "differencing"
    } else if m.leave_allocated {
        "fixed"
    } else {
        "dynamic"
    };
    let mut info = DiskInfo::new(Format::Vhdx, m.virtual_size);
    info.subformat = Some(subformat.to_owned());
    info.cluster_size = Some(bs);
    let fs = &mut info.format_specific;
    fs.insert("block-size".into(), json!(bs));
    fs.insert("logical-sector-size".into(), json!(m.logical_sector));
    fs.insert("physical-sector-size".into(), json!(m.physical_sector));
    fs.insert("blocks-allocated".into(), json!(allocated));
    if header.log_guid != [0; 16] {
        fs.insert("log-replayed".into(), json!(true));
    }
    if m.has_parent {
        // The preferred name is the relative path; Windows writes absolute
        // and volume paths too. None of them is ever opened.
        let pick = ["relative_path", "absolute_win32_path", "volume_path"]
            .iter()
            .find_map(|k| m.parent.iter().find(|(key, _)| key == k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        info.backing_file = Some(pick.clone());
        info.external_refs.push(ExternalRef {
            kind: "VHDX parent".into(),
            name: pick,
            opened: false,
        });
        for (k, v) in &m.parent {
            fs.insert(format!("parent-{k}"), json!(v));
        }
    }
    info
}

/// The metadata regions of the file, which must not overlap (MS-VHDX 2.2:
/// "the regions ... must not overlap"): the 1 MiB header section, the log
/// (its fields are checked when the log is replayed; an empty log still
/// owns its region), the BAT and the metadata region.
fn claim_regions(
    name: &str,
    header: &Header,
    bat: Region,
    meta: Region,
) -> Result<Regions, DiskError> {
    let mut r = Regions::new();
    r.claim(name, "header section", 0, MIB)?;
    // A log field past the file offset range is caught here too.
    r.claim(
        name,
        "log region",
        header.log_offset,
        u64::from(header.log_length),
    )?;
    r.claim(name, "BAT region", bat.offset, bat.length)?;
    r.claim(name, "metadata region", meta.offset, meta.length)?;
    Ok(r)
}

/// File offset of a BAT entry's block (FileOffsetMB, bits 20..64).
fn block_host(e: u64) -> u64 {
    e & !(MIB - 1)
}

impl VhdxImage {
    /// The BAT entry of payload block `b` (0 when absent).
    fn entry(&self, b: u64) -> u64 {
        let i = b.saturating_add(b / self.chunk_ratio);
        usize::try_from(i)
            .ok()
            .and_then(|i| self.bat.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// What a whole-block entry means (not PARTIALLY_PRESENT).
    fn kind(e: u64) -> MapKind {
        match e & 7 {
            PAYLOAD_FULLY_PRESENT => MapKind::Data {
                file: 0,
                host_offset: block_host(e),
            },
            PAYLOAD_ZERO | PAYLOAD_UNMAPPED | PAYLOAD_UNMAPPED_QEMU => MapKind::Zero,
            _ => MapKind::Unallocated,
        }
    }

    /// A PARTIALLY_PRESENT block: the sector bitmap says, sector by
    /// sector, whether this file or the parent holds the data.
    fn map_partial(&self, e: u64, off: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let name = self.file.name();
        let b = off / self.block_size;
        let chunk = b / self.chunk_ratio;
        let sb_index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let sb = usize::try_from(sb_index)
            .ok()
            .and_then(|i| self.bat.get(i))
            .copied()
            .unwrap_or(0);
        if sb & 7 != SB_PRESENT || block_host(sb) < MIB {
            return Err(corrupt(
                name,
                S_BITMAP,
                sb_index * 8,
                format!("block {b} is PARTIALLY_PRESENT but its chunk has no sector bitmap"),
            ));
        }
        let chunk_start = chunk * self.chunk_ratio * self.block_size;
        let sector = (off - chunk_start) / self.logical_sector;
        let block_end = (b + 1) * self.block_size;
        let want = max_len.min(block_end - off);
        // Read the bitmap bits for up to 32768 sectors from here.
        let first_byte = sector / 8;
        // Never past the 1 MiB bitmap (sector < 2^23, so first_byte < 1 MiB).
        let nbytes = (want.div_ceil(self.logical_sector) + 8)
            .div_ceil(8)
            .min(4096)
            .min(MIB.saturating_sub(first_byte))
            .max(1);
        let bm_at = block_host(sb) + first_byte;
        let bits = read_vec(self.file.as_ref(), bm_at, nbytes, 4096)?;
        let bit = |s: u64| -> bool {
            let rel = s - first_byte * 8;
            bits.get((rel / 8) as usize)
                .is_some_and(|byte| byte & (1 << (rel % 8)) != 0)
        };
        let present = bit(sector);
        let mut s = sector + 1;
        let limit_s = first_byte * 8 + nbytes * 8;
        let mut len = (sector + 1) * self.logical_sector + chunk_start - off;
        while len < want && s < limit_s && bit(s) == present {
            len += self.logical_sector;
            s += 1;
        }
        let kind = if present {
            MapKind::Data {
                file: 0,
                host_offset: block_host(e) + off % self.block_size,
            }
        } else {
            MapKind::Unallocated
        };
        Ok(Mapping {
            kind,
            len: len.min(want).max(1),
        })
    }
}

impl DiskImage for VhdxImage {
    fn info(&self) -> &DiskInfo {
        &self.info
    }

    fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let bs = self.block_size;
        let mut b = guest_offset / bs;
        let within = guest_offset % bs;
        let e = self.entry(b);
        if self.differencing && e & 7 == PAYLOAD_PARTIALLY_PRESENT {
            return self.map_partial(e, guest_offset, max_len);
        }
        let first = Self::kind(e);
        let kind = match first {
            MapKind::Data { file, host_offset } => MapKind::Data {
                file,
                host_offset: host_offset + within,
            },
            k => k,
        };
        // Extend over following blocks of the same kind; data blocks must
        // also follow each other in the file.
        let mut len = bs - within;
        let mut prev = first;
        while len < max_len {
            b += 1;
            let next = Self::kind(self.entry(b));
            if self.entry(b) & 7 == PAYLOAD_PARTIALLY_PRESENT {
                break;
            }
            if !prev.continues(bs, next) {
                break;
            }
            len += bs;
            prev = next;
        }
        Ok(Mapping {
            kind,
            len: len.min(max_len),
        })
    }

    fn host_file(&self, index: usize) -> Option<&dyn ByteSource> {
        (index == 0).then_some(self.file.as_ref())
    }
}
