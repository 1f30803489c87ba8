//! qcow2 (versions 2 and 3): QEMU's copy-on-write format, the usual cloud
//! image format.
//!
//! Layout (qemu `docs/interop/qcow2.txt`): a header in cluster 0
//! (`header.rs`), a contiguous L1 table of u64 entries naming L2 tables, and
//! one-cluster L2 tables whose entries say where each guest cluster lives:
//! a host cluster (standard), compressed bytes somewhere in the file, "reads
//! as zeros" (v3 zero flag, possibly with a preallocated host cluster), or
//! nowhere (unallocated). With extended L2 entries (v3, incompatible bit 4)
//! each entry adds a 64-bit bitmap splitting the cluster into 32
//! subclusters, each allocated, zero or unallocated on its own.
//!
//! This module owns the L1/L2 walk ([`Qcow2Image::map`], which merges
//! neighbouring clusters of one kind into long runs so conversion does few
//! large reads) and compressed clusters (`compressed.rs`). It does not read
//! refcounts or snapshots: neither changes what the guest sees.
//!
//! Bounds, all checked before use: the header against qemu's limits (see
//! `header.rs`); the L1 table is read whole at open, at most
//! `Limits::max_table_bytes`; L2 tables are read on demand and kept in a
//! cache of `Limits::table_cache_entries` tables behind a mutex (the image
//! is shared between conversion threads); every L1/L2 entry is checked when
//! used (reserved bits, alignment, host range inside the file), and a bad
//! one is a corrupt error naming the table's offset and the entry index.
//!
//! Referenced files are never opened. An overlay's backing file is reported
//! (`DiskInfo::backing_file` and an external reference) and its unallocated
//! clusters read as zeros: **reading an overlay alone gives its own clusters
//! only**, which is what `qemu-img convert` gives with `"backing": null`.
//! An external data file (incompatible bit 2) holds all guest data, so such
//! an image is refused with [`DiskError::ExternalReference`] naming it.
//! Encrypted images are refused as unsupported.
//!
//! Not read, because they do not change the guest bytes: refcounts,
//! internal snapshots, persistent bitmaps (so `format_specific` has no
//! "bitmaps" list where qemu-img shows one) and the backing format name.

mod compressed;
mod header;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use imgcheck_source::{ByteSource, read_vec};
use serde_json::json;

use self::compressed::Decoded;
use self::header::{
    COMPAT_LAZY_REFCOUNTS, Compression, Header, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE,
    INCOMPAT_DIRTY,
};
use crate::cache::Lru;
use crate::context::OpenContext;
use crate::disk::{DiskImage, DiskInfo, ExternalRef, MapKind, Mapping};
use crate::error::{DiskError, corrupt};
use crate::format::Format;
use crate::parse::Regions;

const STRUCT_L1: &str = "qcow2 L1 table";
const STRUCT_L2: &str = "qcow2 L2 table";

/// L1 entry: bits 9..=55 are the L2 table offset.
const L1_OFFSET_MASK: u64 = 0x00FF_FFFF_FFFF_FE00;
/// L1 entry bits that must be zero (0..=8, 56..=62).
const L1_RESERVED: u64 = 0x7F00_0000_0000_01FF;
/// Standard L2 entry: bits 9..=55 are the host cluster offset.
const L2_OFFSET_MASK: u64 = 0x00FF_FFFF_FFFF_FE00;
/// Standard L2 entry bits that must be zero (1..=8, 56..=61).
const L2_RESERVED: u64 = 0x3F00_0000_0000_01FE;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

/// Guest bytes stored verbatim at `host` in the image file.
fn data(host: u64) -> MapKind {
    MapKind::Data {
        file: 0,
        host_offset: host,
    }
}

/// An L2 table as read from the file, decoded to host order.
type Table = Arc<Vec<u64>>;

