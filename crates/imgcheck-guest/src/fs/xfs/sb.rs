//! The XFS superblock (sector 0 of allocation group 0): geometry, feature
//! bits and the root inode, validated before anything else is read.
//!
//! Field offsets are from the on-disk format (`struct xfs_dsb`, "XFS
//! Algorithms & Data Structures", chapter "Superblocks"). Every geometry
//! value later used as a shift, a divisor or a multiplier is checked here,
//! so the rest of the reader can rely on it.

use imgcheck_source::ByteSource;

use super::{be16, be32, be64, corrupt, crc_ok, unsupported};
use crate::fs::FsError;

/// v5 (CRC) incompat features this reader understands: ftype, sparse
/// inodes, meta_uuid, bigtime, nrext64, exchange-range, parent pointers,
/// metadir. None of them changes how directories, extents or symlinks of
/// ordinary files are laid out beyond what is handled here.
const KNOWN_INCOMPAT: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80 | 0x100;
/// `XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR`: xfs_repair must run first; the kernel
/// refuses to mount, so the metadata is not trusted here either.
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
/// `XFS_SB_VERSION_DIRV2BIT`: v4 without it uses the pre-1990s v1
/// directory format, which nothing has written since IRIX.
const VERSION_DIRV2: u16 = 0x2000;
/// `XFS_SB_VERSION_MOREBITSBIT`: `sb_features2` is valid.
const VERSION_MOREBITS: u16 = 0x8000;
/// `XFS_SB_VERSION2_FTYPE` in `sb_features2` (v4 with file types in dirents).
const FEATURES2_FTYPE: u32 = 0x200;
/// Most allocation groups accepted (mkfs.xfs makes tens; a petabyte
/// filesystem a few thousand).
const MAX_AGCOUNT: u32 = 1 << 20;
/// Offset of `sb_crc` in a v5 superblock.
const CRC_OFF: usize = 224;
/// Bytes of the superblock parsed (the v5 fields end at 264).
pub const SB_LEN: usize = 264;

/// The superblock fields the reader uses, validated.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Filesystem block size in bytes (power of two, 512..=65536).
    pub block_size: u64,
    /// log2 of `block_size`.
    pub block_log: u32,
    /// Blocks per allocation group.
    pub ag_blocks: u64,
    /// Number of allocation groups.
    pub ag_count: u64,
    /// Bits of an AG block number in inode and block numbers.
    pub agblk_log: u32,
    /// Bytes per inode.
    pub inode_size: u64,
    /// log2 of inodes per block.
    pub inopb_log: u32,
    /// Root directory inode.
    pub root_ino: u64,
    /// Directory block size in bytes (`block_size << sb_dirblklog`).
    pub dir_block_size: u64,
    /// v5: CRCs and self-describing metadata headers.
    pub v5: bool,
    /// Directory entries carry a file type byte.
    pub ftype: bool,
    /// v5 `nrext64`: inodes may carry 64-bit extent counts.
    pub nrext64: bool,
    /// Filesystem blocks (`sb_dblocks`).
    pub data_blocks: u64,
}

/// `log2(x)` when `x` is a power of two.
fn exact_log2(x: u64) -> Option<u32> {
    x.is_power_of_two().then(|| x.trailing_zeros())
}

impl Superblock {
    /// Reads and validates the superblock at the start of `src`.
    pub fn read(src: &dyn ByteSource) -> Result<Self, FsError> {
        let mut b = [0u8; SB_LEN];
        src.read_exact_at(0, &mut b)?;
        let sb = Self::parse(&b)?;
        if sb.v5 {
            // The CRC covers one sector (`sb_sectsize`), validated in parse.
            let sect = u64::from(be16(&b, 102));
            let sector = imgcheck_source::read_vec(src, 0, sect, 1 << 16)?;
            if !crc_ok(&sector, CRC_OFF) {
                return Err(corrupt("superblock", 0, "CRC mismatch"));
            }
        }
        let bytes = sb.data_blocks.checked_mul(sb.block_size);
        if bytes.is_none_or(|n| n > src.len()) {
            return Err(corrupt(
                "superblock",
                0,
                format!(
                    "{} blocks of {} bytes do not fit in the {} bytes available (truncated or corrupt)",
                    sb.data_blocks,
                    sb.block_size,
                    src.len()
                ),
            ));
        }
        Ok(sb)
    }

    /// Parses and validates the first [`SB_LEN`] bytes of a superblock.
    pub fn parse(b: &[u8; SB_LEN]) -> Result<Self, FsError> {
        let bad = |why: String| corrupt("superblock", 0, why);
        if &b[0..4] != b"XFSB" {
            return Err(bad("no XFS magic".into()));
        }
        let version = be16(b, 100);
        let (v5, ftype, nrext64) = match version & 0xF {
            5 => {
                let incompat = be32(b, 216);
                if incompat & INCOMPAT_NEEDSREPAIR != 0 {
                    return Err(unsupported(
                        "a filesystem marked as needing xfs_repair (needsrepair)",
                    ));
                }
                if incompat & !KNOWN_INCOMPAT != 0 {
                    return Err(unsupported(format!(
                        "incompatible feature bits 0x{:x}",
                        incompat & !KNOWN_INCOMPAT
                    )));
                }
                (true, incompat & 0x1 != 0, incompat & 0x20 != 0)
            }
            4 => {
                if version & VERSION_DIRV2 == 0 {
                    return Err(unsupported("v1 directories (pre-dirv2 XFS)"));
                }
                // Old kernels wrote features2 at the next word (sb_bad_features2);
                // the kernel ORs the two, and so do we.
                let f2 = if version & VERSION_MOREBITS != 0 {
                    be32(b, 200) | be32(b, 204)
                } else {
                    0
                };
                (false, f2 & FEATURES2_FTYPE != 0, false)
            }
            v => return Err(unsupported(format!("superblock version {v}"))),
        };
        if b[126] != 0 {
            return Err(bad("mkfs did not finish (sb_inprogress is set)".into()));
        }
        Self::geometry(b, v5, ftype, nrext64)
    }

