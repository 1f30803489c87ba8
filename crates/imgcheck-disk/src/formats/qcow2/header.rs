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
use crate::limits::Limits;

/// `QFI\xfb`.
pub(super) const MAGIC: u32 = 0x5146_49FB;
/// qemu's cluster size range: 512 B to 2 MiB.
pub(super) const MIN_CLUSTER_BITS: u32 = 9;
pub(super) const MAX_CLUSTER_BITS: u32 = 21;
/// qemu: a backing file name is at most 1023 bytes.
const MAX_BACKING_NAME: u64 = 1023;
/// qemu's QCOW_MAX_REFTABLE_SIZE: the refcount table is at most 8 MiB.
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// qemu's QCOW_MAX_SNAPSHOTS.
const MAX_SNAPSHOTS: u64 = 65536;
/// How much of cluster 0 is read in one go; qemu's headers, extensions and
/// backing name fit in a few hundred bytes, so more is read only if a
/// (hostile or unusual) header points further.
const PREFIX: u64 = 64 << 10;

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
}

impl Header {
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }
}

fn be32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn be64(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
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
        let (ty, len) = (be32(&h, 0), u64::from(be32(&h, 4)));
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

/// Reads and validates the header of `src`.
pub(super) fn parse(src: &dyn ByteSource, limits: &Limits) -> Result<Header, DiskError> {
    let name = src.name();
    let file_len = src.len();
    let bad = |off: u64, why: String| corrupt(name, STRUCT_HEADER, off, why);

    let mut prefix = vec![0u8; usize::try_from(file_len.min(PREFIX)).unwrap_or(0)];
    let got = read_prefix(src, 0, &mut prefix)?;
    prefix.truncate(got);
    let h = &prefix;
    if h.len() < 8 {
        return Err(bad(
            0,
            format!("the file is {file_len} bytes, too short for a qcow2 header"),
        ));
    }
    let magic = be32(h, 0);
    if magic != MAGIC {
        return Err(bad(
            0,
            format!("magic is {magic:#010x}, not {MAGIC:#010x} (\"QFI\\xfb\")"),
        ));
    }
    let version = be32(h, 4);
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
    let backing_offset = be64(h, 8);
    let backing_size = u64::from(be32(h, 16));
    let cluster_bits = be32(h, 20);
    let raw_size = be64(h, 24);
    let crypt_method = be32(h, 32);
    let l1_size = be32(h, 36);
    let l1_offset = be64(h, 40);
    let refcount_offset = be64(h, 48);
    let refcount_clusters = u64::from(be32(h, 56));
    let nb_snapshots = u64::from(be32(h, 60));
    let snapshots_offset = be64(h, 64);

    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(bad(
            20,
            format!(
                "cluster_bits is {cluster_bits}; qcow2 (as qemu reads it) allows {MIN_CLUSTER_BITS} (512 B) to {MAX_CLUSTER_BITS} (2 MiB)"
            ),
        ));
    }
    let cs = 1u64 << cluster_bits;
    let (incompatible, compatible, autoclear, refcount_order, header_length) = if version == 2 {
        (0, 0, 0, 4, 72)
    } else {
        (
            be64(h, 72),
            be64(h, 80),
            be64(h, 88),
            be32(h, 96),
            u64::from(be32(h, 100)),
        )
    };
    if version == 3 && (header_length < 104 || !header_length.is_multiple_of(8)) {
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
    if crypt_method != 0 {
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
    if backing_offset > cs {
        return Err(bad(
            8,
            format!(
                "backing_file_offset {backing_offset} lies past the first cluster ({cs} bytes)"
            ),
        ));
    }
    // Everything below reads cluster 0 only.
    let c0 = Cluster0 {
        src,
        prefix: prefix.clone(),
        end: cs.min(file_len),
    };
    let ctype = if header_length > 104 {
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
    if (compression != Compression::Zlib) != (incompatible & INCOMPAT_COMPRESSION != 0) {
        return Err(bad(
            72,
            format!(
                "compression type {ctype} does not agree with the compression-type incompatible bit (bit 3 must be set exactly when the type is not zlib)"
            ),
        ));
    }
    let ext_end = if backing_offset != 0 {
        backing_offset
    } else {
        cs
    };
    let exts = extensions(&c0, header_length, ext_end);
    let unknown = incompatible & !INCOMPAT_KNOWN;
    if unknown != 0 {
        let feats = exts.as_ref().map(|e| e.features.as_slice()).unwrap_or(&[]);
        let bits: Vec<String> = (0..64u8)
            .filter(|b| unknown & (1u64 << b) != 0)
            .map(
                |b| match feats.iter().find(|(t, fb, _)| *t == 0 && *fb == b) {
                    Some((_, _, n)) => format!("{b} ({n:?})"),
                    None => b.to_string(),
                },
            )
            .collect();
        return Err(unsupported(
            name,
            format!("qcow2 incompatible feature bit(s) {}", bits.join(", ")),
            Some("a newer qemu-img may convert it: `qemu-img convert -O qcow2 -o compat=1.1`"),
        ));
    }
    let exts = exts?;
    if incompatible & INCOMPAT_EXTL2 != 0 && cluster_bits < 14 {
        return Err(bad(
            20,
            format!(
                "extended L2 entries need clusters of at least 16 KiB (cluster_bits 14); this image has cluster_bits {cluster_bits}"
            ),
        ));
    }
    if refcount_order > 6 {
        return Err(bad(
            96,
            format!("refcount_order is {refcount_order}; at most 6 (64-bit refcounts)"),
        ));
    }
    if refcount_clusters == 0 {
        return Err(bad(56, "the image has no refcount table".into()));
    }
    let max_rc = MAX_REFTABLE_BYTES >> cluster_bits;
    if refcount_clusters > max_rc {
        return Err(limit(
            name,
            STRUCT_HEADER,
            56,
            "refcount_table_clusters",
            refcount_clusters,
            max_rc,
        ));
    }
    check_table(
        name,
        file_len,
        cs,
        48,
        "refcount table",
        refcount_offset,
        refcount_clusters * cs,
    )?;
    if nb_snapshots > MAX_SNAPSHOTS {
        return Err(limit(
            name,
            STRUCT_HEADER,
            60,
            "nb_snapshots",
            nb_snapshots,
            MAX_SNAPSHOTS,
        ));
    }
    if !snapshots_offset.is_multiple_of(cs) {
        return Err(bad(
            64,
            format!("snapshot table offset {snapshots_offset} is not cluster aligned"),
        ));
    }
    // Virtual size: qemu counts whole sectors only.
    let size = raw_size & !511;
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
    let l1_bytes = u64::from(l1_size) * 8;
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
    let entry_bytes = if incompatible & INCOMPAT_EXTL2 != 0 {
        16
    } else {
        8
    };
    let per_l1 = cs * (cs / entry_bytes);
    let needed = size.div_ceil(per_l1);
    if u64::from(l1_size) < needed {
        return Err(bad(
            36,
            format!(
                "L1 table has {l1_size} entries, too few for the virtual size {size} (needs {needed})"
            ),
        ));
    }
    check_table(name, file_len, cs, 40, "L1 table", l1_offset, l1_bytes)?;

    let backing_file = if backing_offset != 0 {
        let room = MAX_BACKING_NAME.min(cs - backing_offset);
        if backing_size > MAX_BACKING_NAME {
            return Err(limit(
                name,
                STRUCT_HEADER,
                16,
                "backing file name length",
                backing_size,
                MAX_BACKING_NAME,
            ));
        }
        if backing_size > room {
            return Err(bad(
                16,
                format!(
                    "backing file name of {backing_size} bytes at {backing_offset} runs past the first cluster"
                ),
            ));
        }
        Some(text(&c0.bytes(
            backing_offset,
            backing_size,
            STRUCT_HEADER,
        )?))
        .filter(|s| !s.is_empty())
    } else {
        None
    };
    if autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 && incompatible & INCOMPAT_DATA_FILE == 0 {
        return Err(bad(
            88,
            "the raw-external-data bit is set but the image has no external data file".into(),
        ));
    }
    Ok(Header {
        version,
        cluster_bits,
        size,
        l1_size,
        l1_offset,
        incompatible,
        compatible,
        refcount_order,
        compression,
        backing_file,
        data_file: exts.data_file,
    })
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
