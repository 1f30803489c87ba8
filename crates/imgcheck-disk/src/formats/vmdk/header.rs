//! The hosted-sparse ("VMDK4", magic `KDMV`) extent header and the
//! streamOptimized footer.
//!
//! This module owns the checks that must pass before any table is read or
//! allocated: magic, version, newline check bytes, grain size, grain-table
//! size, capacity, and the size of the grain directory they imply. Every
//! bound follows qemu's `block/vmdk.c` where qemu has one (so every image
//! qemu reads, we read), plus a few qemu lacks (power-of-two grains, the
//! check bytes) that no real writer violates.
//!
//! Layout (512 bytes, little-endian, VMware's field names):
//! `magic[4] version u32 flags u32 capacity u64 grainSize u64
//! descriptorOffset u64 descriptorSize u64 numGTEsPerGT u32 rgdOffset u64
//! gdOffset u64 overHead u64 uncleanShutdown u8 "\n \r\n" compressAlgorithm
//! u16`; all offsets and sizes in 512-byte sectors.

use imgcheck_source::ByteSource;

use crate::error::{DiskError, corrupt, limit, unsupported};
use crate::limits::Limits;
use crate::parse::Fields;

/// Bytes per sector: every VMDK offset and size is in these units.
pub const SECTOR: u64 = 512;
/// Header magic.
pub const MAGIC: &[u8; 4] = b"KDMV";
/// Flag: the check bytes are valid (newline detection).
pub const FLAG_NL_DETECT: u32 = 1;
/// Flag: a redundant grain directory exists at `rgdOffset`.
pub const FLAG_RGD: u32 = 1 << 1;
/// Flag: GTE 1 means "this grain reads as zeros".
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag: grains are stored behind `{lba, size}` markers (streamOptimized).
pub const FLAG_MARKER: u32 = 1 << 17;
/// `gdOffset` value meaning "read the footer for the real one".
pub const GD_AT_END: u64 = u64::MAX;
/// qemu refuses grains above 0x200000 sectors (1 GiB) as "unrealistic".
pub const MAX_GRAIN_SECTORS: u64 = 0x20_0000;
/// qemu refuses grain tables with more than 512 entries.
pub const MAX_GTES_PER_GT: u32 = 512;
/// The newline check bytes at offset 73.
const CHECK_BYTES: &[u8; 4] = b"\n \r\n";

/// Metadata marker types (streamOptimized).
pub const MARKER_EOS: u32 = 0;
/// Footer marker type.
pub const MARKER_FOOTER: u32 = 3;

/// Header fields as stored, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// Format version (1, 2 or 3).
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Extent size in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_sectors: u64,
    /// Embedded descriptor: sector offset.
    pub desc_offset: u64,
    /// Embedded descriptor: size in sectors.
    pub desc_size: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u32,
    /// Redundant grain directory, sector offset.
    pub rgd_offset: u64,
    /// Grain directory, sector offset (or [`GD_AT_END`]).
    pub gd_offset: u64,
    /// First grain's sector (end of metadata).
    pub overhead: u64,
    /// Set while a writer has the extent open.
    pub unclean_shutdown: bool,
    /// 0 none, 1 deflate.
    pub compress_algorithm: u16,
    check_bytes: [u8; 4],
}

impl RawHeader {
    /// Reads the header sector at `offset` of `src`; checks the magic only.
    pub fn read(src: &dyn ByteSource, offset: u64) -> Result<Self, DiskError> {
        let mut b = [0u8; 512];
        src.read_exact_at(offset, &mut b)?;
        if &b[..4] != MAGIC {
            return Err(corrupt(
                src.name(),
                "VMDK sparse header",
                offset,
                "bad magic (expected KDMV)",
            ));
        }
        Self::from_sector(src.name(), offset, &b)
    }

    /// Field extraction from one header sector of `file` at `offset`
    /// (magic not checked); offsets from the VMDK 1.1 SparseExtentHeader.
    pub fn from_sector(file: &str, offset: u64, b: &[u8; 512]) -> Result<Self, DiskError> {
        let f = Fields::new(file, "VMDK sparse header", offset, b);
        Ok(Self {
            version: f.le32(4)?,
            flags: f.le32(8)?,
            capacity: f.le64(12)?,
            grain_sectors: f.le64(20)?,
            desc_offset: f.le64(28)?,
            desc_size: f.le64(36)?,
            gtes_per_gt: f.le32(44)?,
            rgd_offset: f.le64(48)?,
            gd_offset: f.le64(56)?,
            overhead: f.le64(64)?,
            unclean_shutdown: f.array::<1>(72)?[0] != 0,
            check_bytes: f.array(73)?,
            compress_algorithm: f.le16(77)?,
        })
    }

