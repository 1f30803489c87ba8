//! btrfs, read in userspace: the default subvolume (what a plain mount
//! shows), named subvolumes (Fedora's `root`/`home`, openSUSE's `@` and
//! its snapshot), fstab's `subvol=`/`subvolid=`, inline / regular /
//! prealloc extents and holes, zlib / LZO / zstd compressed extents.
//!
//! Files per concern: `superblock` (primary superblock, field readers),
//! `chunks` (sys_chunk_array bootstrap, chunk items, logical->physical),
//! `tree` (checked nodes, ordered scans, the node cache), `items` (item
//! layouts), `files` (paths, directories, extent data), `compress`
//! (decoders and btrfs's LZO framing), `subvol` (subvolumes).
//!
//! Why hand-written: we judged the two crates named in issue 10 on our
//! fixtures. `lambutter` 0.5 (no_std, for bootloaders) read Fedora's
//! `subvol=root` exactly like its source tree and survived 2000
//! checksum-fixed metadata mutations without a panic, but it does not fit
//! the seam: it cannot list subvolumes (no ROOT_REF walk, so Fedora's
//! `root` under a top-level default could only be found by guessing ids),
//! lists a whole directory with no bound where [`GuestFs::read_dir`] must
//! stop at `max`, lets one compressed extent claim 16 MiB, and caches no
//! tree node: opening `subvol=root` and reading the files and directories
//! a check reads took 1.48 MB of reads, where this reader's whole check of
//! the same disk reads about 180 KB (as little as an ext4 check). Its
//! extent reader also casts disk values with `as usize` and adds them
//! unchecked. `btrfs-core` 0.1 walks the chunk tree over an in-memory
//! `&[u8]` of the whole image, resolves paths within a single leaf and
//! knows only the top-level subvolume. The format is small enough that
//! owning it costs less than wrapping either.
//!
//! Every view of one filesystem shares one `Fs` (superblock, chunk map,
//! node cache), so trying the alternate roots and the fstab subvolumes
//! re-reads nothing.

mod chunks;
mod compress;
mod files;
mod items;
mod subvol;
mod superblock;
mod tree;

use std::rc::Rc;
use std::sync::Arc;

use imgcheck_source::ByteSource;

use self::chunks::{CHUNK_ITEM_KEY, Chunk, ChunkMap, MAX_CHUNKS};
use self::superblock::Superblock;
use self::tree::{Key, Reader, Root};
use crate::fs::{FsError, GuestFs, Kind};
use crate::report::FsKind;

/// Objectid of chunk items in the chunk tree.
const FIRST_CHUNK_TREE: u64 = 256;
/// Longest symlink target read (PATH_MAX).
const MAX_LINK: u64 = 4096;

/// One opened filesystem: what every subvolume view shares.
#[derive(Debug)]
struct Fs {
    sb: Superblock,
    reader: Reader,
    root_tree: Root,
}

/// One subvolume's tree.
#[derive(Debug, Clone)]
struct Tree {
    /// Subvolume id (5 = top level).
    id: u64,
    /// Its root node.
    root: Root,
    /// Its root directory's inode (256).
    dirid: u64,
}

/// A [`GuestFs`] view of one subvolume.
#[derive(Debug)]
struct View {
    fs: Rc<Fs>,
    tree: Tree,
}

/// Opens the btrfs filesystem in `src`, viewed at its default subvolume.
pub fn open(src: Arc<dyn ByteSource>) -> Result<Rc<dyn GuestFs>, FsError> {
    let fs = Rc::new(load(src)?);
    let id = fs.default_subvolume()?;
    let tree = fs.subvolume(id)?;
    Ok(Rc::new(View { fs, tree }))
}