/// An opened qcow2 image.
#[derive(Debug)]
pub struct Qcow2Image {
    source: Arc<dyn ByteSource>,
    info: DiskInfo,
    cluster_bits: u32,
    /// log2 of the entries per L2 table.
    l2_bits: u32,
    extended: bool,
    /// v2 has no zero flag: a set bit 0 is corrupt there.
    v3: bool,
    compression: Compression,
    l1: Vec<u64>,
    l1_offset: u64,
    /// Header, L1, refcount and snapshot tables: no L2 table may overlap
    /// them.
    metadata: Regions,
    file_len: u64,
    l2_cache: Mutex<Lru<u64, Table>>,
    decoded: Mutex<Lru<u64, Decoded>>,
}

/// Opens `ctx.source` as qcow2.
pub fn open(ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>, DiskError> {
    let src = ctx.source.as_ref();
    let name = ctx.name();
    let h: Header = header::parse(src, ctx.limits)?;
    if h.incompatible & INCOMPAT_DATA_FILE != 0 {
        return Err(DiskError::ExternalReference {
            file: name.to_owned(),
            kind: "external data file".into(),
            name: h
                .data_file
                .clone()
                .unwrap_or_else(|| "(not named in the image)".into()),
            why: "a qcow2 with an external data file keeps all guest data there; imgcheck never opens it".into(),
        });
    }
    let l1_bytes = u64::from(h.l1_size) * 8;
    let raw = read_vec(src, h.l1_offset, l1_bytes, ctx.limits.max_table_bytes)?;
    let l1: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| c.try_into().map_or(0, u64::from_be_bytes))
        .collect();

    let v3 = h.version == 3;
    let cs = 1u64 << h.cluster_bits;
    let mut info = DiskInfo::new(Format::Qcow2, h.size);
    info.subformat = Some(if v3 { "v3" } else { "v2" }.into());
    info.cluster_size = Some(cs);
    info.dirty = h.incompatible & INCOMPAT_DIRTY != 0;
    if let Some(b) = &h.backing_file {
        info.backing_file = Some(b.clone());
        info.external_refs.push(ExternalRef {
            // The same kind every format uses; the backing format name
            // (extension 0xe2792aca) is parsed but not needed to read.
            kind: "backing file".into(),
            name: b.clone(),
            opened: false,
        });
    }
    // Keys and types as `qemu-img info --output=json` prints them.
    let fs = &mut info.format_specific;
    fs.insert("compat".into(), json!(if v3 { "1.1" } else { "0.10" }));
    fs.insert(
        "compression-type".into(),
        json!(match h.compression {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }),
    );
    if v3 {
        fs.insert(
            "lazy-refcounts".into(),
            json!(h.compatible & COMPAT_LAZY_REFCOUNTS != 0),
        );
    }
    fs.insert("refcount-bits".into(), json!(1u64 << h.refcount_order));
    if v3 {
        fs.insert(
            "corrupt".into(),
            json!(h.incompatible & INCOMPAT_CORRUPT != 0),
        );
        fs.insert("extended-l2".into(), json!(h.extended_l2()));
    }

    let extended = h.extended_l2();
    Ok(Arc::new(Qcow2Image {
        source: ctx.source.clone(),
        info,
        cluster_bits: h.cluster_bits,
        l2_bits: h.cluster_bits - if extended { 4 } else { 3 },
        extended,
        v3,
        compression: h.compression,
        l1,
        l1_offset: h.l1_offset,
        metadata: h.metadata.clone(),
        file_len: src.len(),
        l2_cache: Mutex::new(Lru::new(ctx.limits.table_cache_entries)),
        decoded: Mutex::new(Lru::new(4)),
    }))
}

