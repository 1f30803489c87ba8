//! Item types of the fs and root trees, parsed from leaf item data: inode
//! items, directory entries, root items and root refs, file extents.

use super::superblock::{corrupt, u8_at, u16_at, u32_at, u64_at};
use super::tree::Key;
use crate::fs::{FsError, Kind};

/// INODE_ITEM.
pub(super) const INODE_ITEM: u8 = 1;
/// INODE_REF (name of an inode in its parent directory).
pub(super) const INODE_REF: u8 = 12;
/// DIR_ITEM (by name hash).
pub(super) const DIR_ITEM: u8 = 84;
/// DIR_INDEX (by insertion sequence).
pub(super) const DIR_INDEX: u8 = 96;
/// EXTENT_DATA.
pub(super) const EXTENT_DATA: u8 = 108;
/// ROOT_ITEM (in the root tree, keyed by tree id).
pub(super) const ROOT_ITEM: u8 = 132;
/// ROOT_REF (parent tree id, child tree id).
pub(super) const ROOT_REF: u8 = 156;

/// The top-level subvolume's tree id.
pub(super) const FS_TREE: u64 = 5;
/// The root directory's inode number in every subvolume.
pub(super) const FIRST_FREE: u64 = 256;

/// btrfs's directory name hash: crc32c seeded with ~1, without the final
/// inversion (the kernel's `btrfs_name_hash`).
pub(super) fn name_hash(name: &[u8]) -> u64 {
    // crc32c_append(c, d) = !raw(!c, d); the kernel computes raw(!1, d).
    u64::from(!crc32c::crc32c_append(1, name))
}

/// The inode fields we use.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inode {
    /// i_size.
    pub size: u64,
    /// Mode (type and permission bits).
    pub mode: u32,
}

impl Inode {
    /// Parses an INODE_ITEM.
    pub fn parse(d: &[u8], at: u64) -> Result<Self, FsError> {
        let bad = || corrupt("inode item", at, "short inode item");
        Ok(Self {
            size: u64_at(d, 16).ok_or_else(bad)?,
            mode: u32_at(d, 52).ok_or_else(bad)?,
        })
    }

    /// The [`Kind`] its mode says.
    pub fn kind(&self) -> Kind {
        match self.mode & 0o170_000 {
            0o100_000 => Kind::File(self.size),
            0o040_000 => Kind::Dir,
            0o120_000 => Kind::Symlink,
            _ => Kind::Special,
        }
    }
}

/// One directory entry (of a DIR_ITEM or DIR_INDEX item).
#[derive(Debug, Clone)]
pub(super) struct DirEntry {
    /// Where it points: (ino, INODE_ITEM, 0) or (subvol id, ROOT_ITEM, ..).
    pub location: Key,
    /// Its name.
    pub name: Vec<u8>,
}

/// Fixed part of a directory entry.
const DIR_HEADER: usize = 30;

/// Parses every entry packed in a DIR_ITEM / DIR_INDEX item (DIR_ITEM packs
/// several on hash collisions).
pub(super) fn dir_entries(d: &[u8], at: u64) -> Result<Vec<DirEntry>, FsError> {
    let bad = || corrupt("directory item", at, "truncated directory entry");
    let mut out = Vec::new();
    let mut p = 0usize;
    while p < d.len() {
        let location = Key::parse(d, p).ok_or_else(bad)?;
        let data_len = usize::from(u16_at(d, p + 25).ok_or_else(bad)?);
        let name_len = usize::from(u16_at(d, p + 27).ok_or_else(bad)?);
        let name_at = p + DIR_HEADER;
        let name = d.get(name_at..name_at + name_len).ok_or_else(bad)?;
        out.push(DirEntry {
            location,
            name: name.to_vec(),
        });
        p = name_at + name_len + data_len;
    }
    Ok(out)
}

/// A tree root as a root item records it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RootItem {
    /// Root node address.
    pub bytenr: u64,
    /// Root node level.
    pub level: u8,
    /// The subvolume's root directory inode (256).
    pub root_dirid: u64,
}

impl RootItem {
    /// Parses a ROOT_ITEM (an embedded 160-byte inode item, then the
    /// tree's fields).
    pub fn parse(d: &[u8], at: u64) -> Result<Self, FsError> {
        let bad = || corrupt("root item", at, "short root item");
        Ok(Self {
            root_dirid: u64_at(d, 168).ok_or_else(bad)?,
            bytenr: u64_at(d, 176).ok_or_else(bad)?,
            level: u8_at(d, 238).ok_or_else(bad)?,
        })
    }
}

/// A ROOT_REF: subvolume `child` appears in directory `dirid` of its parent
/// under `name`.
#[derive(Debug, Clone)]
pub(super) struct RootRef {
    /// Directory inode in the parent subvolume.
    pub dirid: u64,
    /// Entry name.
    pub name: Vec<u8>,
}

