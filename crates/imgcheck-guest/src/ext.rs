//! ext2/3/4: our own superblock parse (kind, features, label, UUID) and the
//! adapter that lets `ext4-view` read a filesystem through a [`ByteSource`].
//!
//! ext4-view keeps its superblock private and refuses several incompatible
//! features; parsing the feature words ourselves gives the report exact
//! feature names, tells ext2 from ext3 from ext4 the way blkid does, and
//! lets us name the feature that makes a filesystem unreadable before
//! ext4-view is even asked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use ext4_view::{DirEntry, Ext4, Ext4Error, Ext4Read};
use imgcheck_source::ByteSource;

use crate::fs::{FsError, GuestFs, Kind};
use crate::fsprobe::{label_string, uuid_string};
use crate::report::FsKind;

const COMPAT: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x4, "btree_dir"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

/// Incompat features ext4-view refuses (its `check_incompat_features`).
const VIEW_REFUSES: u32 = 0x1 | 0x8 | 0x10 | 0x100 | 0x400 | 0x1000 | 0x4000 | 0x8000;
/// Incompat features an ext3 driver understands (blkid's
/// `EXT3_FEATURE_INCOMPAT_SUPP`): anything else makes it ext4.
const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
/// ro_compat features an ext3 driver understands.
const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;

/// The parts of an ext superblock we use.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// `s_feature_compat`.
    pub compat: u32,
    /// `s_feature_incompat`.
    pub incompat: u32,
    /// `s_feature_ro_compat`.
    pub ro_compat: u32,
    /// Volume label.
    pub label: Option<String>,
    /// UUID, lower-case hyphenated.
    pub uuid: Option<String>,
    /// Total blocks (`s_blocks_count`, with the high half under 64bit).
    pub blocks_count: u64,
    /// Block size in bytes, if `s_log_block_size` is sane (1 KiB..64 KiB).
    pub block_size: Option<u64>,
    /// `s_blocks_per_group`.
    pub blocks_per_group: u32,
    /// `s_first_data_block`.
    pub first_data_block: u32,
    /// Total blocks as ext4-view computes them: it always adds
    /// `s_blocks_count_hi`, 64bit feature or not, and sizes its group
    /// descriptor table from that, so the geometry check must too.
    pub blocks_count_as_read: u64,
}

/// Most block groups we let ext4-view load: it allocates one descriptor per
/// group up front. 2^20 groups is 128 TiB with 4 KiB blocks.
pub const MAX_GROUPS: u64 = 1 << 20;

/// Bytes of the superblock we parse.
const SB_LEN: usize = 0x158;

impl Superblock {
    /// Parses the superblock at byte 1024 of `src`; `None` without the
    /// 0xEF53 magic.
    pub fn read(src: &dyn ByteSource) -> Option<Self> {
        let mut b = [0u8; SB_LEN];
        src.read_exact_at(1024, &mut b).ok()?;
        Self::parse(&b)
    }

    /// Parses the first bytes of a superblock.
    pub fn parse(b: &[u8; SB_LEN]) -> Option<Self> {
        if b[0x38] != 0x53 || b[0x39] != 0xEF {
            return None;
        }
        let le = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let uuid: [u8; 16] = b[0x68..0x78].try_into().ok()?;
        let incompat = le(0x60);
        let hi = if incompat & 0x80 != 0 { le(0x150) } else { 0 };
        let log = le(0x18);
        Some(Self {
            blocks_count: u64::from(hi) << 32 | u64::from(le(0x04)),
            blocks_count_as_read: u64::from(le(0x150)) << 32 | u64::from(le(0x04)),
            block_size: (log <= 6).then(|| 1024u64 << log),
            blocks_per_group: le(0x20),
            first_data_block: le(0x14),
            compat: le(0x5C),
            incompat,
            ro_compat: le(0x64),
            uuid: uuid_string(&uuid),
            label: label_string(&b[0x78..0x88]),
        })
    }