impl Qcow2Image {
    fn name(&self) -> &str {
        self.source.name()
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The L2 table for L1 index `l1_idx`, or `None` when unallocated, with
    /// its host offset.
    fn l2_table(&self, l1_idx: u64) -> Result<Option<(u64, Table)>, DiskError> {
        let at = self.l1_offset.saturating_add(l1_idx.saturating_mul(8));
        let Some(&e) = usize::try_from(l1_idx).ok().and_then(|i| self.l1.get(i)) else {
            // Past the L1 table: only reachable past the virtual size,
            // which the open checks exclude; read as unallocated.
            return Ok(None);
        };
        if e & L1_RESERVED != 0 {
            return Err(corrupt(
                self.name(),
                STRUCT_L1,
                at,
                format!("entry {l1_idx} ({e:#018x}) has reserved bits set"),
            ));
        }
        let off = e & L1_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        let cs = self.cluster_size();
        if !off.is_multiple_of(cs) {
            return Err(corrupt(
                self.name(),
                STRUCT_L1,
                at,
                format!("entry {l1_idx}: L2 table offset {off:#x} is not cluster aligned"),
            ));
        }
        if off.checked_add(cs).is_none_or(|end| end > self.file_len) {
            return Err(corrupt(
                self.name(),
                STRUCT_L1,
                at,
                format!(
                    "entry {l1_idx}: L2 table at {off:#x} runs past the end of the file ({} bytes)",
                    self.file_len
                ),
            ));
        }
        if let Some(t) = self.lock_l2().get(off) {
            return Ok(Some((off, t)));
        }
        // qemu's QCOW2_OL_ACTIVE_L2 rule: an L2 table on the header or
        // another table would be read as garbage.
        self.metadata.check(self.name(), STRUCT_L2, off, cs)?;
        let raw = read_vec(self.source.as_ref(), off, cs, cs)?;
        let t: Table = Arc::new(
            raw.chunks_exact(8)
                .map(|c| c.try_into().map_or(0, u64::from_be_bytes))
                .collect(),
        );
        self.lock_l2().put(off, t.clone());
        Ok(Some((off, t)))
    }

    fn lock_l2(&self) -> std::sync::MutexGuard<'_, Lru<u64, Table>> {
        // A panic elsewhere while holding the lock leaves a usable cache.
        self.l2_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What guest byte `pos` is and for how many bytes (within its cluster)
    /// that holds. `table` is the L2 table covering `pos`.
    fn segment(&self, l2_off: u64, table: &[u64], pos: u64) -> Result<(MapKind, u64), DiskError> {
        let cs = self.cluster_size();
        let within = pos & (cs - 1);
        let idx = (pos >> self.cluster_bits) & ((1u64 << self.l2_bits) - 1);
        let slot = if self.extended { idx * 2 } else { idx };
        let get = |i: u64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| table.get(i))
                .copied()
                .unwrap_or(0)
        };
        let e = get(slot);
        let bitmap = if self.extended { get(slot + 1) } else { 0 };
        let bad = |why: String| {
            corrupt(
                self.name(),
                STRUCT_L2,
                l2_off,
                format!("entry {idx} ({e:#018x}): {why}"),
            )
        };
        if e & L2_COMPRESSED != 0 {
            if bitmap != 0 {
                return Err(bad(format!(
                    "compressed cluster with a non-zero subcluster bitmap {bitmap:#018x}"
                )));
            }
            self.compressed_extent(e)
                .map_err(|why| bad(why.to_owned()))?;
            return Ok((MapKind::Encoded, cs - within));
        }
        if e & L2_RESERVED != 0 {
            return Err(bad("reserved bits are set".into()));
        }
        let host = e & L2_OFFSET_MASK;
        if !host.is_multiple_of(cs) {
            return Err(bad(format!("host offset {host:#x} is not cluster aligned")));
        }
        // Guest bytes of this cluster that exist (the last cluster may be
        // partly past the virtual size).
        let cluster_start = pos - within;
        let used = cs.min(self.info.virtual_size.saturating_sub(cluster_start));
        let check_host = || {
            if host.checked_add(used).is_none_or(|end| end > self.file_len) {
                Err(bad(format!(
                    "data cluster at {host:#x} runs past the end of the file ({} bytes)",
                    self.file_len
                )))
            } else {
                Ok(())
            }
        };
        if !self.extended {
            if e & L2_ZERO != 0 {
                if !self.v3 {
                    return Err(bad("zero flag in a version 2 image".into()));
                }
                return Ok((MapKind::Zero, cs - within));
            }
            if host == 0 {
                return Ok((MapKind::Unallocated, cs - within));
            }
            check_host()?;
            return Ok((data(host + within), cs - within));
        }
        if e & L2_ZERO != 0 {
            return Err(bad("bit 0 is reserved with extended L2 entries".into()));
        }
        let (alloc, zero) = (bitmap & 0xFFFF_FFFF, bitmap >> 32);
        if alloc & zero != 0 {
            return Err(bad(format!(
                "subclusters both allocated and zero (bitmap {bitmap:#018x})"
            )));
        }
        if host == 0 && alloc != 0 {
            return Err(bad(format!(
                "allocated subclusters without a host cluster (bitmap {bitmap:#018x})"
            )));
        }
        if alloc != 0 {
            check_host()?;
        }
        let sc_size = cs / 32;
        let sc = within / sc_size;
        let state = |i: u64| (alloc >> i & 1, zero >> i & 1);
        let first = state(sc);
        let mut j = sc + 1;
        while j < 32 && state(j) == first {
            j += 1;
        }
        let len = j * sc_size - within;
        let kind = match first {
            (1, _) => data(host + within),
            (_, 1) => MapKind::Zero,
            _ => MapKind::Unallocated,
        };
        Ok((kind, len))
    }

    /// Host byte offset and length to read of a compressed L2 entry; the
    /// length is clamped at the end of the file (the last sector may be
    /// partial).
    fn compressed_extent(&self, e: u64) -> Result<(u64, u64), &'static str> {
        let shift = 62 - (self.cluster_bits - 8);
        let off = e & ((1u64 << shift) - 1);
        let sectors = ((e >> shift) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        if off >> 56 != 0 {
            return Err("compressed data offset uses bits above 55");
        }
        if off >= self.file_len {
            return Err("compressed data starts past the end of the file");
        }
        let len = (sectors * 512 - (off & 511)).min(self.file_len - off);
        Ok((off, len))
    }

    /// The L2 entry of the (compressed) cluster holding `pos`.
    fn entry_at(&self, pos: u64) -> Result<(u64, u64), DiskError> {
        let l1_idx = pos >> (self.cluster_bits + self.l2_bits);
        let idx = (pos >> self.cluster_bits) & ((1u64 << self.l2_bits) - 1);
        let slot = if self.extended { idx * 2 } else { idx };
        let e = match self.l2_table(l1_idx)? {
            Some((_, t)) => usize::try_from(slot)
                .ok()
                .and_then(|i| t.get(i))
                .copied()
                .unwrap_or(0),
            None => 0,
        };
        Ok((idx, e))
    }
}

