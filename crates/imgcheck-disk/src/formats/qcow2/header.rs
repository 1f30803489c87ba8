//! The qcow2 header and its extensions: parsed from the first cluster and
//! validated against qemu's own limits before anything is allocated.
//!
//! Layout (qemu `docs/interop/qcow2.txt`, big-endian): a 72-byte v2 header
//! or a v3 header of `header_length` (≥ 104, a multiple of 8) bytes, then
//! header extensions (`{type u32, len u32, data, pad to 8}`) up to the
//! backing file name or the end of cluster 0, then the backing file name.
//! Everything this module reads lies in cluster 0.

use imgcheck_source::{ByteSource, read_prefix};

use crate::error::{DiskError, corrupt, limit, unsupported};
use crate::limits::{
    Limits, QCOW2_MAX_BACKING_NAME, QCOW2_MAX_REFTABLE_BYTES, QCOW2_MAX_SNAPSHOTS, QCOW2_PREFIX,
};
use crate::parse::{Fields, Regions};

/// `QFI\xfb`.
pub(super) const MAGIC: u32 = 0x5146_49FB;
/// qemu's cluster size range: 512 B to 2 MiB.
pub(super) const MIN_CLUSTER_BITS: u32 = 9;
pub(super) const MAX_CLUSTER_BITS: u32 = 21;

/// Incompatible feature bits.
pub(super) const INCOMPAT_DIRTY: u64 = 1 << 0;
pub(super) const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub(super) const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub(super) const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub(super) const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1F;
/// Compatible: lazy refcounts.
pub(super) const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear: the external data file is a valid raw image.
pub(super) const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

const EXT_END: u32 = 0;
const EXT_FEATURE_TABLE: u32 = 0x6803_F857;
const EXT_DATA_FILE: u32 = 0x4441_5441;

pub(super) const STRUCT_HEADER: &str = "qcow2 header";
const STRUCT_EXT: &str = "qcow2 header extension";

/// How compressed clusters are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    /// Raw deflate (no zlib header), 4 KiB window.
    Zlib,
    /// One or more zstd frames.
    Zstd,
}

/// The validated header fields the reader needs.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// Guest size in bytes (rounded down to whole sectors, as qemu does).
    pub size: u64,
    pub l1_size: u32,
    pub l1_offset: u64,
    pub incompatible: u64,
    pub compatible: u64,
    pub refcount_order: u32,
    pub compression: Compression,
    pub backing_file: Option<String>,
    pub data_file: Option<String>,
    /// Header cluster, L1 table, refcount table and snapshot table: what an
    /// L2 table must not overlap.
    pub metadata: Regions,
}

impl Header {
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }
}

/// Text of a header string (not NUL-terminated; qemu stops at a NUL).
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or(b)).into_owned()
}

/// Cluster 0 as far as it was read, with reads beyond the prefix going to
/// the source (bounded by the cluster size, at most 2 MiB).
struct Cluster0<'a> {
    src: &'a dyn ByteSource,
    prefix: Vec<u8>,
    /// min(cluster size, file length): nothing past it is header.
    end: u64,
}

impl Cluster0<'_> {
    fn bytes(&self, off: u64, len: u64, structure: &str) -> Result<Vec<u8>, DiskError> {
        let stop = off
            .checked_add(len)
            .filter(|&e| e <= self.end)
            .ok_or_else(|| {
                corrupt(
                    self.src.name(),
                    structure,
                    off,
                    format!(
                        "{len} bytes at offset {off} run past the first cluster or the end of the file ({} bytes)",
                        self.end
                    ),
                )
            })?;
        // Both fit in usize: stop <= end <= 2 MiB.
        let (Ok(a), Ok(b)) = (usize::try_from(off), usize::try_from(stop)) else {
            return Err(corrupt(
                self.src.name(),
                structure,
                off,
                "offset out of range",
            ));
        };
        if let Some(s) = self.prefix.get(a..b) {
            return Ok(s.to_vec());
        }
        let mut v = vec![0u8; b - a];
        self.src.read_exact_at(off, &mut v)?;
        Ok(v)
    }
}

/// What the header extensions say (the backing format name, 0xe2792aca,
/// is not needed: the backing file is never opened).
#[derive(Debug, Default)]
struct Extensions {
    data_file: Option<String>,
    /// (type, bit, name) from the feature name table.
    features: Vec<(u8, u8, String)>,
}