    /// ext2, ext3 or ext4, decided as blkid does: features an ext3 driver
    /// does not know make it ext4; otherwise a journal makes it ext3.
    pub fn kind(&self) -> FsKind {
        let ext4_only =
            self.incompat & !EXT3_INCOMPAT != 0 || self.ro_compat & !EXT3_RO_COMPAT != 0;
        if ext4_only {
            FsKind::Ext4
        } else if self.compat & 0x4 != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        }
    }

    /// Names of all feature bits set (unknown bits as `compat_0x..`).
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (word, table, what) in [
            (self.compat, COMPAT, "compat"),
            (self.incompat, INCOMPAT, "incompat"),
            (self.ro_compat, RO_COMPAT, "ro_compat"),
        ] {
            for bit in 0..32 {
                let m = 1u32 << bit;
                if word & m != 0 {
                    match table.iter().find(|(b, _)| *b == m) {
                        Some((_, n)) => out.push((*n).to_owned()),
                        None => out.push(format!("{what}_0x{m:x}")),
                    }
                }
            }
        }
        out
    }

    /// Geometry problems that would make the reader allocate or read
    /// absurd amounts: a filesystem larger than the `fs_len` bytes it lives
    /// in, or more than [`MAX_GROUPS`] block groups.
    pub fn geometry_problem(&self, fs_len: u64) -> Option<String> {
        let Some(bs) = self.block_size else {
            return Some("invalid block size in the superblock".into());
        };
        if self.incompat & 0x80 == 0 && self.blocks_count_as_read >> 32 != 0 {
            return Some(format!(
                "s_blocks_count_hi is {} without the 64bit feature (corrupt)",
                self.blocks_count_as_read >> 32
            ));
        }
        let bytes = self.blocks_count.checked_mul(bs);
        if bytes.is_none_or(|b| b > fs_len) {
            return Some(format!(
                "superblock claims {} blocks of {bs} bytes, more than the {fs_len} bytes available (truncated or corrupt)",
                self.blocks_count
            ));
        }
        if self.blocks_per_group == 0 {
            return Some("superblock says 0 blocks per group".into());
        }
        let data = self
            .blocks_count
            .saturating_sub(u64::from(self.first_data_block));
        let groups = data.div_ceil(u64::from(self.blocks_per_group));
        if groups > MAX_GROUPS {
            return Some(format!("{groups} block groups (limit {MAX_GROUPS})"));
        }
        None
    }

    /// Why ext4-view will refuse this filesystem, naming the features, or
    /// `None` if it should load.
    pub fn view_refusal(&self) -> Option<String> {
        let known: u32 = INCOMPAT.iter().map(|(b, _)| b).fold(0, |a, b| a | b);
        let bad = self.incompat & (VIEW_REFUSES | !known);
        if bad != 0 {
            let names: Vec<String> = (0..32)
                .map(|i| 1u32 << i)
                .filter(|m| bad & m != 0)
                .map(|m| {
                    INCOMPAT
                        .iter()
                        .find(|(b, _)| *b == m)
                        .map_or(format!("incompat_0x{m:x}"), |(_, n)| (*n).to_owned())
                })
                .collect();
            return Some(format!(
                "unsupported ext4 feature(s) for the userspace reader: {}",
                names.join(", ")
            ));
        }
        if self.incompat & 0x2 == 0 {
            return Some(
                "ext2 without the filetype feature is not supported by the userspace reader".into(),
            );
        }
        None
    }
}

/// `ext4-view`'s reader over a [`ByteSource`] (a partition slice).
struct SourceRead(Arc<dyn ByteSource>);

impl Ext4Read for SourceRead {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0
            .read_exact_at(start_byte, dst)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    }
}

/// Loads an ext filesystem with ext4-view, after our own feature check.
pub fn load(src: Arc<dyn ByteSource>) -> Result<Ext4, FsError> {
    let sb = Superblock::read(src.as_ref()).ok_or_else(|| {
        FsError::corrupt(
            FS,
            "superblock",
            1024,
            "no ext superblock (magic 0xEF53 missing)",
        )
    })?;
    if let Some(why) = sb.view_refusal() {
        return Err(FsError::Unsupported { fs: FS, what: why });
    }
    if let Some(why) = sb.geometry_problem(src.len()) {
        return Err(FsError::corrupt(FS, "superblock", 1024, why));
    }
    Ext4::load(Box::new(SourceRead(src))).map_err(|e| view_error("superblock", &e))
}

/// Opens an ext2/3/4 filesystem behind the [`GuestFs`] seam.
pub fn open(src: Arc<dyn ByteSource>) -> Result<Rc<dyn GuestFs>, FsError> {
    let kind = Superblock::read(src.as_ref()).map_or(FsKind::Ext4, |s| s.kind());
    let fs = load(src)?;
    Ok(Rc::new(ExtFs {
        fs,
        kind,
        dirs: RefCell::default(),
    }))
}

/// Name used in errors.
const FS: &str = "ext4";

/// ext4-view's error, classified: its `Corrupt`/`Incompatible` carry their
/// own detail in `Display`; the structure is the path asked for.
fn view_error(what: &str, e: &Ext4Error) -> FsError {
    match e {
        Ext4Error::Incompatible(_) => FsError::Unsupported {
            fs: FS,
            what: format!("{what}: {e}"),
        },
        _ => FsError::corrupt(FS, what, 0, e.to_string()),
    }
}