impl DiskImage for Qcow2Image {
    fn info(&self) -> &DiskInfo {
        &self.info
    }

    fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let size = self.info.virtual_size;
        let end = guest_offset.saturating_add(max_len).min(size);
        let table_bits = self.cluster_bits + self.l2_bits;
        let mut run: Option<(MapKind, u64)> = None;
        let mut pos = guest_offset;
        'tables: while pos < end {
            let l1_idx = pos >> table_bits;
            let table_end = ((l1_idx + 1) << table_bits).min(end);
            let table = match self.l2_table(l1_idx) {
                Ok(t) => t,
                // Report the run found so far; the error comes back when
                // the caller asks for the damaged part.
                Err(_) if run.is_some() => break,
                Err(e) => return Err(e),
            };
            while pos < table_end {
                let (kind, len) = match &table {
                    None => (MapKind::Unallocated, table_end - pos),
                    Some((off, t)) => match self.segment(*off, t, pos) {
                        Ok(s) => s,
                        Err(_) if run.is_some() => break 'tables,
                        Err(e) => return Err(e),
                    },
                };
                let len = len.min(table_end - pos);
                match &mut run {
                    None => run = Some((kind, len)),
                    Some((k, l)) if k.continues(*l, kind) => *l += len,
                    Some(_) => break 'tables,
                }
                pos += len;
            }
        }
        let (kind, len) = run.unwrap_or((MapKind::Unallocated, 1));
        Ok(Mapping {
            kind,
            len: len.max(1),
        })
    }

    fn host_file(&self, index: usize) -> Option<&dyn ByteSource> {
        (index == 0).then_some(self.source.as_ref())
    }

    fn read_encoded(&self, guest_offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        compressed::read(self, guest_offset, buf)
    }
}