/// Superblock, chunk map (bootstrap, then the chunk tree), root tree.
fn load(src: Arc<dyn ByteSource>) -> Result<Fs, FsError> {
    let sb = Superblock::read(src.as_ref())?;
    let sys = ChunkMap::from_sys_array(&sb.sys_chunk_array, sb.devid)?;
    let mut reader = Reader::new(src, sys, sb.nodesize, sb.csum_crc32c);
    let chunk_root = Root {
        logical: sb.chunk_root,
        level: sb.chunk_root_level,
    };
    let mut found = Vec::new();
    reader.scan(
        chunk_root,
        Key::new(FIRST_CHUNK_TREE, CHUNK_ITEM_KEY, 0),
        MAX_CHUNKS,
        |k, d, at| {
            if k.objectid != FIRST_CHUNK_TREE || k.ty != CHUNK_ITEM_KEY {
                return Ok(false);
            }
            found.push(Chunk::parse(k.offset, d, at)?);
            Ok(true)
        },
    )?;
    for c in found {
        reader.map.insert(c)?;
    }
    let root_tree = Root {
        logical: sb.root,
        level: sb.root_level,
    };
    Ok(Fs {
        sb,
        reader,
        root_tree,
    })
}

impl View {
    /// The tree and inode `path` names, with its inode item.
    fn resolve(&self, path: &str) -> Result<Option<(Tree, u64, items::Inode)>, FsError> {
        let Some((tree, ino)) = self.fs.lookup(&self.tree, path)? else {
            return Ok(None);
        };
        Ok(self.fs.inode(&tree, ino)?.map(|i| (tree, ino, i)))
    }

    /// [`Self::resolve`] for a path that must exist.
    fn existing(&self, path: &str) -> Result<(Tree, u64, items::Inode), FsError> {
        self.resolve(path)?.ok_or_else(|| FsError::WrongKind {
            path: path.to_owned(),
            why: "no such file",
        })
    }

    fn view(&self, tree: Tree) -> Rc<dyn GuestFs> {
        Rc::new(View {
            fs: self.fs.clone(),
            tree,
        })
    }
}

impl GuestFs for View {
    fn kind(&self) -> FsKind {
        FsKind::Btrfs
    }

    fn lstat(&self, path: &str) -> Result<Option<Kind>, FsError> {
        Ok(self.resolve(path)?.map(|(_, _, i)| i.kind()))
    }

    fn read_link(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let (tree, ino, inode) = self.existing(path)?;
        if inode.kind() != Kind::Symlink {
            return Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a symlink",
            });
        }
        self.fs.read_file(&tree, ino, inode.size, MAX_LINK)
    }

    fn read_dir(&self, path: &str, max: usize) -> Result<Vec<String>, FsError> {
        let (tree, ino, inode) = self.existing(path)?;
        if inode.kind() != Kind::Dir {
            return Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a directory",
            });
        }
        self.fs.list(&tree, ino, max)
    }

    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, FsError> {
        let (tree, ino, inode) = self.existing(path)?;
        if !matches!(inode.kind(), Kind::File(_)) {
            return Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a regular file",
            });
        }
        self.fs.read_file(&tree, ino, inode.size, max)
    }

    fn alternate_roots(&self) -> Vec<(String, Rc<dyn GuestFs>)> {
        // An unreadable root tree leaves only the default view: the caller
        // reports the root as not found, which is the honest outcome.
        let Ok(subvols) = self.fs.subvolumes() else {
            return Vec::new();
        };
        subvols
            .into_iter()
            .filter(|(id, _)| *id != self.tree.id)
            .filter_map(|(id, path)| {
                let tree = self.fs.subvolume(id).ok()?;
                Some((format!("subvol={path}"), self.view(tree)))
            })
            .collect()
    }

    fn with_mount_options(&self, options: &str) -> Result<Option<Rc<dyn GuestFs>>, FsError> {
        match self.fs.subvolume_for_options(options)? {
            Some(tree) if tree.id != self.tree.id => Ok(Some(self.view(tree))),
            _ => Ok(None),
        }
    }
}
