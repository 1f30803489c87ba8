//! VDI: VirtualBox disk images (header version 1.1), static and dynamic.
//!
//! A VDI file is a 512-byte-ish header, a block map of `blocks_in_image`
//! little-endian u32 entries at `offset_bmap`, and data blocks from
//! `offset_data`. Entry `i` says where guest block `i` lives: the index of
//! a physical block (`offset_data + idx * (block_size + block_extra) +
//! block_extra`), `0xFFFFFFFF` (never written: reads as zeros) or
//! `0xFFFFFFFE` (discarded: reads as zeros).
//!
//! This module owns header validation and the block map. The whole map is
//! kept in memory (4 bytes per block, so 4 KiB per GiB at qemu's 1 MiB
//! blocks), bounded by `Limits::max_table_bytes` *before* it is read.
//!
//! What is checked, and why: the signature and version (qemu reads only
//! 1.1); sector size 512; a power-of-two block size within the limits
//! (qemu only writes 1 MiB, VirtualBox may use others); `disk_size` fits in
//! `blocks_in_image` blocks; the map and data offsets lie in the file; every
//! allocated entry is below `blocks_in_image` and its data inside the file.
//! Two guest blocks sharing one physical block cannot happen in a healthy
//! image (`qemu-img check` reports it) but reading it is harmless, so it is
//! allowed and counted in `format_specific["duplicate-blocks"]`.
//!
//! Differencing images (UNDO/DIFF types, or a non-null parent or link UUID)
//! need their parent to read at all: the parent UUID is reported as an
//! external reference and the image is refused, never followed.

use std::sync::Arc;

use imgcheck_source::{ByteSource, read_vec};
use serde_json::json;

use crate::context::OpenContext;
use crate::disk::{DiskImage, DiskInfo, MapKind, Mapping};
use crate::error::{DiskError, corrupt, limit, unsupported};
use crate::format::Format;
use crate::limits::VDI_MAX_BLOCK as MAX_BLOCK;
use crate::parse::{Fields, Regions};

/// `0xBEDA107F` at offset 0x40.
const SIGNATURE: u32 = 0xBEDA_107F;
/// Version 1.1, the only one qemu (and current VirtualBox) writes.
const VERSION_1_1: u32 = 0x0001_0001;
/// The pre-header: 64 bytes of text, the signature and the version; the
/// header proper (`header_size` bytes) follows.
const PRE_HEADER: u64 = 0x48;
/// The header fields we read end at 0x1C8 (end of `uuid_parent`).
const HEADER_BYTES: usize = 0x1C8;
/// Block-map entry: never allocated.
const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// Block-map entry: discarded, reads as zeros.
const DISCARDED: u32 = 0xFFFF_FFFE;
/// Smallest block size accepted: one sector.
const MIN_BLOCK: u64 = 512;
/// Image types (VirtualBox `VDIImageType`).
const TYPE_NORMAL: u32 = 1;
const TYPE_FIXED: u32 = 2;
const TYPE_UNDO: u32 = 3;
const TYPE_DIFF: u32 = 4;

const STRUCT_HEADER: &str = "VDI header";
const STRUCT_MAP: &str = "VDI block map";

/// An opened VDI image.
#[derive(Debug)]
pub struct VdiImage {
    source: Arc<dyn ByteSource>,
    info: DiskInfo,
    /// One entry per guest block.
    map: Vec<u32>,
    block_size: u64,
    /// Host offset of physical block 0's data.
    data_start: u64,
    /// Distance between physical blocks (`block_size + block_extra`).
    stride: u64,
}

/// A VirtualBox RTUUID (little-endian first three fields) as text.
fn uuid_text(b: &[u8]) -> String {
    let g = |r: std::ops::Range<usize>| b.get(r).unwrap_or(&[]).to_vec();
    let mut a = g(0..4);
    a.reverse();
    let mut c = g(4..6);
    c.reverse();
    let mut d = g(6..8);
    d.reverse();
    let hex = |v: &[u8]| v.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(&a),
        hex(&c),
        hex(&d),
        hex(&g(8..10)),
        hex(&g(10..16))
    )
}