/// Walks the extensions in `start..end` (both inside cluster 0), as qemu's
/// `qcow2_read_extensions` does: stop at type 0 or at `end`; an extension
/// whose data would cross `end` is corrupt.
fn extensions(c0: &Cluster0<'_>, start: u64, end: u64) -> Result<Extensions, DiskError> {
    let name = c0.src.name();
    let mut ext = Extensions::default();
    let mut off = start;
    // Each step advances by at least 8 bytes, so this ends within
    // cluster_size / 8 steps.
    while off < end {
        let data_at = off.checked_add(8).filter(|&d| d <= end).ok_or_else(|| {
            corrupt(
                name,
                STRUCT_EXT,
                off,
                format!("extension header runs past the end of the extension area at {end}"),
            )
        })?;
        let h = c0.bytes(off, 8, STRUCT_EXT)?;
        let f = Fields::new(name, STRUCT_EXT, off, &h);
        let (ty, len) = (f.be32(0)?, u64::from(f.be32(4)?));
        if len > end - data_at {
            return Err(corrupt(
                name,
                STRUCT_EXT,
                off,
                format!(
                    "extension {ty:#010x} of {len} bytes runs past the end of the extension area at {end}"
                ),
            ));
        }
        match ty {
            EXT_END => break,
            EXT_DATA_FILE => ext.data_file = Some(text(&c0.bytes(data_at, len, STRUCT_EXT)?)),
            EXT_FEATURE_TABLE => {
                let t = c0.bytes(data_at, len, STRUCT_EXT)?;
                for e in t.chunks_exact(48) {
                    if let (Some(&ty), Some(&bit), Some(n)) = (e.first(), e.get(1), e.get(2..)) {
                        ext.features.push((ty, bit, text(n)));
                    }
                }
            }
            _ => {}
        }
        // len <= end - data_at <= 2 MiB: no overflow.
        off = (data_at + len + 7) & !7;
    }
    Ok(ext)
}

/// The fixed fields of the header (qcow2.txt "Header", bytes 0..=103),
/// before validation.
struct Fixed {
    version: u32,
    backing_offset: u64,
    backing_size: u64,
    cluster_bits: u32,
    raw_size: u64,
    crypt_method: u32,
    l1_size: u32,
    l1_offset: u64,
    refcount_offset: u64,
    refcount_clusters: u64,
    nb_snapshots: u64,
    snapshots_offset: u64,
    incompatible: u64,
    compatible: u64,
    autoclear: u64,
    refcount_order: u32,
    header_length: u64,
}

/// Reads and validates the header of `src`.
pub(super) fn parse(src: &dyn ByteSource, limits: &Limits) -> Result<Header, DiskError> {
    let name = src.name();
    let file_len = src.len();
    let mut prefix = vec![0u8; usize::try_from(file_len.min(QCOW2_PREFIX)).unwrap_or(0)];
    let got = read_prefix(src, 0, &mut prefix)?;
    prefix.truncate(got);
    let x = fixed_fields(name, file_len, &prefix)?;
    let cs = 1u64 << x.cluster_bits;
    // Everything below reads cluster 0 only.
    let c0 = Cluster0 {
        src,
        prefix,
        end: cs.min(file_len),
    };
    let compression = compression_type(&c0, &x)?;
    let ext_end = if x.backing_offset != 0 {
        x.backing_offset
    } else {
        cs
    };
    let exts = extensions(&c0, x.header_length, ext_end);
    refuse_unknown_features(name, x.incompatible, exts.as_ref().ok())?;
    let exts = exts?;
    let (size, metadata) = check_tables(name, file_len, &x, limits)?;
    let backing_file = backing_name(&c0, &x)?;
    if x.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 && x.incompatible & INCOMPAT_DATA_FILE == 0 {
        return Err(corrupt(
            name,
            STRUCT_HEADER,
            88,
            "the raw-external-data bit is set but the image has no external data file",
        ));
    }
    Ok(Header {
        version: x.version,
        cluster_bits: x.cluster_bits,
        size,
        l1_size: x.l1_size,
        l1_offset: x.l1_offset,
        incompatible: x.incompatible,
        compatible: x.compatible,
        refcount_order: x.refcount_order,
        compression,
        backing_file,
        data_file: exts.data_file,
        metadata,
    })
}

