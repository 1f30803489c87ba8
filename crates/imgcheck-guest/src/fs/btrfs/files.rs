//! Paths, inodes, directories and file contents inside one subvolume tree
//! (crossing into nested subvolumes the way a mount shows them).
//!
//! A path is looked up one component at a time through DIR_ITEMs (keyed by
//! the name's hash, so one lookup per component); a directory is listed
//! through its DIR_INDEX items; a file is read from its EXTENT_DATA items,
//! only those overlapping the bytes asked for.

use std::rc::Rc;

use super::compress::{self, MAX_STORED};
use super::items::{
    DIR_INDEX, DIR_ITEM, EXTENT_DATA, Extent, INODE_ITEM, Inode, ROOT_ITEM, dir_entries, name_hash,
};
use super::superblock::{FS, corrupt};
use super::tree::Key;
use super::{Fs, Tree};
use crate::fs::FsError;

/// Most EXTENT_DATA items read for one file read (a 1 MiB config file has
/// at most 256 4-KiB extents; a fragmented 64 MiB one 16k).
pub(super) const MAX_EXTENTS: usize = 1 << 16;
/// Largest file read at once (the facts read files of at most a few MiB).
pub(super) const MAX_READ: u64 = 64 << 20;
/// Most path components looked up (PATH_MAX / 2).
const MAX_COMPONENTS: usize = 2048;

impl Fs {
    /// The inode item of `ino` in `tree`, if there is one.
    pub(super) fn inode(&self, tree: &Tree, ino: u64) -> Result<Option<Inode>, FsError> {
        match self.reader.find(tree.root, Key::new(ino, INODE_ITEM, 0))? {
            Some((d, at)) => Ok(Some(Inode::parse(&d, at)?)),
            None => Ok(None),
        }
    }

    /// Looks `path` up from the root directory of `start`: the tree and
    /// inode it names, or `None` when a component does not exist.
    pub(super) fn lookup(&self, start: &Tree, path: &str) -> Result<Option<(Tree, u64)>, FsError> {
        let mut tree = start.clone();
        let mut ino = start.dirid;
        for (n, name) in path.split('/').filter(|c| !c.is_empty()).enumerate() {
            if n >= MAX_COMPONENTS {
                return Err(FsError::LimitExceeded {
                    fs: FS,
                    what: "path components".into(),
                    limit: MAX_COMPONENTS as u64,
                });
            }
            let key = Key::new(ino, DIR_ITEM, name_hash(name.as_bytes()));
            let Some((data, at)) = self.reader.find(tree.root, key)? else {
                return Ok(None);
            };
            let entries = dir_entries(&data, at)?;
            let Some(e) = entries.iter().find(|e| e.name == name.as_bytes()) else {
                return Ok(None);
            };
            match e.location.ty {
                INODE_ITEM => ino = e.location.objectid,
                ROOT_ITEM => {
                    tree = self.subvolume(e.location.objectid)?;
                    ino = tree.dirid;
                }
                t => {
                    return Err(corrupt(
                        "directory item",
                        at,
                        format!("entry {name:?} points at key type {t}"),
                    ));
                }
            }
        }
        Ok(Some((tree, ino)))
    }

    /// Up to `max` names in directory `ino` of `tree` (UTF-8 names only,
    /// as the facts compare names as strings).
    pub(super) fn list(&self, tree: &Tree, ino: u64, max: usize) -> Result<Vec<String>, FsError> {
        let mut out = Vec::new();
        self.reader
            .scan(tree.root, Key::new(ino, DIR_INDEX, 0), max, |k, d, at| {
                if k.objectid != ino || k.ty != DIR_INDEX {
                    return Ok(false);
                }
                for e in dir_entries(d, at)? {
                    if let Ok(n) = String::from_utf8(e.name)
                        && out.len() < max
                        && n != "."
                        && n != ".."
                    {
                        out.push(n);
                    }
                }
                Ok(true)
            })?;
        Ok(out)
    }

