//! The guest-filesystem seam: one small trait, [`GuestFs`], that every
//! filesystem reader implements (ext2/3/4 through ext4-view, XFS, btrfs),
//! and [`open`], the one place that picks a reader for a filesystem kind.
//!
//! Everything above this module (the root finder, fstab, the facts) sees
//! only `Rc<dyn GuestFs>`; it never knows which filesystem it reads.
//!
//! The trait is deliberately primitive: path resolution, symlink following
//! and mount grafting live once, in [`crate::root`], so a reader answers
//! only for paths whose directories are already resolved. A reader must
//! treat every byte as hostile: bounded reads, checked arithmetic, capped
//! loops, and an [`FsError`] (never a panic) for anything it cannot read.

pub mod btrfs;

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use imgcheck_source::{ByteSource, SourceError};

use crate::report::FsKind;

pub mod xfs;

/// What a path names, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file of this many bytes.
    File(u64),
    /// Directory.
    Dir,
    /// Symlink.
    Symlink,
    /// Device, fifo, socket.
    Special,
}

/// Why a filesystem (or one object in it) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The bytes underneath could not be read.
    #[error(transparent)]
    Io(#[from] SourceError),
    /// An on-disk structure is damaged.
    #[error("{fs}: {structure} at byte {offset}: {reason}")]
    Corrupt {
        /// Filesystem kind ("xfs", "btrfs", "ext4", "lvm2").
        fs: &'static str,
        /// The structure (e.g. "inode 131", "directory block", "chunk tree").
        structure: String,
        /// Byte offset of the structure inside the filesystem (or PV).
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A feature the reader does not implement.
    #[error("{fs}: {what} is not supported")]
    Unsupported {
        /// Filesystem kind.
        fs: &'static str,
        /// The feature or object.
        what: String,
    },
    /// A count or size read from disk is over one of our limits.
    #[error("{fs}: {what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// Filesystem kind.
        fs: &'static str,
        /// What was counted.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The path is not of the kind the call needs (read of a directory,
    /// read_dir of a file, read_link of a non-link).
    #[error("{path}: {why}")]
    WrongKind {
        /// The path asked for.
        path: String,
        /// "not a directory", "not a regular file", "not a symlink".
        why: &'static str,
    },
    /// Path resolution in the guest tree failed: a symlink loop, a path
    /// over the length limit, a link target that is not UTF-8.
    #[error("{path}: {why}")]
    Resolve {
        /// The path asked for.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A file over the size imgcheck reads whole for this purpose.
    #[error("{path}: {size} bytes, over the {cap}-byte limit for this file")]
    TooLarge {
        /// The guest path.
        path: String,
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// An error reading the guest file `path`.
    #[error("{path}: {source}")]
    At {
        /// The guest path asked for.
        path: String,
        /// The filesystem's error.
        #[source]
        source: Box<FsError>,
    },
}

impl FsError {
    /// This error, attributed to the guest path `path`.
    pub fn at(self, path: &str) -> Self {
        Self::At {
            path: path.to_owned(),
            source: Box::new(self),
        }
    }

    /// Shorthand for [`FsError::Resolve`].
    pub fn resolve(path: &str, why: impl Into<String>) -> Self {
        Self::Resolve {
            path: path.to_owned(),
            why: why.into(),
        }
    }

    /// Shorthand for [`FsError::Corrupt`].
    pub fn corrupt(
        fs: &'static str,
        structure: impl Into<String>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corrupt {
            fs,
            structure: structure.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// A read-only view of one filesystem tree (for btrfs: one subvolume).
///
/// Paths are absolute within this filesystem ("/etc/os-release"), already
/// normalised (no "." or "..", no empty components), and every directory
/// on the way is already resolved: a reader never follows a symlink itself.
pub trait GuestFs: fmt::Debug {
    /// The filesystem's kind.
    fn kind(&self) -> FsKind;

    /// What `path` names, not following a final symlink. `Ok(None)` when it
    /// does not exist or a parent is not a directory.
    fn lstat(&self, path: &str) -> Result<Option<Kind>, FsError>;

    /// The target of the symlink `path`, as raw bytes.
    fn read_link(&self, path: &str) -> Result<Vec<u8>, FsError>;

    /// The names in directory `path`, without "." and "..", in any order.
    /// At most `max` names: a directory with more is truncated to `max`,
    /// never an error and never more work than needed for `max` names plus
    /// the directory's metadata.
    fn read_dir(&self, path: &str, max: usize) -> Result<Vec<String>, FsError>;

    /// The first `min(max, size)` bytes of the regular file `path` (holes
    /// read as zeros), reading no more of the file than that.
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, FsError>;

    /// Other trees on the same filesystem that may hold the OS root when
    /// this one does not (btrfs: named subvolumes such as Fedora's "root"
    /// or openSUSE's "@"), each with a name for messages ("subvol=root").
    /// Bounded; empty for filesystems without subvolumes.
    fn alternate_roots(&self) -> Vec<(String, Rc<dyn GuestFs>)> {
        Vec::new()
    }

    /// Where `path` of this view lives on disk, for traces that other
    /// tools check: the byte offset of the filesystem holding it (this
    /// view's is `offset`) and the path inside that filesystem. A view of
    /// a subdirectory (an ostree deployment) adds its prefix; an overlay
    /// answers for the layer that holds the file.
    fn on_disk(&self, path: &str, offset: u64) -> (u64, String) {
        (offset, path.to_owned())
    }

    /// The view that the fstab mount options `options` select (btrfs
    /// `subvol=`/`subvolid=`), or `Ok(None)` when they select this view.
    fn with_mount_options(&self, options: &str) -> Result<Option<Rc<dyn GuestFs>>, FsError> {
        let _ = options;
        Ok(None)
    }
}

/// Opens the filesystem of kind `kind` whose bytes are `src`, when
/// imgcheck can read that kind. `None` for kinds it does not read.
pub fn open(kind: FsKind, src: Arc<dyn ByteSource>) -> Option<Result<Rc<dyn GuestFs>, FsError>> {
    match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Some(crate::ext::open(src)),
        FsKind::Xfs => Some(xfs::open(src)),
        FsKind::Btrfs => Some(btrfs::open(src)),
        _ => None,
    }
}