/// The header fields (VirtualBox `VDIHEADER1PLUS`, offsets from the start
/// of the file), before validation.
struct Fields1 {
    header_size: u64,
    image_type: u32,
    offset_bmap: u64,
    offset_data: u64,
    sector_size: u32,
    disk_size: u64,
    block_size: u64,
    block_extra: u64,
    blocks: u64,
    uuid_link: [u8; 16],
    uuid_parent: [u8; 16],
}

/// The validated geometry the reader needs.
struct Geometry {
    virtual_size: u64,
    block_size: u64,
    blocks: u64,
    offset_bmap: u64,
    map_bytes: u64,
    /// Host offset of physical block 0's data.
    data_start: u64,
    /// Distance between physical blocks.
    stride: u64,
    type_name: &'static str,
    fixed: bool,
}

/// Opens `ctx.source` as VDI.
pub fn open(ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>, DiskError> {
    let src = ctx.source.as_ref();
    let name = ctx.name();
    let h = read_vec(src, 0, HEADER_BYTES as u64, HEADER_BYTES as u64)?;
    let x = header_fields(name, src.len(), &h)?;
    let g = geometry(ctx, &x)?;
    // qemu-img and VirtualBox put the block map after the header and the
    // data after the map; a map on the header, or a block on either,
    // would read the image's own tables as guest data.
    let mut metadata = Regions::new();
    metadata.claim(name, "VDI header", 0, PRE_HEADER + x.header_size)?;
    metadata.claim(name, STRUCT_MAP, g.offset_bmap, g.map_bytes)?;
    let raw = read_vec(src, g.offset_bmap, g.map_bytes, ctx.limits.max_table_bytes)?;
    let map: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (allocated, duplicates) = check_map(name, src.len(), &g, &map, &metadata)?;

    let mut info = DiskInfo::new(Format::Vdi, g.virtual_size);
    info.subformat = Some(if g.fixed { "static" } else { "dynamic" }.to_owned());
    info.cluster_size = Some(g.block_size);
    let fs = &mut info.format_specific;
    fs.insert("image-type".into(), json!(g.type_name));
    fs.insert("block-size".into(), json!(g.block_size));
    fs.insert("blocks-allocated".into(), json!(allocated));
    if duplicates > 0 {
        fs.insert("duplicate-blocks".into(), json!(duplicates));
    }
    Ok(Arc::new(VdiImage {
        source: ctx.source.clone(),
        info,
        map,
        block_size: g.block_size,
        data_start: g.data_start,
        stride: g.stride,
    }))
}

/// Signature, version and the raw header fields.
fn header_fields(name: &str, file_len: u64, h: &[u8]) -> Result<Fields1, DiskError> {
    let bad = |off: u64, why: String| corrupt(name, STRUCT_HEADER, off, why);
    let f = Fields::new(name, STRUCT_HEADER, 0, h);
    let signature = f.le32(0x40)?;
    if signature != SIGNATURE {
        return Err(bad(
            0x40,
            format!("signature is {signature:#010x}, not {SIGNATURE:#010x}"),
        ));
    }
    let version = f.le32(0x44)?;
    if version != VERSION_1_1 {
        return Err(unsupported(
            name,
            format!(
                "VDI header version {}.{} (only 1.1 is read)",
                version >> 16,
                version & 0xFFFF
            ),
            None,
        ));
    }
    // qemu ignores header_size; VirtualBox writes 0x190 for 1.1. Only a
    // value that cannot hold the fields we read is refused.
    let header_size = u64::from(f.le32(0x48)?);
    if header_size < 0x180 || header_size > file_len {
        return Err(bad(
            0x48,
            format!("header_size {header_size} is not between 384 and the file size {file_len}"),
        ));
    }
    Ok(Fields1 {
        header_size,
        image_type: f.le32(0x4C)?,
        offset_bmap: u64::from(f.le32(0x154)?),
        offset_data: u64::from(f.le32(0x158)?),
        sector_size: f.le32(0x168)?,
        disk_size: f.le64(0x170)?,
        block_size: u64::from(f.le32(0x178)?),
        block_extra: u64::from(f.le32(0x17C)?),
        blocks: u64::from(f.le32(0x180)?),
        uuid_link: f.array(0x1A8)?,
        uuid_parent: f.array(0x1B8)?,
    })
}

/// Image type, parent, sector and block sizes, offsets and the size of
/// the block map, checked against the format, `limits` and the file.
fn geometry(ctx: &OpenContext<'_>, x: &Fields1) -> Result<Geometry, DiskError> {
    let name = ctx.name();
    let file_len = ctx.source.len();
    let bad = |off: u64, why: String| corrupt(name, STRUCT_HEADER, off, why);
    let type_name = match x.image_type {
        TYPE_NORMAL => "normal",
        TYPE_FIXED => "fixed",
        TYPE_UNDO => "undo",
        TYPE_DIFF => "diff",
        t => {
            return Err(unsupported(
                name,
                format!("VDI image type {t} (only 1 normal, 2 fixed, 3 undo and 4 diff exist)"),
                None,
            ));
        }
    };
    let has_parent = x.uuid_parent.iter().any(|&b| b != 0) || x.uuid_link.iter().any(|&b| b != 0);
    if x.image_type == TYPE_UNDO || x.image_type == TYPE_DIFF || has_parent {
        // The parent is named only by UUID: name it, never look for it.
        return Err(unsupported(
            name,
            format!(
                "differencing VDI (type {type_name}, parent UUID {{{}}}, link UUID {{{}}}): its unwritten blocks live in the parent, which is never opened",
                uuid_text(&x.uuid_parent),
                uuid_text(&x.uuid_link)
            ),
            Some("merge it into its parent with VirtualBox (VBoxManage clonemedium) first"),
        ));
    }
    check_sizes(name, x)?;
    // qemu rounds a disk size that is not whole sectors up.
    let virtual_size = x
        .disk_size
        .checked_add(511)
        .map(|s| s & !511)
        .ok_or_else(|| bad(0x170, format!("disk size {} overflows", x.disk_size)))?;
    if virtual_size > ctx.limits.max_virtual_size {
        return Err(limit(
            name,
            STRUCT_HEADER,
            0x170,
            "disk size (bytes)",
            virtual_size,
            ctx.limits.max_virtual_size,
        ));
    }
    let (block_size, block_extra, offset_bmap, offset_data) =
        (x.block_size, x.block_extra, x.offset_bmap, x.offset_data);
    let blocks = x.blocks;
    let capacity = blocks
        .checked_mul(block_size)
        .ok_or_else(|| bad(0x180, "blocks_in_image * block_size overflows".into()))?;
    if virtual_size > capacity {
        return Err(bad(
            0x180,
            format!(
                "blocks_in_image {blocks} of {block_size} bytes hold {capacity} bytes, less than the disk size {virtual_size}"
            ),
        ));
    }
    // blocks < 2^32: no overflow.
    let map_bytes = blocks * 4;
    if map_bytes > ctx.limits.max_table_bytes {
        return Err(limit(
            name,
            STRUCT_MAP,
            offset_bmap,
            "block map size (bytes)",
            map_bytes,
            ctx.limits.max_table_bytes,
        ));
    }
    match offset_bmap.checked_add(map_bytes) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(corrupt(
                name,
                STRUCT_MAP,
                offset_bmap,
                format!(
                    "{map_bytes} bytes of block map run past the end of the file ({file_len} bytes)"
                ),
            ));
        }
    }
    if offset_data > file_len {
        return Err(bad(
            0x158,
            format!("data offset {offset_data} is past the end of the file ({file_len} bytes)"),
        ));
    }
    Ok(Geometry {
        virtual_size,
        block_size,
        blocks,
        offset_bmap,
        map_bytes,
        data_start: offset_data + block_extra,
        stride: block_size + block_extra,
        type_name,
        fixed: x.image_type == TYPE_FIXED,
    })
}