    /// The first `min(size, max)` bytes of file `ino` of `tree`, whose
    /// inode says it has `size` bytes. Holes and prealloc read as zeros.
    pub(super) fn read_file(
        &self,
        tree: &Tree,
        ino: u64,
        size: u64,
        max: u64,
    ) -> Result<Vec<u8>, FsError> {
        let want = size.min(max);
        if want > MAX_READ {
            return Err(FsError::LimitExceeded {
                fs: FS,
                what: format!("read of {want} bytes of inode {ino}"),
                limit: MAX_READ,
            });
        }
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(0)];
        let allowance = want.saturating_mul(4).saturating_add(4 << 20);
        let mut budget = Budget {
            total: allowance,
            left: allowance,
            last: None,
        };
        let start = Key::new(ino, EXTENT_DATA, 0);
        self.reader
            .scan(tree.root, start, MAX_EXTENTS, |k, d, at| {
                if k.objectid != ino || k.ty != EXTENT_DATA || k.offset >= want {
                    return Ok(false);
                }
                // `k.offset < want <= buf.len()` from the filter above.
                let pos = usize::try_from(k.offset).unwrap_or(usize::MAX);
                let dst = buf.get_mut(pos..).unwrap_or_default();
                self.fill(Extent::parse(d, at)?, dst, at, &mut budget)?;
                Ok(true)
            })?;
        Ok(buf)
    }

    /// The decoded compressed extent at `disk_bytenr`, from the budget's
    /// last one when it is the same (consecutive file extents often share
    /// one compressed extent after partial overwrites).
    fn decoded(
        &self,
        e: (u8, u64, u64, u64),
        at: u64,
        budget: &mut Budget,
    ) -> Result<Rc<Vec<u8>>, FsError> {
        let (compression, disk_bytenr, disk_num_bytes, ram_bytes) = e;
        if let Some((b, d)) = &budget.last
            && *b == disk_bytenr
            && d.len() as u64 == ram_bytes
        {
            return Ok(d.clone());
        }
        if disk_num_bytes > MAX_STORED {
            return Err(FsError::LimitExceeded {
                fs: FS,
                what: format!("stored size {disk_num_bytes} of the compressed extent at {at}"),
                limit: MAX_STORED,
            });
        }
        budget.spend(disk_num_bytes.saturating_add(ram_bytes), at)?;
        let mut stored = vec![0u8; usize::try_from(disk_num_bytes).unwrap_or(0)];
        self.reader.read_logical(disk_bytenr, &mut stored)?;
        let out = Rc::new(compress::decode(
            compression,
            &stored,
            ram_bytes,
            self.sb.sectorsize,
            at,
        )?);
        budget.last = Some((disk_bytenr, out.clone()));
        Ok(out)
    }

    /// Copies what extent `e` holds into `dst` (the file from the extent's
    /// start to the end of the read), as far as both go.
    fn fill(&self, e: Extent, dst: &mut [u8], at: u64, budget: &mut Budget) -> Result<(), FsError> {
        let copy = |dst: &mut [u8], src: &[u8]| {
            let n = dst.len().min(src.len());
            dst.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(src.get(..n).unwrap_or_default());
        };
        match e {
            Extent::Zeros => Ok(()),
            Extent::Inline {
                compression: 0,
                ram_bytes,
                data,
            } => {
                let n = usize::try_from(ram_bytes)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                copy(dst, data.get(..n).unwrap_or_default());
                Ok(())
            }
            Extent::Inline {
                compression,
                ram_bytes,
                data,
            } => {
                budget.spend(ram_bytes, at)?;
                let out = compress::decode(compression, &data, ram_bytes, self.sb.sectorsize, at)?;
                copy(dst, &out);
                Ok(())
            }
            Extent::Regular {
                compression: 0,
                disk_bytenr,
                offset,
                num_bytes,
                ..
            } => {
                let n = usize::try_from(num_bytes)
                    .unwrap_or(usize::MAX)
                    .min(dst.len());
                let from = disk_bytenr
                    .checked_add(offset)
                    .ok_or_else(|| corrupt("file extent", at, "address overflows"))?;
                // Overlapping extents would re-read the same bytes.
                budget.spend(n as u64, at)?;
                self.reader
                    .read_logical(from, dst.get_mut(..n).unwrap_or_default())
            }
            Extent::Regular {
                compression,
                disk_bytenr,
                disk_num_bytes,
                offset,
                num_bytes,
                ram_bytes,
            } => {
                let out = self.decoded(
                    (compression, disk_bytenr, disk_num_bytes, ram_bytes),
                    at,
                    budget,
                )?;
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let n = usize::try_from(num_bytes)
                    .unwrap_or(usize::MAX)
                    .min(dst.len());
                let end = start.checked_add(n);
                let src = end.and_then(|e| out.get(start..e)).ok_or_else(|| {
                    corrupt(
                        "file extent",
                        at,
                        format!("range {offset}+{num_bytes} outside the {ram_bytes}-byte extent"),
                    )
                })?;
                copy(dst, src);
                Ok(())
            }
        }
    }
}

/// What one file read may still read and decode: overlapping extents, or
/// extents that all point at the same 128 KiB compressed extent, must not
/// make a 1 MiB read read or decode gigabytes.
struct Budget {
    /// The allowance it started with (for the error).
    total: u64,
    /// Bytes of compressed input plus decoded output still allowed.
    left: u64,
    /// The last compressed extent decoded (logical address, bytes).
    last: Option<(u64, Rc<Vec<u8>>)>,
}

impl Budget {
    fn spend(&mut self, n: u64, at: u64) -> Result<(), FsError> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| FsError::LimitExceeded {
                fs: FS,
                what: format!("bytes read and decoded for one file read (extent at {at})"),
                limit: self.total,
            })?;
        Ok(())
    }
}