/// Magic, version, the fixed fields, and the checks that need nothing else
/// (cluster size, header length, encryption, backing name offset).
fn fixed_fields(name: &str, file_len: u64, h: &[u8]) -> Result<Fixed, DiskError> {
    let bad = |off: u64, why: String| corrupt(name, STRUCT_HEADER, off, why);
    if h.len() < 8 {
        return Err(bad(
            0,
            format!("the file is {file_len} bytes, too short for a qcow2 header"),
        ));
    }
    let f = Fields::new(name, STRUCT_HEADER, 0, h);
    let magic = f.be32(0)?;
    if magic != MAGIC {
        return Err(bad(
            0,
            format!("magic is {magic:#010x}, not {MAGIC:#010x} (\"QFI\\xfb\")"),
        ));
    }
    let version = f.be32(4)?;
    if version != 2 && version != 3 {
        return Err(unsupported(
            name,
            format!("qcow2 version {version} (only versions 2 and 3 exist)"),
            None,
        ));
    }
    let min_len = if version == 2 { 72 } else { 104 };
    if h.len() < min_len {
        return Err(bad(
            0,
            format!(
                "the file is {file_len} bytes, shorter than the {min_len}-byte qcow2 v{version} header"
            ),
        ));
    }
    let v3 = version == 3;
    let x = Fixed {
        version,
        backing_offset: f.be64(8)?,
        backing_size: u64::from(f.be32(16)?),
        cluster_bits: f.be32(20)?,
        raw_size: f.be64(24)?,
        crypt_method: f.be32(32)?,
        l1_size: f.be32(36)?,
        l1_offset: f.be64(40)?,
        refcount_offset: f.be64(48)?,
        refcount_clusters: u64::from(f.be32(56)?),
        nb_snapshots: u64::from(f.be32(60)?),
        snapshots_offset: f.be64(64)?,
        incompatible: if v3 { f.be64(72)? } else { 0 },
        compatible: if v3 { f.be64(80)? } else { 0 },
        autoclear: if v3 { f.be64(88)? } else { 0 },
        refcount_order: if v3 { f.be32(96)? } else { 4 },
        header_length: if v3 { u64::from(f.be32(100)?) } else { 72 },
    };
    let cluster_bits = x.cluster_bits;
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(bad(
            20,
            format!(
                "cluster_bits is {cluster_bits}; qcow2 (as qemu reads it) allows {MIN_CLUSTER_BITS} (512 B) to {MAX_CLUSTER_BITS} (2 MiB)"
            ),
        ));
    }
    let cs = 1u64 << cluster_bits;
    let header_length = x.header_length;
    if v3 && (header_length < 104 || !header_length.is_multiple_of(8)) {
        return Err(bad(
            100,
            format!("header_length is {header_length}; v3 needs at least 104 and a multiple of 8"),
        ));
    }
    if header_length > cs {
        return Err(bad(
            100,
            format!("header_length {header_length} exceeds the cluster size {cs}"),
        ));
    }
    if x.crypt_method != 0 {
        let crypt_method = x.crypt_method;
        let how = match crypt_method {
            1 => "AES-CBC",
            2 => "LUKS",
            _ => "an unknown method",
        };
        return Err(unsupported(
            name,
            "encrypted qcow2",
            Some(&format!(
                "the image is encrypted with {how} (crypt_method {crypt_method}); decrypt it first with `qemu-img convert --object secret,... --image-opts ... -O qcow2`"
            )),
        ));
    }
    if x.backing_offset > cs {
        return Err(bad(
            8,
            format!(
                "backing_file_offset {} lies past the first cluster ({cs} bytes)",
                x.backing_offset
            ),
        ));
    }
    Ok(x)
}