    /// The geometry half of [`Self::parse`]: every shift and size checked
    /// against its neighbours as xfs_validate_sb_common does.
    fn geometry(b: &[u8; SB_LEN], v5: bool, ftype: bool, nrext64: bool) -> Result<Self, FsError> {
        let bad = |why: String| corrupt("superblock", 0, why);
        let block_size = u64::from(be32(b, 4));
        let block_log = exact_log2(block_size)
            .filter(|l| (9..=16).contains(l) && u32::from(b[120]) == *l)
            .ok_or_else(|| bad(format!("block size {block_size}")))?;
        let sect = u64::from(be16(b, 102));
        exact_log2(sect)
            .filter(|l| (9..=15).contains(l) && u32::from(b[121]) == *l)
            .ok_or_else(|| bad(format!("sector size {sect}")))?;
        let inode_size = u64::from(be16(b, 104));
        let inode_log = exact_log2(inode_size)
            .filter(|l| (8..=11).contains(l) && u32::from(b[122]) == *l && *l <= block_log)
            .ok_or_else(|| bad(format!("inode size {inode_size}")))?;
        if v5 && inode_size < 512 {
            return Err(bad(format!("v5 inode size {inode_size} (at least 512)")));
        }
        let inopb_log = block_log - inode_log;
        if u32::from(b[123]) != inopb_log || u64::from(be16(b, 106)) != 1 << inopb_log {
            return Err(bad("inodes per block disagree with the sizes".into()));
        }
        let ag_blocks = be32(b, 84);
        let ag_count = be32(b, 88);
        if ag_blocks < 2 || ag_count == 0 || ag_count > MAX_AGCOUNT {
            return Err(bad(format!("{ag_count} groups of {ag_blocks} blocks")));
        }
        // xfs_highbit32(agblocks - 1) + 1, the bits an AG block number takes.
        let agblk_log = 32 - (ag_blocks - 1).leading_zeros();
        if u32::from(b[124]) != agblk_log || agblk_log + inopb_log > 56 {
            return Err(bad(format!(
                "sb_agblklog {} for {ag_blocks} blocks",
                b[124]
            )));
        }
        let dirblk_log = u32::from(b[192]);
        if block_log + dirblk_log > 16 {
            return Err(bad(format!("directory block log {dirblk_log}")));
        }
        let data_blocks = be64(b, 8);
        let max_blocks = u64::from(ag_blocks) * u64::from(ag_count);
        if data_blocks > max_blocks {
            return Err(bad(format!("{data_blocks} blocks, more than the AGs hold")));
        }
        Ok(Self {
            block_size,
            block_log,
            ag_blocks: u64::from(ag_blocks),
            ag_count: u64::from(ag_count),
            agblk_log,
            inode_size,
            inopb_log,
            root_ino: be64(b, 56),
            dir_block_size: block_size << dirblk_log,
            v5,
            ftype,
            nrext64,
            data_blocks,
        })
    }

    /// Byte offset of filesystem block `fsb` (AG number in the high bits,
    /// AG block in the low `agblk_log` bits) and how many blocks after it
    /// stay inside its AG, or `None` when it names no block.
    pub fn fsb_to_byte(&self, fsb: u64) -> Option<(u64, u64)> {
        let agno = fsb.checked_shr(self.agblk_log)?;
        let agbno = fsb & ((1u64 << self.agblk_log) - 1);
        if agno >= self.ag_count || agbno >= self.ag_blocks {
            return None;
        }
        let block = agno.checked_mul(self.ag_blocks)?.checked_add(agbno)?;
        if block >= self.data_blocks {
            return None;
        }
        Some((block.checked_mul(self.block_size)?, self.ag_blocks - agbno))
    }

    /// Byte offset of inode `ino`, or `None` when the number names no inode.
    pub fn inode_byte(&self, ino: u64) -> Option<u64> {
        let index = ino & ((1u64 << self.inopb_log) - 1);
        let agbno = (ino >> self.inopb_log) & ((1u64 << self.agblk_log) - 1);
        let agno = ino.checked_shr(self.inopb_log + self.agblk_log)?;
        let fsb = agno.checked_shl(self.agblk_log)? | agbno;
        if agno.checked_shl(self.agblk_log)? >> self.agblk_log != agno {
            return None;
        }
        let (block, _) = self.fsb_to_byte(fsb)?;
        block.checked_add(index * self.inode_size)
    }
}