    /// The grain size in bytes and whether grains are compressed, checked
    /// against the format, qemu's cap and (for a compressed grain, decoded
    /// whole) `limits`.
    fn grain(&self, file: &str, offset: u64, limits: &Limits) -> Result<(u64, bool), DiskError> {
        const S: &str = "VMDK sparse header";
        let bad = |why: String| corrupt(file, S, offset, why);
        let compressed = match self.compress_algorithm {
            0 => false,
            1 => true,
            a => {
                return Err(unsupported(
                    file,
                    format!("VMDK compression algorithm {a}"),
                    Some("only deflate (1) exists in the VMDK specification"),
                ));
            }
        };
        let g = self.grain_sectors;
        if g == 0 || !g.is_power_of_two() {
            return Err(bad(format!("grain size {g} sectors is not a power of two")));
        }
        if g > MAX_GRAIN_SECTORS {
            return Err(limit(
                file,
                S,
                offset,
                "grain size (sectors)",
                g,
                MAX_GRAIN_SECTORS,
            ));
        }
        let grain = g * SECTOR;
        if compressed && grain > limits.max_table_bytes {
            // A compressed grain is decoded whole into memory.
            return Err(limit(
                file,
                S,
                offset,
                "compressed grain size (bytes)",
                grain,
                limits.max_table_bytes,
            ));
        }
        Ok((grain, compressed))
    }

    /// Validates the fields against the format rules, qemu's limits,
    /// `limits` and the file length, and derives the table geometry.
    /// Nothing has been allocated from header values when this fails.
    pub fn validate(
        &self,
        file: &str,
        offset: u64,
        file_len: u64,
        limits: &Limits,
    ) -> Result<Header, DiskError> {
        const S: &str = "VMDK sparse header";
        let bad = |why: String| corrupt(file, S, offset, why);
        match self.version {
            1..=3 => {}
            0 => return Err(bad("version 0 is not a VMDK version".into())),
            v => {
                return Err(unsupported(
                    file,
                    format!("VMDK sparse extent version {v}"),
                    Some("qemu reads versions 1 to 3 only; re-export the disk from VMware"),
                ));
            }
        }
        if self.flags & FLAG_NL_DETECT != 0 && &self.check_bytes != CHECK_BYTES {
            return Err(bad(
                "newline check bytes are damaged (was the file copied in text mode?)".into(),
            ));
        }
        let (grain, compressed) = self.grain(file, offset, limits)?;
        let n = self.gtes_per_gt;
        if n == 0 {
            return Err(bad("numGTEsPerGT is 0".into()));
        }
        if n > MAX_GTES_PER_GT {
            return Err(limit(
                file,
                S,
                offset,
                "numGTEsPerGT",
                n.into(),
                MAX_GTES_PER_GT.into(),
            ));
        }
        let capacity = self
            .capacity
            .checked_mul(SECTOR)
            .filter(|&c| c <= limits.max_virtual_size)
            .ok_or_else(|| {
                limit(
                    file,
                    S,
                    offset,
                    "capacity (sectors)",
                    self.capacity,
                    limits.max_virtual_size / SECTOR,
                )
            })?;
        if capacity == 0 {
            return Err(bad("capacity is 0".into()));
        }
        // grain <= 2^30 and n <= 2^9, so this cannot overflow.
        let gt_span = grain * u64::from(n);
        let gd_entries = capacity.div_ceil(gt_span);
        let gd_bytes = gd_entries.saturating_mul(4);
        if gd_bytes > limits.max_table_bytes {
            return Err(limit(
                file,
                S,
                offset,
                "grain directory size (bytes)",
                gd_bytes,
                limits.max_table_bytes,
            ));
        }
        if self
            .overhead
            .checked_mul(SECTOR)
            .is_none_or(|o| o > file_len)
        {
            return Err(bad(format!(
                "file truncated: grains start at sector {} but the file is {file_len} bytes",
                self.overhead
            )));
        }
        Ok(Header {
            raw: *self,
            capacity,
            grain,
            gtes_per_gt: u64::from(n),
            gd_entries,
            compressed,
            markers: self.flags & FLAG_MARKER != 0,
            zeroed_grain: self.flags & FLAG_ZERO_GRAIN != 0,
        })
    }
}

