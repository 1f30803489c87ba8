//! The btrfs superblock (the primary copy at 64 KiB) and the small
//! little-endian field readers every other btrfs module uses.
//!
//! Only the primary copy is read: the mirrors at 64 MiB and 256 GiB exist
//! for repair tools, and a guest image whose primary is damaged would not
//! mount in the guest either.

use imgcheck_source::ByteSource;

use crate::fs::FsError;

/// Name used in errors.
pub(super) const FS: &str = "btrfs";
/// Byte offset of the primary superblock.
pub(super) const SUPER_OFFSET: u64 = 0x1_0000;
/// Bytes of the superblock (checksummed from byte 32 on).
const SUPER_LEN: usize = 4096;
/// `_BHRfS_M`.
const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Where the system chunk array starts in the superblock.
const SYS_CHUNK_ARRAY: usize = 0x32b;
/// Its size in the superblock.
const SYS_CHUNK_ARRAY_MAX: usize = 2048;
/// Incompat features that change how trees or stripes are laid out in ways
/// this reader does not implement (extent tree v2; the raid-stripe tree,
/// which moves the logical-to-physical map out of the chunk items). Every
/// other incompat bit (lzo, zstd, no-holes, skinny metadata, raid56 —
/// refused per chunk instead —, zoned) leaves reading as implemented here.
const INCOMPAT_UNSUPPORTED: &[(u64, &str)] =
    &[(0x2000, "extent_tree_v2"), (0x4000, "raid_stripe_tree")];
/// The zstd incompat bit, for the tests' superblock.
#[cfg(test)]
const INCOMPAT_COMPRESS_ZSTD: u64 = 0x10;

/// Little-endian field readers over untrusted slices: `None` past the end.
pub(super) fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}
/// See [`u8_at`].
pub(super) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}
/// See [`u8_at`].
pub(super) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}
/// See [`u8_at`].
pub(super) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// Shorthand for a btrfs [`FsError::Corrupt`].
pub(super) fn corrupt(
    structure: impl Into<String>,
    offset: u64,
    reason: impl Into<String>,
) -> FsError {
    FsError::corrupt(FS, structure, offset, reason)
}

/// The btrfs checksum of `data` as stored (crc32c, little-endian, in the
/// first 4 of 32 bytes).
pub(super) fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// The superblock fields the reader uses.
#[derive(Debug, Clone)]
pub(super) struct Superblock {
    /// Logical address of the root tree's root node.
    pub root: u64,
    /// Its level.
    pub root_level: u8,
    /// Logical address of the chunk tree's root node.
    pub chunk_root: u64,
    /// Its level.
    pub chunk_root_level: u8,
    /// Object id of the root tree's directory (holds the "default" item).
    pub root_dir_objectid: u64,
    /// Data block size (LZO segments are per sector).
    pub sectorsize: u32,
    /// Tree node size.
    pub nodesize: u32,
    /// Whether node checksums are crc32c (the only type we verify).
    pub csum_crc32c: bool,
    /// This device's id (stripes on other devices cannot be read).
    pub devid: u64,
    /// The bootstrap chunk items (key + chunk item, repeated).
    pub sys_chunk_array: Vec<u8>,
}

impl Superblock {
    /// Reads and checks the primary superblock of `src`.
    pub fn read(src: &dyn ByteSource) -> Result<Self, FsError> {
        let mut b = vec![0u8; SUPER_LEN];
        src.read_exact_at(SUPER_OFFSET, &mut b)?;
        Self::parse(&b)
    }