/// An ext filesystem opened by ext4-view, as a [`GuestFs`].
struct ExtFs {
    fs: Ext4,
    kind: FsKind,
    dirs: RefCell<Listings>,
}

/// Directory listings kept for lookups. ext4-view resolves every path from
/// the root and scans (and CRC-checks) each directory's blocks again on
/// every lookup; an image built by `mkfs.ext4 -d` has no htree index, and
/// systemd's unit search makes hundreds of lookups, mostly misses, in
/// /usr/lib/systemd/system and /etc/systemd/system. A directory listed once
/// (by `read_dir`, or on its second lookup) answers later lookups from a
/// hash map, a hit costing one inode read.
#[derive(Default)]
struct Listings {
    /// Listing by directory path; `None` when the directory is not cached
    /// (too large, or unreadable: ext4-view answers those itself).
    by_dir: HashMap<String, Option<Rc<Listing>>>,
    /// Lookups seen per directory not yet listed.
    lookups: HashMap<String, u32>,
    /// Entries held across all listings.
    entries: usize,
}

/// One directory's entries, in on-disk order.
struct Listing {
    order: Vec<DirEntry>,
    by_name: HashMap<String, usize>,
}

/// Most entries one cached listing holds.
const LISTING_MAX: usize = 1 << 16;
/// Most entries all cached listings hold together.
const LISTINGS_MAX: usize = 1 << 18;

impl ExtFs {
    /// The cached listing of `dir`, listing it now if `list` says so.
    fn listing(&self, dir: &str, list: bool) -> Option<Rc<Listing>> {
        if let Some(l) = self.dirs.borrow().by_dir.get(dir) {
            return l.clone();
        }
        if !list {
            return None;
        }
        let listing = self.list(dir).map(Rc::new);
        let mut d = self.dirs.borrow_mut();
        d.entries += listing.as_ref().map_or(0, |l| l.order.len());
        d.by_dir.insert(dir.to_owned(), listing.clone());
        listing
    }

    /// Reads `dir` whole, or `None` when it cannot be read or is too large
    /// to keep.
    fn list(&self, dir: &str) -> Option<Listing> {
        let room = LISTINGS_MAX.saturating_sub(self.dirs.borrow().entries);
        let mut l = Listing {
            order: Vec::new(),
            by_name: HashMap::new(),
        };
        for e in self.fs.read_dir(dir).ok()? {
            let e = e.ok()?;
            if l.order.len() >= LISTING_MAX.min(room) {
                return None;
            }
            let Ok(n) = e.file_name().as_str() else {
                continue;
            };
            if n != "." && n != ".." {
                l.by_name.insert(n.to_owned(), l.order.len());
                l.order.push(e);
            }
        }
        Some(l)
    }

    /// `path` looked up in its directory's cached listing (listing the
    /// directory now on its second lookup): `Some(None)` when the listing
    /// has no such name, `None` when there is no listing to ask.
    fn lookup(&self, path: &str) -> Option<Option<DirEntry>> {
        let (dir, name) = path.rsplit_once('/')?;
        if name.is_empty() || name == "." || name == ".." {
            return None;
        }
        let dir = if dir.is_empty() { "/" } else { dir };
        let listing = self.listing(dir, false).or_else(|| {
            self.seen_before(dir)
                .then(|| self.listing(dir, true))
                .flatten()
        })?;
        Some(listing.by_name.get(name).map(|&i| listing.order[i].clone()))
    }

    /// True when `dir` has been looked in before (the second lookup lists
    /// it: a single lookup stays as cheap as ext4-view makes it).
    fn seen_before(&self, dir: &str) -> bool {
        let mut d = self.dirs.borrow_mut();
        if d.lookups.len() >= 4096 && !d.lookups.contains_key(dir) {
            return false;
        }
        let n = d.lookups.entry(dir.to_owned()).or_insert(0);
        *n += 1;
        *n >= 2
    }
}

/// The [`Kind`] of an inode's metadata.
fn kind_of(md: &ext4_view::Metadata) -> Kind {
    let ft = md.file_type();
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_regular_file() {
        Kind::File(md.len())
    } else {
        Kind::Special
    }
}

impl std::fmt::Debug for ExtFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtFs").field("kind", &self.kind).finish()
    }
}

impl GuestFs for ExtFs {
    fn kind(&self) -> FsKind {
        self.kind
    }

    fn lstat(&self, path: &str) -> Result<Option<Kind>, FsError> {
        if let Some(looked) = self.lookup(path) {
            let Some(e) = looked else {
                return Ok(None);
            };
            let md = e.metadata().map_err(|e| view_error(path, &e))?;
            return Ok(Some(kind_of(&md)));
        }
        match self.fs.symlink_metadata(path) {
            Ok(md) => Ok(Some(kind_of(&md))),
            Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => Ok(None),
            Err(e) => Err(view_error(path, &e)),
        }
    }