/// A validated header with derived sizes in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// The stored fields.
    pub raw: RawHeader,
    /// Extent size in bytes (> 0).
    pub capacity: u64,
    /// Grain size in bytes (power of two, ≤ 1 GiB).
    pub grain: u64,
    /// Entries per grain table (1..=512).
    pub gtes_per_gt: u64,
    /// Grain directory entries.
    pub gd_entries: u64,
    /// Grains are zlib-compressed.
    pub compressed: bool,
    /// Grains sit behind `{lba, size}` markers.
    pub markers: bool,
    /// GTE 1 means a zero grain.
    pub zeroed_grain: bool,
}

/// Reads the streamOptimized footer (`gdOffset == GD_AT_END`): the last
/// three sectors are a FOOTER marker, a header copy holding the real
/// `gdOffset`, and an end-of-stream marker. Returns the header copy and its
/// offset.
pub fn read_footer(src: &dyn ByteSource) -> Result<(RawHeader, u64), DiskError> {
    const S: &str = "VMDK stream footer";
    let len = src.len();
    let start = len.checked_sub(3 * SECTOR).ok_or_else(|| {
        corrupt(
            src.name(),
            S,
            0,
            "header says the grain directory is in the footer, but the file is too short for one",
        )
    })?;
    let mut marker = [0u8; 512];
    src.read_exact_at(start, &mut marker)?;
    let mut head = [0u8; 512];
    src.read_exact_at(start + SECTOR, &mut head)?;
    let mut eos = [0u8; 512];
    src.read_exact_at(start + 2 * SECTOR, &mut eos)?;
    let bad = |at: u64, why: &str| corrupt(src.name(), S, at, why);
    let m = Fields::new(src.name(), S, start, &marker);
    let e = Fields::new(src.name(), S, start + 2 * SECTOR, &eos);
    if m.le32(8)? != 0 || m.le32(12)? != MARKER_FOOTER {
        return Err(bad(start, "no FOOTER marker before the footer header"));
    }
    if &head[..4] != MAGIC {
        return Err(bad(start + SECTOR, "footer header has a bad magic"));
    }
    if e.le64(0)? != 0 || e.le32(8)? != 0 || e.le32(12)? != MARKER_EOS {
        return Err(bad(
            start + 2 * SECTOR,
            "no end-of-stream marker after the footer",
        ));
    }
    let h = RawHeader::from_sector(src.name(), start + SECTOR, &head)?;
    if h.gd_offset == GD_AT_END {
        return Err(bad(
            start + SECTOR,
            "the footer's gdOffset again says \"at end\"",
        ));
    }
    Ok((h, start + SECTOR))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header like qemu-img writes for a 100 MiB monolithicSparse image,
    /// one comment per field.
    pub(crate) fn valid_header() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(b"KDMV"); // magic
        b[4..8].copy_from_slice(&1u32.to_le_bytes()); // version
        b[8..12].copy_from_slice(&3u32.to_le_bytes()); // flags: NL | RGD
        b[12..20].copy_from_slice(&204_800u64.to_le_bytes()); // capacity, sectors
        b[20..28].copy_from_slice(&128u64.to_le_bytes()); // grainSize: 64 KiB
        b[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptorOffset
        b[36..44].copy_from_slice(&20u64.to_le_bytes()); // descriptorSize
        b[44..48].copy_from_slice(&512u32.to_le_bytes()); // numGTEsPerGT
        b[48..56].copy_from_slice(&21u64.to_le_bytes()); // rgdOffset
        b[56..64].copy_from_slice(&40u64.to_le_bytes()); // gdOffset
        b[64..72].copy_from_slice(&128u64.to_le_bytes()); // overHead
        b[73..77].copy_from_slice(b"\n \r\n"); // check bytes
        b
    }

    fn check(b: &[u8; 512]) -> Result<Header, DiskError> {
        RawHeader::from_sector("t.vmdk", 0, b).unwrap().validate(
            "t.vmdk",
            0,
            1 << 20,
            &Limits::default(),
        )
    }

    fn set64(b: &mut [u8; 512], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn valid_header_derives_geometry() {
        let h = check(&valid_header()).unwrap();
        assert_eq!(h.capacity, 100 << 20);
        assert_eq!(h.grain, 64 << 10);
        // 100 MiB / (512 * 64 KiB = 32 MiB) = 3.125 -> 4 entries
        assert_eq!(h.gd_entries, 4);
        assert!(!h.compressed && !h.markers && !h.zeroed_grain);
    }

    #[test]
    fn bad_magic() {
        let mut b = valid_header();
        b[0] = b'X';
        let src = imgcheck_source::MemSource::new("m", b.to_vec());
        let e = RawHeader::read(&src, 0).unwrap_err().to_string();
        assert!(e.contains("bad magic") && e.contains("m:"), "{e}");
    }

    #[test]
    fn versions() {
        let mut b = valid_header();
        b[4] = 0;
        assert!(check(&b).unwrap_err().to_string().contains("version 0"));
        b[4] = 4;
        assert!(matches!(check(&b), Err(DiskError::Unsupported { .. })));
        b[4] = 3;
        assert!(check(&b).is_ok());
    }

    #[test]
    fn check_bytes_only_with_the_flag() {
        let mut b = valid_header();
        b[75] = b'\n'; // "\r" lost, as an FTP text-mode copy does
        assert!(check(&b).unwrap_err().to_string().contains("check bytes"));
        b[8] = 2; // NL_DETECT off
        assert!(check(&b).is_ok());
    }

    #[test]
    fn grain_sizes() {
        let mut b = valid_header();
        set64(&mut b, 20, 0);
        assert!(check(&b).unwrap_err().to_string().contains("power of two"));
        set64(&mut b, 20, 96);
        assert!(check(&b).unwrap_err().to_string().contains("power of two"));
        set64(&mut b, 20, 1 << 22);
        assert!(matches!(check(&b), Err(DiskError::Limit { .. })));
        set64(&mut b, 20, 1 << 63);
        assert!(matches!(check(&b), Err(DiskError::Limit { .. })));
    }

    #[test]
    fn compressed_grain_is_bounded_by_the_table_limit() {
        let mut b = valid_header();
        b[77] = 1;
        set64(&mut b, 20, 1 << 21); // 1 GiB grains, compressed
        assert!(matches!(check(&b), Err(DiskError::Limit { .. })));
        b[77] = 2;
        set64(&mut b, 20, 128);
        assert!(matches!(check(&b), Err(DiskError::Unsupported { .. })));
    }

    #[test]
    fn gtes_per_gt() {
        let mut b = valid_header();
        b[44..48].copy_from_slice(&0u32.to_le_bytes());
        assert!(check(&b).unwrap_err().to_string().contains("numGTEsPerGT"));
        b[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(check(&b), Err(DiskError::Limit { .. })));
        b[44..48].copy_from_slice(&513u32.to_le_bytes());
        assert!(matches!(check(&b), Err(DiskError::Limit { .. })));
    }

    #[test]
    fn capacity_and_directory_size() {
        let mut b = valid_header();
        set64(&mut b, 12, 0);
        assert!(check(&b).unwrap_err().to_string().contains("capacity is 0"));
        set64(&mut b, 12, u64::MAX);
        assert!(matches!(check(&b), Err(DiskError::Limit { .. })));
        // 2^46 sectors with 512-byte grains and 1-entry tables: a grain
        // directory of 2^46 entries, refused before any allocation.
        set64(&mut b, 12, 1 << 46);
        set64(&mut b, 20, 1);
        b[44..48].copy_from_slice(&1u32.to_le_bytes());
        let e = check(&b).unwrap_err();
        assert!(e.to_string().contains("grain directory size"), "{e}");
    }

    #[test]
    fn overhead_beyond_end_of_file() {
        let mut b = valid_header();
        set64(&mut b, 64, 1 << 40);
        assert!(check(&b).unwrap_err().to_string().contains("truncated"));
        set64(&mut b, 64, u64::MAX);
        assert!(check(&b).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn footer_needs_its_markers() {
        let mut f = vec![0u8; 2048];
        let src = imgcheck_source::MemSource::new("s", f.clone());
        assert!(
            read_footer(&src)
                .unwrap_err()
                .to_string()
                .contains("FOOTER marker")
        );
        f[512 + 12..512 + 16].copy_from_slice(&MARKER_FOOTER.to_le_bytes());
        let mut h = valid_header();
        set64(&mut h, 56, GD_AT_END);
        f[1024..1536].copy_from_slice(&h);
        let src = imgcheck_source::MemSource::new("s", f.clone());
        assert!(read_footer(&src).unwrap_err().to_string().contains("again"));
        set64(&mut h, 56, 40);
        f[1024..1536].copy_from_slice(&h);
        f[1536] = 1; // EOS marker with a nonzero sector count
        let src = imgcheck_source::MemSource::new("s", f.clone());
        assert!(
            read_footer(&src)
                .unwrap_err()
                .to_string()
                .contains("end-of-stream")
        );
        f[1536] = 0;
        let src = imgcheck_source::MemSource::new("s", f);
        let (raw, at) = read_footer(&src).unwrap();
        assert_eq!((raw.gd_offset, at), (40, 1024));
        let short = imgcheck_source::MemSource::new("s", vec![0; 100]);
        assert!(
            read_footer(&short)
                .unwrap_err()
                .to_string()
                .contains("too short")
        );
    }
}
