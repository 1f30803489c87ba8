//! Paths, inodes, directories and file contents inside one subvolume tree
//! (crossing into nested subvolumes the way a mount shows them).
//!
//! A path is looked up one component at a time through DIR_ITEMs (keyed by
//! the name's hash, so one lookup per component); a directory is listed
//! through its DIR_INDEX items; a file is read from its EXTENT_DATA items,
//! only those overlapping the bytes asked for.

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
        let mut items = Vec::new();
        self.reader
            .scan(tree.root, Key::new(ino, DIR_INDEX, 0), max, |k, d, at| {
                if k.objectid != ino || k.ty != DIR_INDEX {
                    return Ok(false);
                }
                items.push((d.to_vec(), at));
                Ok(true)
            })?;
        for (d, at) in items {
            for e in dir_entries(&d, at)? {
                if let Ok(n) = String::from_utf8(e.name)
                    && out.len() < max
                    && n != "."
                    && n != ".."
                {
                    out.push(n);
                }
            }
        }
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
        let want_usize = usize::try_from(want).unwrap_or(0);
        let mut buf = vec![0u8; want_usize];
        let mut extents = Vec::new();
        let start = Key::new(ino, EXTENT_DATA, 0);
        self.reader
            .scan(tree.root, start, MAX_EXTENTS, |k, d, at| {
                if k.objectid != ino || k.ty != EXTENT_DATA || k.offset >= want {
                    return Ok(false);
                }
                extents.push((k.offset, Extent::parse(d, at)?, at));
                Ok(true)
            })?;
        for (pos, e, at) in extents {
            // `pos < want <= usize::MAX` from the scan's filter.
            let pos = usize::try_from(pos).unwrap_or(usize::MAX);
            let dst = buf.get_mut(pos..).unwrap_or_default();
            self.fill(e, dst, at)?;
        }
        Ok(buf)
    }

    /// Copies what extent `e` holds into `dst` (the file from the extent's
    /// start to the end of the read), as far as both go.
    fn fill(&self, e: Extent, dst: &mut [u8], at: u64) -> Result<(), FsError> {
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
                if disk_num_bytes > MAX_STORED {
                    return Err(FsError::LimitExceeded {
                        fs: FS,
                        what: format!(
                            "stored size {disk_num_bytes} of the compressed extent at {at}"
                        ),
                        limit: MAX_STORED,
                    });
                }
                let mut stored = vec![0u8; usize::try_from(disk_num_bytes).unwrap_or(0)];
                self.reader.read_logical(disk_bytenr, &mut stored)?;
                let out =
                    compress::decode(compression, &stored, ram_bytes, self.sb.sectorsize, at)?;
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