/// Sector size, block size and extra, and the alignment of the block map
/// and data offsets.
fn check_sizes(name: &str, x: &Fields1) -> Result<(), DiskError> {
    let bad = |off: u64, why: String| corrupt(name, STRUCT_HEADER, off, why);
    if x.sector_size != 512 {
        return Err(bad(
            0x168,
            format!("sector size is {}, not 512", x.sector_size),
        ));
    }
    let (block_size, block_extra) = (x.block_size, x.block_extra);
    if !block_size.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        return Err(bad(
            0x178,
            format!(
                "block size {block_size} is not a power of two between {MIN_BLOCK} and {MAX_BLOCK}"
            ),
        ));
    }
    if block_extra % 512 != 0 || block_extra > MAX_BLOCK {
        return Err(bad(
            0x17C,
            format!("block_extra {block_extra} is not a multiple of 512 up to {MAX_BLOCK}"),
        ));
    }
    let (offset_bmap, offset_data) = (x.offset_bmap, x.offset_data);
    if offset_bmap % 512 != 0 || offset_data % 512 != 0 {
        return Err(bad(
            0x154,
            format!(
                "block map offset {offset_bmap} or data offset {offset_data} is not sector aligned"
            ),
        ));
    }
    Ok(())
}

/// Checks every allocated block-map entry once, so `map` can trust them:
/// in range, its data inside the file and on no metadata. Returns the
/// allocated and the duplicate (shared physical block) counts.
fn check_map(
    name: &str,
    file_len: u64,
    g: &Geometry,
    map: &[u32],
    metadata: &Regions,
) -> Result<(u64, u64), DiskError> {
    // A bitmap of one bit per physical block, to count duplicates.
    let mut seen = vec![0u64; map.len().div_ceil(64)];
    let mut allocated = 0u64;
    let mut duplicates = 0u64;
    for (i, &e) in map.iter().enumerate() {
        if e == UNALLOCATED || e == DISCARDED {
            continue;
        }
        let at = g.offset_bmap + (i as u64) * 4;
        if u64::from(e) >= g.blocks {
            return Err(corrupt(
                name,
                STRUCT_MAP,
                at,
                format!(
                    "entry {i} names block {e}, past blocks_in_image {}",
                    g.blocks
                ),
            ));
        }
        // Only the part of the block inside the disk is ever read.
        let guest_start = (i as u64) * g.block_size;
        let used = g.block_size.min(g.virtual_size.saturating_sub(guest_start));
        let host = u64::from(e)
            .checked_mul(g.stride)
            .and_then(|o| o.checked_add(g.data_start));
        match host.and_then(|h| h.checked_add(used)) {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(corrupt(
                    name,
                    STRUCT_MAP,
                    at,
                    format!(
                        "entry {i}: data of block {e} runs past the end of the file ({file_len} bytes)"
                    ),
                ));
            }
        }
        if let Some(what) = host.and_then(|h| metadata.overlap(h, used)) {
            return Err(corrupt(
                name,
                STRUCT_MAP,
                at,
                format!(
                    "entry {i}: data of block {e} at {} overlaps the {what}",
                    host.unwrap_or(0)
                ),
            ));
        }
        allocated += 1;
        let (w, bit) = ((e / 64) as usize, e % 64);
        if let Some(word) = seen.get_mut(w) {
            if *word & (1 << bit) != 0 {
                duplicates += 1;
            }
            *word |= 1 << bit;
        }
    }
    Ok((allocated, duplicates))
}