    fn read_link(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let t = self.fs.read_link(path).map_err(|e| view_error(path, &e))?;
        Ok(t.as_ref().to_vec())
    }

    fn read_dir(&self, path: &str, max: usize) -> Result<Vec<String>, FsError> {
        if let Some(l) = self.listing(path, true) {
            return Ok(l
                .order
                .iter()
                .take(max)
                .filter_map(|e| e.file_name().as_str().ok().map(str::to_owned))
                .collect());
        }
        let rd = self.fs.read_dir(path).map_err(|e| view_error(path, &e))?;
        let mut out = Vec::new();
        for e in rd {
            if out.len() >= max {
                break;
            }
            let e = e.map_err(|e| view_error(path, &e))?;
            let name = e.file_name();
            let Ok(n) = name.as_str() else { continue };
            if n != "." && n != ".." {
                out.push(n.to_owned());
            }
        }
        Ok(out)
    }

    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, FsError> {
        // A regular file in a listed directory opens by its entry; the
        // rest (symlinks to follow, unlisted directories) by path.
        let entry = self.lookup(path).flatten();
        let opened = match entry {
            Some(e) if e.file_type().is_ok_and(|t| t.is_regular_file()) => e.open(),
            _ => self.fs.open(path),
        };
        let mut f = opened.map_err(|e| view_error(path, &e))?;
        let len = f.metadata().len();
        let want = usize::try_from(len.min(max)).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; want];
        let mut got = 0;
        // ext4-view's File::read returns at most one block per call.
        while got < want {
            let dst = buf.get_mut(got..).unwrap_or_default();
            let k = std::io::Read::read(&mut f, dst)
                .map_err(|e| FsError::corrupt(FS, path, 0, e.to_string()))?;
            if k == 0 {
                break;
            }
            got += k;
        }
        buf.truncate(got);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(compat: u32, incompat: u32, ro: u32) -> Superblock {
        let mut b = [0u8; SB_LEN];
        b[0x38] = 0x53;
        b[0x39] = 0xEF;
        b[0x5C..0x60].copy_from_slice(&compat.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        b[0x64..0x68].copy_from_slice(&ro.to_le_bytes());
        b[0x78..0x7C].copy_from_slice(b"root");
        Superblock::parse(&b).unwrap()
    }

    #[test]
    fn kinds() {
        assert_eq!(sb(0x38, 0x2, 0x3).kind(), FsKind::Ext2);
        assert_eq!(sb(0x3C, 0x2, 0x3).kind(), FsKind::Ext3);
        assert_eq!(sb(0x3C, 0x2C2, 0x7B).kind(), FsKind::Ext4);
        // ext4 features without a journal is still ext4.
        assert_eq!(sb(0x38, 0x42, 0x3).kind(), FsKind::Ext4);
        let s = sb(0x3C, 0x2C2, 0x7B);
        assert!(s.feature_names().contains(&"extent".to_owned()));
        assert!(s.feature_names().contains(&"has_journal".to_owned()));
        assert_eq!(s.label.as_deref(), Some("root"));
        assert!(s.view_refusal().is_none());
        let r = sb(0x3C, 0x2 | 0x8000, 0).view_refusal().unwrap();
        assert!(r.contains("inline_data"), "{r}");
        let r = sb(0x3C, 0x2 | 0x10 | 0x4000, 0).view_refusal().unwrap();
        assert!(r.contains("meta_bg") && r.contains("large_dir"), "{r}");
        assert!(sb(0, 0, 0).view_refusal().unwrap().contains("filetype"));
        // Geometry: 0 blocks of 1 KiB fits; then grow the claims.
        let mut g = sb(0x3C, 0x2, 0);
        g.blocks_per_group = 8192;
        assert!(g.geometry_problem(1 << 20).is_none());
        g.blocks_count = 2048;
        assert!(g.geometry_problem(1 << 20).unwrap().contains("more than"));
        g.blocks_count = 1024;
        g.blocks_per_group = 0;
        assert!(g.geometry_problem(1 << 20).is_some());
        g.blocks_per_group = 1;
        g.blocks_count = u64::MAX / 1024;
        assert!(g.geometry_problem(u64::MAX).unwrap().contains("groups"));
        g.block_size = None;
        assert!(g.geometry_problem(1 << 20).is_some());
        let mut b = [0u8; SB_LEN];
        assert!(Superblock::parse(&b).is_none());
        b[0x38] = 0x53;
        assert!(Superblock::parse(&b).is_none());
    }
}
