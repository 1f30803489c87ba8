//! Subvolumes: where each one's tree starts (ROOT_ITEM), which one a plain
//! mount shows (the DEFAULT dir item of the root tree), their names and
//! paths (ROOT_REF, then INODE_REFs up to the parent's root directory), and
//! fstab's `subvol=` / `subvolid=`.

use std::collections::BTreeMap;

use super::items::{
    DIR_ITEM, FIRST_FREE, FS_TREE, INODE_REF, ROOT_ITEM, ROOT_REF, RootItem, RootRef, dir_entries,
    inode_ref_name, name_hash,
};
use super::superblock::{FS, corrupt};
use super::tree::{Key, Root};
use super::{Fs, Tree};
use crate::fs::FsError;

/// Most ROOT_ITEMs looked at for one tree id (a subvolume has one; a
/// snapshot's is keyed by its transid).
const MAX_ROOT_ITEMS: usize = 64;
/// Most root-tree items scanned to list subvolumes.
const MAX_ROOT_TREE_ITEMS: usize = 1 << 16;
/// Most subvolumes listed.
pub(super) const MAX_SUBVOLUMES: usize = 1024;
/// Deepest nesting of subvolumes / directories followed to name one.
const MAX_DEPTH: usize = 64;

impl Fs {
    /// The tree of subvolume `id` (5 = top level).
    pub(super) fn subvolume(&self, id: u64) -> Result<Tree, FsError> {
        // Ids 1-255 (but 5) are the internal trees (root, extent, chunk...).
        if id != FS_TREE && id < FIRST_FREE {
            return Err(corrupt(
                "root tree",
                self.root_tree.logical,
                format!("{id} is not a subvolume id"),
            ));
        }
        let mut found = None;
        self.reader.scan(
            self.root_tree,
            Key::new(id, ROOT_ITEM, 0),
            MAX_ROOT_ITEMS,
            |k, d, at| {
                if k.objectid != id || k.ty != ROOT_ITEM {
                    return Ok(false);
                }
                // The last (newest) root item of the id wins, as in the
                // kernel's btrfs_find_root with offset -1.
                found = Some(RootItem::parse(d, at)?);
                Ok(true)
            },
        )?;
        let item = found.ok_or_else(|| {
            corrupt(
                "root tree",
                self.root_tree.logical,
                format!("no root item for subvolume {id}"),
            )
        })?;
        Ok(Tree {
            id,
            root: Root {
                logical: item.bytenr,
                level: item.level,
            },
            dirid: item.root_dirid,
        })
    }

    /// The subvolume a mount without options shows: the root tree's
    /// "default" dir item, else the top level.
    pub(super) fn default_subvolume(&self) -> Result<u64, FsError> {
        let dir = self.sb.root_dir_objectid;
        let key = Key::new(dir, DIR_ITEM, name_hash(b"default"));
        let Some((d, at)) = self.reader.find(self.root_tree, key)? else {
            return Ok(FS_TREE);
        };
        let id = dir_entries(&d, at)?
            .into_iter()
            .find(|e| e.name == b"default")
            .map_or(FS_TREE, |e| e.location.objectid);
        Ok(id)
    }

    /// Every subvolume but the top level, by id, with its path from the
    /// top level ("root", "@/.snapshots/1/snapshot").
    pub(super) fn subvolumes(&self) -> Result<Vec<(u64, String)>, FsError> {
        // child id -> (parent id, ROOT_REF)
        let mut refs: BTreeMap<u64, (u64, RootRef)> = BTreeMap::new();
        self.reader.scan(
            self.root_tree,
            Key::new(0, 0, 0),
            MAX_ROOT_TREE_ITEMS,
            |k, d, at| {
                if k.ty == ROOT_REF && refs.len() < MAX_SUBVOLUMES {
                    refs.insert(k.offset, (k.objectid, RootRef::parse(d, at)?));
                }
                Ok(true)
            },
        )?;
        let mut out = Vec::new();
        for &id in refs.keys() {
            if let Some(p) = self.subvolume_path(id, &refs)? {
                out.push((id, p));
            }
        }
        Ok(out)
    }

    /// The path of subvolume `id` from the top level, `None` when its chain
    /// of parents does not reach the top level.
    fn subvolume_path(
        &self,
        id: u64,
        refs: &BTreeMap<u64, (u64, RootRef)>,
    ) -> Result<Option<String>, FsError> {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            if cur == FS_TREE {
                parts.reverse();
                return Ok(Some(parts.join("/")));
            }
            let Some((parent, r)) = refs.get(&cur) else {
                return Ok(None);
            };
            parts.push(String::from_utf8_lossy(&r.name).into_owned());
            let tree = self.subvolume(*parent)?;
            let mut dirs = self.dir_path(&tree, r.dirid)?;
            dirs.reverse();
            parts.extend(dirs);
            cur = *parent;
        }
        Ok(None)
    }

    /// Names from directory `ino` up to (not including) the root directory
    /// of `tree`, innermost first.
    fn dir_path(&self, tree: &Tree, mut ino: u64) -> Result<Vec<String>, FsError> {
        let mut names = Vec::new();
        for _ in 0..MAX_DEPTH {
            if ino == tree.dirid {
                return Ok(names);
            }
            let mut next = None;
            self.reader
                .scan(tree.root, Key::new(ino, INODE_REF, 0), 1, |k, d, at| {
                    if k.objectid == ino && k.ty == INODE_REF {
                        next = Some((k.offset, inode_ref_name(d, at)?));
                    }
                    Ok(false)
                })?;
            let Some((parent, name)) = next else {
                return Err(corrupt(
                    "inode ref",
                    tree.root.logical,
                    format!("directory {ino} has no name"),
                ));
            };
            names.push(String::from_utf8_lossy(&name).into_owned());
            ino = parent;
        }
        Err(FsError::LimitExceeded {
            fs: FS,
            what: "directory depth while naming a subvolume".into(),
            limit: MAX_DEPTH as u64,
        })
    }

    /// The subvolume fstab's `options` select (`subvolid=` wins over
    /// `subvol=`, as the kernel requires them to agree), `None` when they
    /// name none.
    pub(super) fn subvolume_for_options(&self, options: &str) -> Result<Option<Tree>, FsError> {
        let mut by_id = None;
        let mut by_path = None;
        for o in options.split(',') {
            if let Some(v) = o.strip_prefix("subvolid=") {
                let id: u64 = v.parse().map_err(|_| FsError::Unsupported {
                    fs: FS,
                    what: format!("mount option {o:?}"),
                })?;
                by_id = Some(if id == 0 { FS_TREE } else { id });
            } else if let Some(v) = o.strip_prefix("subvol=") {
                by_path = Some(v.to_owned());
            }
        }
        if let Some(id) = by_id {
            return self.subvolume(id).map(Some);
        }
        let Some(path) = by_path else {
            return Ok(None);
        };
        let top = self.subvolume(FS_TREE)?;
        match self.lookup(&top, &path)? {
            Some((tree, ino)) if ino == tree.dirid => Ok(Some(tree)),
            Some(_) => Err(corrupt(
                "fstab subvol=",
                0,
                format!("{path:?} is a directory, not a subvolume"),
            )),
            None => Err(corrupt(
                "fstab subvol=",
                0,
                format!("no subvolume {path:?} on this filesystem"),
            )),
        }
    }
}
