//! Inodes: the core fields the reader needs (mode, size, fork format,
//! extent count) and the data fork's bytes, with the v3 inode CRC and
//! self-number checked.
//!
//! Offsets are from `struct xfs_dinode` ("XFS Algorithms & Data
//! Structures", "On-disk Inode"): the data fork starts at byte 100 of a
//! v1/v2 inode and byte 176 of a v3 inode; `di_forkoff` (in 8-byte units)
//! is where the attribute fork begins, i.e. the data fork's size.

use std::rc::Rc;

use super::{Xfs, be16, be32, be64, corrupt, crc_ok};
use crate::fs::FsError;

/// `S_IFMT` and the types the reader tells apart.
const S_IFMT: u16 = 0o170_000;
const S_IFREG: u16 = 0o100_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFLNK: u16 = 0o120_000;
/// `XFS_DIFLAG_REALTIME`: the data lives on the realtime device.
const DIFLAG_REALTIME: u16 = 0x1;
/// `XFS_DIFLAG2_NREXT64`: the extent count is the 64-bit `di_big_nextents`.
const DIFLAG2_NREXT64: u64 = 0x10;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Device, fifo, socket.
    Special,
}

/// The data fork's format (`di_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Data inline in the fork (short directories, short symlinks).
    Local,
    /// An array of extent records in the fork.
    Extents,
    /// The root of a block-map btree in the fork.
    Btree,
    /// Device number or anything else without data blocks.
    Other,
}

/// A parsed inode.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u64,
    /// Byte offset of the inode in the filesystem (for messages).
    pub offset: u64,
    /// File type.
    pub kind: Type,
    /// Data fork format.
    pub format: Format,
    /// `di_size`.
    pub size: u64,
    /// Data fork extent count.
    pub nextents: u64,
    /// The inode's bytes (shared with the metadata cache).
    raw: Rc<[u8]>,
    /// Data fork start and end within `raw`.
    fork: (usize, usize),
}

impl Inode {
    /// The data fork's bytes.
    pub fn fork(&self) -> &[u8] {
        self.raw.get(self.fork.0..self.fork.1).unwrap_or_default()
    }

    /// "inode N" for error messages.
    pub fn name(&self) -> String {
        format!("inode {}", self.ino)
    }
}

impl Xfs {
    /// Reads and checks inode `ino`.
    pub fn inode(&self, ino: u64) -> Result<Inode, FsError> {
        let what = || format!("inode {ino}");
        let offset = self
            .sb
            .inode_byte(ino)
            .ok_or_else(|| corrupt(what(), 0, "inode number outside the filesystem"))?;
        let raw = self.meta(offset, self.sb.inode_size)?;
        let b: &[u8] = &raw;
        if be16(b, 0) != 0x494E {
            return Err(corrupt(what(), offset, "no inode magic"));
        }
        let version = b.get(4).copied().unwrap_or(0);
        let core = match (version, self.sb.v5) {
            (3, true) => 176,
            (1 | 2, false) => 100,
            (v, _) => return Err(corrupt(what(), offset, format!("inode version {v}"))),
        };
        if self.sb.v5 {
            if !crc_ok(b, 100) {
                return Err(corrupt(what(), offset, "CRC mismatch"));
            }
            if be64(b, 152) != ino {
                return Err(corrupt(what(), offset, "inode records another number"));
            }
        }
        let mode = be16(b, 2);
        let kind = match mode & S_IFMT {
            S_IFREG => Type::File,
            S_IFDIR => Type::Dir,
            S_IFLNK => Type::Symlink,
            _ => Type::Special,
        };
        let format = match b.get(5).copied().unwrap_or(0) {
            1 => Format::Local,
            2 => Format::Extents,
            3 => Format::Btree,
            _ => Format::Other,
        };
        let forkoff = usize::from(b.get(82).copied().unwrap_or(0)) * 8;
        let end = if forkoff == 0 {
            b.len()
        } else {
            core + forkoff
        };
        if end > b.len() {
            return Err(corrupt(
                what(),
                offset,
                "attribute fork offset past the inode",
            ));
        }
        let big = self.sb.nrext64 && version == 3 && be64(b, 120) & DIFLAG2_NREXT64 != 0;
        let nextents = if big {
            be64(b, 24)
        } else {
            u64::from(be32(b, 76))
        };
        if kind == Type::File && be16(b, 90) & DIFLAG_REALTIME != 0 {
            return Err(super::unsupported(format!(
                "{}: data on the realtime device",
                what()
            )));
        }
        Ok(Inode {
            ino,
            offset,
            kind,
            format,
            size: be64(b, 56),
            nextents,
            raw,
            fork: (core, end),
        })
    }
}