/// The compression type byte (v3 with a long header) and its agreement
/// with the incompatible bit.
fn compression_type(c0: &Cluster0<'_>, x: &Fixed) -> Result<Compression, DiskError> {
    let name = c0.src.name();
    let ctype = if x.header_length > 104 {
        c0.bytes(104, 1, STRUCT_HEADER)?
            .first()
            .copied()
            .unwrap_or(0)
    } else {
        0
    };
    let compression = match ctype {
        0 => Compression::Zlib,
        1 => Compression::Zstd,
        t => {
            return Err(unsupported(
                name,
                format!("qcow2 compression type {t} (only 0 zlib and 1 zstd exist)"),
                None,
            ));
        }
    };
    if (compression != Compression::Zlib) != (x.incompatible & INCOMPAT_COMPRESSION != 0) {
        return Err(corrupt(
            name,
            STRUCT_HEADER,
            72,
            format!(
                "compression type {ctype} does not agree with the compression-type incompatible bit (bit 3 must be set exactly when the type is not zlib)"
            ),
        ));
    }
    Ok(compression)
}

/// Refuses incompatible feature bits imgcheck does not know, naming them
/// from the feature name table when the image has one.
fn refuse_unknown_features(
    name: &str,
    incompatible: u64,
    exts: Option<&Extensions>,
) -> Result<(), DiskError> {
    let unknown = incompatible & !INCOMPAT_KNOWN;
    if unknown == 0 {
        return Ok(());
    }
    let feats = exts.map(|e| e.features.as_slice()).unwrap_or(&[]);
    let bits: Vec<String> = (0..64u8)
        .filter(|b| unknown & (1u64 << b) != 0)
        .map(
            |b| match feats.iter().find(|(t, fb, _)| *t == 0 && *fb == b) {
                Some((_, _, n)) => format!("{b} ({n:?})"),
                None => b.to_string(),
            },
        )
        .collect();
    Err(unsupported(
        name,
        format!("qcow2 incompatible feature bit(s) {}", bits.join(", ")),
        Some("a newer qemu-img may convert it: `qemu-img convert -O qcow2 -o compat=1.1`"),
    ))
}

/// The checks on sizes and tables: refcount order and table, snapshots,
/// virtual size, L1 size; then where the tables lie: inside the file and
/// not on top of each other or the header (qemu's QCOW2_OL_MAIN_HEADER,
/// _ACTIVE_L1, _REFCOUNT_TABLE, _SNAPSHOT_TABLE). Returns the virtual size
/// and the metadata regions.
fn check_tables(
    name: &str,
    file_len: u64,
    x: &Fixed,
    limits: &Limits,
) -> Result<(u64, Regions), DiskError> {
    let bad = |off: u64, why: String| corrupt(name, STRUCT_HEADER, off, why);
    let cluster_bits = x.cluster_bits;
    let cs = 1u64 << cluster_bits;
    if x.incompatible & INCOMPAT_EXTL2 != 0 && cluster_bits < 14 {
        return Err(bad(
            20,
            format!(
                "extended L2 entries need clusters of at least 16 KiB (cluster_bits 14); this image has cluster_bits {cluster_bits}"
            ),
        ));
    }
    if x.refcount_order > 6 {
        return Err(bad(
            96,
            format!(
                "refcount_order is {}; at most 6 (64-bit refcounts)",
                x.refcount_order
            ),
        ));
    }
    if x.refcount_clusters == 0 {
        return Err(bad(56, "the image has no refcount table".into()));
    }
    let max_rc = QCOW2_MAX_REFTABLE_BYTES >> cluster_bits;
    if x.refcount_clusters > max_rc {
        return Err(limit(
            name,
            STRUCT_HEADER,
            56,
            "refcount_table_clusters",
            x.refcount_clusters,
            max_rc,
        ));
    }
    let refcount_bytes = x.refcount_clusters * cs;
    check_table(
        name,
        file_len,
        cs,
        48,
        "refcount table",
        x.refcount_offset,
        refcount_bytes,
    )?;
    if x.nb_snapshots > QCOW2_MAX_SNAPSHOTS {
        return Err(limit(
            name,
            STRUCT_HEADER,
            60,
            "nb_snapshots",
            x.nb_snapshots,
            QCOW2_MAX_SNAPSHOTS,
        ));
    }
    if !x.snapshots_offset.is_multiple_of(cs) {
        return Err(bad(
            64,
            format!(
                "snapshot table offset {} is not cluster aligned",
                x.snapshots_offset
            ),
        ));
    }
    // Virtual size: qemu counts whole sectors only.
    let size = x.raw_size & !511;
    if size > limits.max_virtual_size {
        return Err(limit(
            name,
            STRUCT_HEADER,
            24,
            "virtual size (bytes)",
            size,
            limits.max_virtual_size,
        ));
    }
    let l1_bytes = u64::from(x.l1_size) * 8;
    if l1_bytes > limits.max_table_bytes {
        return Err(limit(
            name,
            STRUCT_HEADER,
            36,
            "L1 table size (bytes)",
            l1_bytes,
            limits.max_table_bytes,
        ));
    }
    // One L1 entry maps cs * (cs / entry_size) bytes: at most 2^39.
    let entry_bytes = if x.incompatible & INCOMPAT_EXTL2 != 0 {
        16
    } else {
        8
    };
    let per_l1 = cs * (cs / entry_bytes);
    let needed = size.div_ceil(per_l1);
    if u64::from(x.l1_size) < needed {
        return Err(bad(
            36,
            format!(
                "L1 table has {} entries, too few for the virtual size {size} (needs {needed})",
                x.l1_size
            ),
        ));
    }
    check_table(name, file_len, cs, 40, "L1 table", x.l1_offset, l1_bytes)?;
    let metadata = claim_metadata(name, x, refcount_bytes, l1_bytes)?;
    Ok((size, metadata))
}