impl RootRef {
    /// Parses a ROOT_REF item.
    pub fn parse(d: &[u8], at: u64) -> Result<Self, FsError> {
        let bad = || corrupt("root ref", at, "short root ref");
        let dirid = u64_at(d, 0).ok_or_else(bad)?;
        let n = usize::from(u16_at(d, 16).ok_or_else(bad)?);
        let name = d.get(18..18 + n).ok_or_else(bad)?.to_vec();
        Ok(Self { dirid, name })
    }
}

/// An INODE_REF's first name (an inode with hard links has several; any
/// one names a path).
pub(super) fn inode_ref_name(d: &[u8], at: u64) -> Result<Vec<u8>, FsError> {
    let bad = || corrupt("inode ref", at, "short inode ref");
    let n = usize::from(u16_at(d, 8).ok_or_else(bad)?);
    Ok(d.get(10..10 + n).ok_or_else(bad)?.to_vec())
}

/// What one EXTENT_DATA item says about the file range it covers.
#[derive(Debug, Clone)]
pub(super) enum Extent {
    /// Data stored in the item (possibly compressed), decoding to
    /// `ram_bytes` bytes.
    Inline {
        /// 0 none, 1 zlib, 2 lzo, 3 zstd.
        compression: u8,
        /// Decoded size.
        ram_bytes: u64,
        /// The stored bytes.
        data: Vec<u8>,
    },
    /// File data that reads as zeros (a prealloc extent, or a hole written
    /// as an extent with disk address 0).
    Zeros,
    /// A regular extent: the file range is `num_bytes` bytes starting at
    /// `offset` into the (decoded) extent at logical `disk_bytenr`.
    Regular {
        /// 0 none, 1 zlib, 2 lzo, 3 zstd.
        compression: u8,
        /// Logical address of the stored extent.
        disk_bytenr: u64,
        /// Its stored size.
        disk_num_bytes: u64,
        /// Offset into the decoded extent.
        offset: u64,
        /// Bytes of file covered.
        num_bytes: u64,
        /// The decoded extent's size.
        ram_bytes: u64,
    },
}

impl Extent {
    /// Parses an EXTENT_DATA item.
    pub fn parse(d: &[u8], at: u64) -> Result<Self, FsError> {
        let bad = |why: &str| corrupt("file extent", at, why);
        let short = || bad("short file extent item");
        let ram_bytes = u64_at(d, 8).ok_or_else(short)?;
        let compression = u8_at(d, 16).ok_or_else(short)?;
        let encryption = u8_at(d, 17).ok_or_else(short)?;
        let other = u16_at(d, 18).ok_or_else(short)?;
        let ty = u8_at(d, 20).ok_or_else(short)?;
        if encryption != 0 || other != 0 {
            return Err(FsError::Unsupported {
                fs: super::superblock::FS,
                what: format!("encrypted or encoded file extent (at {at})"),
            });
        }
        if ty == 0 {
            return Ok(Self::Inline {
                compression,
                ram_bytes,
                data: d.get(21..).unwrap_or_default().to_vec(),
            });
        }
        let f = |o: usize| u64_at(d, o).ok_or_else(short);
        let (disk_bytenr, disk_num_bytes, offset, num_bytes) = (f(21)?, f(29)?, f(37)?, f(45)?);
        match ty {
            2 => Ok(Self::Zeros),
            1 if disk_bytenr == 0 => Ok(Self::Zeros),
            1 => Ok(Self::Regular {
                compression,
                disk_bytenr,
                disk_num_bytes,
                offset,
                num_bytes,
                ram_bytes,
            }),
            _ => Err(bad(&format!("extent type {ty}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hash_matches_the_kernel() {
        // `btrfs inspect-internal dump-tree`: the root tree's "default"
        // entry is (6 DIR_ITEM 2378154706).
        assert_eq!(name_hash(b"default"), 2_378_154_706);
    }

    #[test]
    fn hostile_items_are_errors() {
        assert!(Inode::parse(&[0u8; 40], 0).is_err());
        assert!(RootItem::parse(&[0u8; 200], 0).is_err());
        assert!(RootRef::parse(&[0u8; 17], 0).is_err());
        assert!(Extent::parse(&[0u8; 20], 0).is_err());
        let mut e = [0u8; 53];
        e[20] = 9;
        assert!(Extent::parse(&e, 0).is_err());
        e[20] = 1;
        assert!(matches!(Extent::parse(&e, 0), Ok(Extent::Zeros)));
        e[17] = 1;
        assert!(Extent::parse(&e, 0).is_err());
        // A directory entry whose name runs past the item.
        let mut d = [0u8; 31];
        d[27] = 2;
        assert!(dir_entries(&d, 0).is_err());
        d[27] = 1;
        assert_eq!(dir_entries(&d, 0).unwrap().len(), 1);
    }
}