    /// Parses a 4096-byte superblock.
    pub fn parse(b: &[u8]) -> Result<Self, FsError> {
        let bad = |why: String| corrupt("superblock", SUPER_OFFSET, why);
        let field = |off: usize| u64_at(b, off).ok_or_else(|| bad("short superblock".into()));
        if b.get(0x40..0x48) != Some(&MAGIC[..]) {
            return Err(bad("no btrfs magic (_BHRfS_M)".into()));
        }
        let csum_type = u16_at(b, 0xc4).ok_or_else(|| bad("short superblock".into()))?;
        let csum_crc32c = csum_type == 0;
        if csum_crc32c {
            let want = u32_at(b, 0).unwrap_or(0);
            let got = crc32c(b.get(0x20..).unwrap_or_default());
            if want != got {
                return Err(bad(format!(
                    "checksum mismatch (stored {want:#010x}, computed {got:#010x})"
                )));
            }
        }
        let incompat = field(0xbc)?;
        for (bit, name) in INCOMPAT_UNSUPPORTED {
            if incompat & bit != 0 {
                return Err(FsError::Unsupported {
                    fs: FS,
                    what: format!("the {name} incompat feature"),
                });
            }
        }
        let sectorsize = u32_at(b, 0x90).unwrap_or(0);
        let nodesize = u32_at(b, 0x94).unwrap_or(0);
        // mkfs.btrfs: sectorsize 4 KiB..64 KiB, nodesize sectorsize..64 KiB,
        // both powers of two.
        let pow2 = |v: u32, lo: u32| v.is_power_of_two() && (lo..=65536).contains(&v);
        if !pow2(sectorsize, 4096) || !pow2(nodesize, sectorsize.max(4096)) {
            return Err(bad(format!(
                "sector size {sectorsize} / node size {nodesize} out of range"
            )));
        }
        let array_len = usize::try_from(u32_at(b, 0xa0).unwrap_or(0)).unwrap_or(usize::MAX);
        if array_len > SYS_CHUNK_ARRAY_MAX {
            return Err(bad(format!(
                "system chunk array of {array_len} bytes (at most {SYS_CHUNK_ARRAY_MAX})"
            )));
        }
        let array_end = SYS_CHUNK_ARRAY.saturating_add(array_len);
        let sys_chunk_array = b
            .get(SYS_CHUNK_ARRAY..array_end)
            .ok_or_else(|| bad("short superblock".into()))?
            .to_vec();
        let level = |off: usize| u8_at(b, off).unwrap_or(u8::MAX);
        Ok(Self {
            root: field(0x50)?,
            chunk_root: field(0x58)?,
            root_dir_objectid: field(0x80)?,
            sectorsize,
            nodesize,
            csum_crc32c,
            root_level: level(0xc6),
            chunk_root_level: level(0xc7),
            devid: field(0xc9)?,
            sys_chunk_array,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Vec<u8> {
        let mut b = vec![0u8; SUPER_LEN];
        b[0x40..0x48].copy_from_slice(MAGIC);
        b[0x50..0x58].copy_from_slice(&0x1d0_0000u64.to_le_bytes());
        b[0x90..0x94].copy_from_slice(&4096u32.to_le_bytes());
        b[0x94..0x98].copy_from_slice(&16384u32.to_le_bytes());
        b[0xbc..0xc4].copy_from_slice(&INCOMPAT_COMPRESS_ZSTD.to_le_bytes());
        b[0xc9..0xd1].copy_from_slice(&1u64.to_le_bytes());
        let c = crc32c(&b[0x20..]);
        b[0..4].copy_from_slice(&c.to_le_bytes());
        b
    }

    #[test]
    fn parses_and_checks() {
        let b = valid();
        let sb = Superblock::parse(&b).unwrap();
        assert_eq!((sb.nodesize, sb.sectorsize, sb.devid), (16384, 4096, 1));
        assert_eq!(sb.root, 0x1d0_0000);
        let mut bad = b.clone();
        bad[0x100] ^= 1;
        assert!(
            Superblock::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        let mut bad = b.clone();
        bad[0x40] = b'x';
        assert!(Superblock::parse(&bad).is_err());
        assert!(Superblock::parse(&b[..100]).is_err());
        // Node size not a power of two (checksum fixed up).
        let mut bad = b;
        bad[0x94..0x98].copy_from_slice(&12345u32.to_le_bytes());
        let c = crc32c(&bad[0x20..]);
        bad[0..4].copy_from_slice(&c.to_le_bytes());
        assert!(
            Superblock::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("node size")
        );
    }
}