/// The header cluster and the tables the header places, none on another
/// (qemu's QCOW2_OL_MAIN_HEADER, _ACTIVE_L1, _REFCOUNT_TABLE,
/// _SNAPSHOT_TABLE).
fn claim_metadata(
    name: &str,
    x: &Fixed,
    refcount_bytes: u64,
    l1_bytes: u64,
) -> Result<Regions, DiskError> {
    let cs = 1u64 << x.cluster_bits;
    let mut metadata = Regions::new();
    metadata.claim(name, STRUCT_HEADER, 0, cs)?;
    metadata.claim(
        name,
        "qcow2 refcount table",
        x.refcount_offset,
        refcount_bytes,
    )?;
    metadata.claim(name, "qcow2 L1 table", x.l1_offset, l1_bytes)?;
    if x.nb_snapshots > 0 {
        // Its length needs the table parsed; it owns at least its first
        // cluster (tables are allocated in whole clusters).
        metadata.claim(name, "qcow2 snapshot table", x.snapshots_offset, cs)?;
    }
    Ok(metadata)
}

/// The backing file name, if the header names one (reported, never
/// opened).
fn backing_name(c0: &Cluster0<'_>, x: &Fixed) -> Result<Option<String>, DiskError> {
    let name = c0.src.name();
    let (backing_offset, backing_size) = (x.backing_offset, x.backing_size);
    if backing_offset == 0 {
        return Ok(None);
    }
    let cs = 1u64 << x.cluster_bits;
    // fixed_fields checked backing_offset <= cs.
    let room = QCOW2_MAX_BACKING_NAME.min(cs - backing_offset);
    if backing_size > QCOW2_MAX_BACKING_NAME {
        return Err(limit(
            name,
            STRUCT_HEADER,
            16,
            "backing file name length",
            backing_size,
            QCOW2_MAX_BACKING_NAME,
        ));
    }
    if backing_size > room {
        return Err(corrupt(
            name,
            STRUCT_HEADER,
            16,
            format!(
                "backing file name of {backing_size} bytes at {backing_offset} runs past the first cluster"
            ),
        ));
    }
    Ok(Some(text(&c0.bytes(
        backing_offset,
        backing_size,
        STRUCT_HEADER,
    )?))
    .filter(|s| !s.is_empty()))
}

/// A table named by the header: cluster aligned and inside the file.
fn check_table(
    name: &str,
    file_len: u64,
    cs: u64,
    field: u64,
    what: &str,
    offset: u64,
    bytes: u64,
) -> Result<(), DiskError> {
    if !offset.is_multiple_of(cs) {
        return Err(corrupt(
            name,
            STRUCT_HEADER,
            field,
            format!("{what} offset {offset} is not aligned to the cluster size {cs}"),
        ));
    }
    match offset.checked_add(bytes) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(corrupt(
            name,
            STRUCT_HEADER,
            field,
            format!(
                "{what} ({bytes} bytes at {offset}) runs past the end of the file ({file_len} bytes)"
            ),
        )),
    }
}