impl VdiImage {
    /// What block `i` holds, with the host offset of its first byte.
    fn block(&self, i: u64) -> MapKind {
        match usize::try_from(i).ok().and_then(|i| self.map.get(i)) {
            None | Some(&UNALLOCATED) => MapKind::Unallocated,
            Some(&DISCARDED) => MapKind::Zero,
            // Checked at open: e < blocks_in_image and the data fits.
            Some(&e) => MapKind::Data {
                file: 0,
                host_offset: self.data_start + u64::from(e) * self.stride,
            },
        }
    }
}

impl DiskImage for VdiImage {
    fn info(&self) -> &DiskInfo {
        &self.info
    }

    fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let bs = self.block_size;
        let mut idx = guest_offset / bs;
        let within = guest_offset % bs;
        let first = self.block(idx);
        let kind = match first {
            MapKind::Data { file, host_offset } => MapKind::Data {
                file,
                host_offset: host_offset + within,
            },
            k => k,
        };
        // Extend over following blocks of the same kind (for data: the
        // next physical block must follow in the file).
        let mut len = bs - within;
        let mut prev = first;
        while len < max_len {
            idx += 1;
            let next = self.block(idx);
            // With block_extra the stride exceeds the block size, so data
            // blocks are never contiguous.
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
        (index == 0).then_some(self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    //! Against images made by qemu-img (required: a missing qemu-img fails
    //! the tests with a message), and hand-edited headers and block maps
    //! for each validation branch.
    // Test vectors are built from known-small values.
    #![allow(clippy::cast_possible_truncation)]

    use std::path::Path;
    use std::process::Command;

    use imgcheck_source::MemSource;
    use proptest::prelude::*;

    use super::*;
    use crate::deps::DependencyPolicy;
    use crate::disk::VirtualDisk;
    use crate::limits::Limits;

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("qemu-img is required for the VDI tests (apt-get install qemu-utils): {e}")
            });
        assert!(
            out.status.success(),
            "qemu-img {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// (VDI bytes, qemu-img's raw view) of a pattern disk of `size` bytes.
    fn make(dir: &Path, opts: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
        let raw = dir.join("p.raw");
        let mut d = vec![0u8; size];
        let mut x = 0x1234_5679_u32;
        for r in [
            0..4096,
            51_200..52_736,
            1 << 20..(2 << 20) + 512,
            size - 1024..size,
        ] {
            for b in &mut d[r.start.min(size)..r.end.min(size)] {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
        }
        std::fs::write(&raw, &d).unwrap();
        let img = dir.join("d.vdi");
        let out = dir.join("q.raw");
        let (raw_s, img_s, out_s) = (
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        qemu_img(&[
            "convert", "-f", "raw", "-O", "vdi", "-o", opts, raw_s, img_s,
        ]);
        qemu_img(&["convert", "-f", "vdi", "-O", "raw", img_s, out_s]);
        (std::fs::read(img).unwrap(), std::fs::read(out).unwrap())
    }

    fn open_with(bytes: Vec<u8>, limits: &Limits) -> Result<VirtualDisk, DiskError> {
        let ctx = OpenContext {
            source: Arc::new(MemSource::new("test.vdi", bytes)),
            limits,
            dependencies: DependencyPolicy::SameDirectory,
        };
        open(&ctx).map(VirtualDisk::new)
    }

    fn open_mem(bytes: Vec<u8>) -> Result<VirtualDisk, DiskError> {
        open_with(bytes, &Limits::default())
    }

    fn read_all(d: &VirtualDisk) -> Vec<u8> {
        let mut v = vec![0u8; d.virtual_size() as usize];
        d.read_at(0, &mut v).unwrap();
        v
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn le32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    /// The block map on the header, and a block's data on the block map or
    /// the header, are damage. qemu-img's image patched at the VDI header
    /// offsets (VirtualBox `VDIHEADER1PLUS`: offset_bmap at 0x154,
    /// offset_data at 0x158; block map entries are u32 LE).
    #[test]
    fn overlapping_metadata_is_corrupt() {
        let b0 = dynamic();
        let bmap = le32(&b0, 0x154);
        let data = le32(&b0, 0x158);
        assert!(bmap >= 0x1C8 && data > bmap, "qemu-img layout");
        let kind = |e: &DiskError| e.kind();
        // Block map at 0: on the header.
        let mut b = b0.clone();
        put32(&mut b, 0x154, 0);
        let e = open_mem(b).unwrap_err();
        assert!(e.to_string().contains("overlaps the VDI header"), "{e}");
        assert_eq!(kind(&e), imgcheck_source::ErrorKind::Corrupt);
        // Data area starting on the block map: block 0's data would be
        // the map itself.
        let mut b = b0.clone();
        put32(&mut b, 0x158, bmap);
        let e = open_mem(b).unwrap_err();
        assert!(e.to_string().contains("overlaps the VDI block map"), "{e}");
        assert_eq!(kind(&e), imgcheck_source::ErrorKind::Corrupt);
        // Data area at 0: on the header.
        let mut b = b0.clone();
        put32(&mut b, 0x158, 0);
        let e = open_mem(b).unwrap_err();
        assert!(e.to_string().contains("overlaps the VDI header"), "{e}");
    }

    fn dynamic() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), "static=off", 5 << 20).0
    }

    #[test]
    fn dynamic_and_static_match_qemu() {
        let dir = tempfile::tempdir().unwrap();
        for (opts, sub, ty) in [
            ("static=off", "dynamic", "normal"),
            ("static=on", "static", "fixed"),
        ] {
            // A size that is not whole blocks (and not whole sectors: qemu
            // rounds up to 512).
            let (img, reference) = make(dir.path(), opts, (6 << 20) + 1536);
            let d = open_mem(img).unwrap();
            assert_eq!(d.virtual_size(), reference.len() as u64);
            assert!(
                read_all(&d) == reference,
                "{opts}: bytes differ from qemu-img"
            );
            let info = d.info();
            assert_eq!(info.subformat.as_deref(), Some(sub));
            assert_eq!(info.cluster_size, Some(1 << 20));
            assert_eq!(info.format_specific["image-type"], ty);
            let mut buf = vec![0u8; 3000];
            d.read_at((1 << 20) - 1000, &mut buf).unwrap();
            assert_eq!(&buf[..], &reference[(1 << 20) - 1000..(1 << 20) + 2000]);
        }
    }

    #[test]
    fn long_runs_and_zero_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = make(dir.path(), "static=on", 8 << 20);
        let d = open_mem(img).unwrap();
        let m = d.map(0, 8 << 20).unwrap();
        assert!(matches!(m.kind, MapKind::Data { .. }));
        assert_eq!(m.len, 8 << 20, "a static image is one run");
        let mut b = dynamic();
        let bmap = le32(&b, 0x154) as usize;
        put32(&mut b, bmap + 4, DISCARDED);
        let d = open_mem(b).unwrap();
        assert_eq!(d.map(1 << 20, 1 << 20).unwrap().kind, MapKind::Zero);
        assert_eq!(d.map(3 << 20, 1 << 20).unwrap().kind, MapKind::Unallocated);
        assert!(read_all(&d)[1 << 20..2 << 20].iter().all(|&x| x == 0));
    }

    #[test]
    fn bad_signature_and_version() {
        let mut b = dynamic();
        b[0x40] ^= 1;
        let e = open_mem(b).unwrap_err();
        assert!(e.is_corrupt() && e.to_string().contains("signature"), "{e}");
        let mut b = dynamic();
        put32(&mut b, 0x44, 0x0001_0002);
        let e = open_mem(b).unwrap_err();
        assert!(
            matches!(&e, DiskError::Unsupported { what, .. } if what.contains("1.2")),
            "{e}"
        );
    }

    #[test]
    fn header_fields_are_checked() {
        let b0 = dynamic();
        for (off, v, what) in [
            (0x168, 4096, "sector size"),
            (0x178, 3 << 20, "block size"),
            (0x178, 1 << 30, "block size"),
            (0x180, 2, "blocks_in_image"),
            (0x154, 0x10_0000_u32.wrapping_mul(4096), "block map"),
            (0x158, 0xFFFF_FE00, "data offset"),
            (0x48, 16, "header_size"),
        ] {
            let mut b = b0.clone();
            put32(&mut b, off, v);
            let e = open_mem(b).unwrap_err();
            assert!(e.is_corrupt(), "{what}: {e}");
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn absurd_blocks_in_image_is_a_limit() {
        let mut b = dynamic();
        // 4 G blocks: a 16 GiB block map, refused before allocating.
        put32(&mut b, 0x180, u32::MAX);
        let e = open_mem(b.clone()).unwrap_err();
        assert!(matches!(e, DiskError::Limit { .. }), "{e}");
        let lim = Limits {
            max_table_bytes: 16,
            ..Limits::default()
        };
        let e = open_with(dynamic(), &lim).unwrap_err();
        assert!(matches!(e, DiskError::Limit { .. }), "{e}");
    }

    #[test]
    fn block_index_out_of_range_or_past_the_file() {
        let b0 = dynamic();
        let bmap = le32(&b0, 0x154) as usize;
        let mut b = b0.clone();
        put32(&mut b, bmap + 4, 5);
        let e = open_mem(b).unwrap_err().to_string();
        assert!(e.contains("past blocks_in_image"), "{e}");
        // In range, but the file does not hold that block (dynamic images
        // hold only the blocks written).
        let mut b = b0.clone();
        let alloc = le32(&b0, 0x184);
        assert!(alloc < 5);
        put32(&mut b, bmap + 12, 4);
        let e = open_mem(b).unwrap_err().to_string();
        assert!(e.contains("past the end of the file"), "{e}");
    }

    #[test]
    fn duplicate_mapping_reads_and_is_noted() {
        let mut b = dynamic();
        let bmap = le32(&b, 0x154) as usize;
        let first = le32(&b, bmap);
        assert_ne!(first, UNALLOCATED);
        put32(&mut b, bmap + 16, first);
        let d = open_mem(b).unwrap();
        assert_eq!(d.info().format_specific["duplicate-blocks"], 1);
        let all = read_all(&d);
        assert_eq!(all[4 << 20..5 << 20], all[..1 << 20]);
    }

    #[test]
    fn differencing_is_refused_naming_the_parent() {
        let b0 = dynamic();
        let mut b = b0.clone();
        put32(&mut b, 0x4C, TYPE_DIFF);
        b[0x1B8..0x1C8].copy_from_slice(&[0xAB; 16]);
        let e = open_mem(b).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, DiskError::Unsupported { .. }), "{s}");
        assert!(
            s.contains("differencing VDI") && s.contains("abababab-abab"),
            "{s}"
        );
        // A normal type with a parent UUID is differencing too (qemu
        // refuses it as well).
        let mut b = b0.clone();
        b[0x1A8] = 1;
        assert!(
            open_mem(b)
                .unwrap_err()
                .to_string()
                .contains("differencing VDI")
        );
        let mut b = b0;
        put32(&mut b, 0x4C, 9);
        assert!(matches!(
            open_mem(b).unwrap_err(),
            DiskError::Unsupported { .. }
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn truncation_never_panics(cut in 0usize..6 << 20) {
            static IMG: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
            let (b, reference) = IMG.get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                make(dir.path(), "static=off", 5 << 20)
            });
            crate::testutil::assert_cut_outcome(
                open_mem(b[..cut.min(b.len())].to_vec()),
                reference,
                1 << 20,
                u64::MAX,
            );
        }

        #[test]
        fn bit_flips_never_panic(flips in proptest::collection::vec((0usize..2048, 0u8..8), 1..16)) {
            static IMG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let mut b = IMG.get_or_init(dynamic).clone();
            // The header and block map live in the first KiBs.
            for (at, bit) in flips {
                b[at] ^= 1 << bit;
            }
            crate::testutil::assert_flip_outcome(open_mem(b), 256 << 10, 64 << 20);
        }
    }
}
