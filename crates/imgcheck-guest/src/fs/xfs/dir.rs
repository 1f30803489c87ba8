//! Directories in every format XFS writes: shortform (entries inline in
//! the inode), block (one directory block holding entries, leaf and tail),
//! and leaf, node and btree directories (data blocks in the first 32 GiB
//! of the directory's address space, leaf/free index blocks above it).
//!
//! Lookups and listings both scan the data blocks in order and stop as
//! soon as they have what they need; the hash index (leaf and node blocks)
//! is never read. For the directories a check looks into (/etc, /usr/lib,
//! site-packages: a handful of blocks) a scan reads less than the hash
//! path would, and it needs one parser instead of three.
//!
//! Formats ("XFS Algorithms & Data Structures", "Directories"): a data
//! entry is inumber (8), namelen (1), name, file type (1, with ftype), tag
//! (2), padded to 8 bytes; a free region is 0xFFFF, length (2), ..., tag.
//! v4 blocks start with a 16-byte header ("XD2B" block, "XD2D" data), v5
//! with a 64-byte CRC'd header ("XDB3", "XDD3").

use std::rc::Rc;

use super::bmap::Extent as Bmap;
use super::inode::{Format, Inode, Type};
use super::{MAX_DIR_BYTES, Xfs, be16, be32, be64, corrupt, crc_ok, limit};
use crate::fs::FsError;

/// First byte of the leaf area of a directory's address space
/// (`XFS_DIR2_LEAF_OFFSET`): data blocks live below it.
const LEAF_OFFSET: u64 = 1 << 35;

/// What a scan is for.
pub enum Want<'a> {
    /// The inode of this name.
    Lookup(&'a [u8]),
    /// Up to this many names (without "." and "..").
    List(usize),
}

/// A scan's result: the inode found (lookup) or the names (list).
#[derive(Default)]
pub struct Found {
    /// Inode number of the name looked up.
    pub ino: Option<u64>,
    /// Names listed.
    pub names: Vec<String>,
}

impl Found {
    /// Takes one entry; true when the scan can stop.
    fn take(&mut self, want: &Want<'_>, name: &[u8], ino: u64) -> bool {
        match want {
            Want::Lookup(n) => {
                if *n == name {
                    self.ino = Some(ino);
                    return true;
                }
                false
            }
            Want::List(max) => {
                if self.names.len() >= *max {
                    return true;
                }
                if name != b"." && name != b".." {
                    // Non-UTF-8 names cannot be asked for by path here.
                    if let Ok(s) = std::str::from_utf8(name) {
                        self.names.push(s.to_owned());
                    }
                }
                self.names.len() >= *max
            }
        }
    }
}

impl Xfs {
    /// Scans directory `dir` for `want`.
    pub fn scan_dir(
        &self,
        dir: &Inode,
        want: &Want<'_>,
        budget: &mut u64,
    ) -> Result<Found, FsError> {
        let mut found = Found::default();
        if dir.kind != Type::Dir {
            return Ok(found);
        }
        if matches!(want, Want::List(0)) {
            return Ok(found);
        }
        match dir.format {
            Format::Local => self.shortform(dir, want, &mut found)?,
            Format::Extents | Format::Btree => self.dir_blocks(dir, want, &mut found, budget)?,
            Format::Other => {
                return Err(corrupt(dir.name(), dir.offset, "directory without data"));
            }
        }
        Ok(found)
    }

    /// Shortform: `count`, `i8count`, parent (4 or 8 bytes), then entries
    /// of namelen (1), offset (2), name, [ftype], inumber (4 or 8).
    fn shortform(&self, dir: &Inode, want: &Want<'_>, found: &mut Found) -> Result<(), FsError> {
        let f = dir.fork();
        let size = usize::try_from(dir.size).unwrap_or(usize::MAX).min(f.len());
        let f = f.get(..size).unwrap_or_default();
        let bad = |why: &str| {
            corrupt(
                format!("shortform directory of {}", dir.name()),
                dir.offset,
                why,
            )
        };
        let (Some(&count), Some(&i8count)) = (f.first(), f.get(1)) else {
            return Err(bad("too short"));
        };
        let isize = if i8count == 0 { 4 } else { 8 };
        let mut p = 2 + isize;
        // `count` is every entry; a non-zero `i8count` only widens them all.
        for _ in 0..count {
            let namelen = usize::from(*f.get(p).ok_or_else(|| bad("entry past the end"))?);
            let name_at = p + 3;
            let ino_at = name_at + namelen + usize::from(self.sb.ftype);
            let end = ino_at + isize;
            if namelen == 0 || end > f.len() {
                return Err(bad("entry past the end"));
            }
            let name = f.get(name_at..name_at + namelen).unwrap_or_default();
            let ino = if isize == 4 {
                u64::from(be32(f, ino_at))
            } else {
                be64(f, ino_at)
            };
            if found.take(want, name, ino) {
                return Ok(());
            }
            p = end;
        }
        Ok(())
    }

    /// Block, leaf, node and btree directories: every directory block
    /// below [`LEAF_OFFSET`], in order, until the scan is satisfied or
    /// `budget` (bytes of directory blocks) runs out.
    fn dir_blocks(
        &self,
        dir: &Inode,
        want: &Want<'_>,
        found: &mut Found,
        budget: &mut u64,
    ) -> Result<(), FsError> {
        let sb = &self.sb;
        let end_block = LEAF_OFFSET >> sb.block_log;
        let map = self.extents(dir, end_block)?;
        let dbs = sb.dir_block_size;
        let fsb_per_db = dbs >> sb.block_log;
        let mut next_db = 0u64; // first directory block not yet scanned
        for e in &map {
            let first = (e.off / fsb_per_db).max(next_db);
            let last = e
                .off
                .saturating_add(e.len)
                .min(end_block)
                .div_ceil(fsb_per_db);
            for db in first..last {
                *budget = budget.checked_sub(dbs).ok_or_else(|| {
                    limit(
                        format!("directory bytes read for {}", dir.name()),
                        MAX_DIR_BYTES,
                    )
                })?;
                let start = db * dbs;
                let buf = self.dir_block_bytes(dir, &map, e, start)?;
                if self.dir_block(dir, start, &buf, want, found)? {
                    return Ok(());
                }
                next_db = db + 1;
            }
        }
        Ok(())
    }

    /// The directory block at byte `start` of the directory: through the
    /// metadata cache when extent `e` holds all of it (the usual case, so
    /// the root finder's repeated lookups in /etc cost one read), else
    /// assembled from the map.
    fn dir_block_bytes(
        &self,
        dir: &Inode,
        map: &[Bmap],
        e: &Bmap,
        start: u64,
    ) -> Result<Rc<[u8]>, FsError> {
        let sb = &self.sb;
        let dbs = sb.dir_block_size;
        let first = start >> sb.block_log;
        let n = dbs >> sb.block_log;
        let inside = first >= e.off && first - e.off + n <= e.len && !e.unwritten;
        let at = sb
            .fsb_to_byte(e.block)
            .filter(|(_, room)| inside && e.len <= *room)
            .and_then(|(base, _)| {
                (first - e.off)
                    .checked_mul(sb.block_size)
                    .and_then(|d| base.checked_add(d))
            });
        if let Some(at) = at {
            return self.meta(at, dbs);
        }
        let len = usize::try_from(dbs).map_err(|_| limit("directory block size".into(), 0))?;
        let mut buf = vec![0u8; len];
        self.fill(dir, map, start, &mut buf)?;
        Ok(buf.into())
    }

    /// Parses one directory block (block or data form); true when the
    /// scan is satisfied.
    fn dir_block(
        &self,
        dir: &Inode,
        at: u64,
        b: &[u8],
        want: &Want<'_>,
        found: &mut Found,
    ) -> Result<bool, FsError> {
        let what = || format!("directory block at byte {at} of {}", dir.name());
        let v5 = self.sb.v5;
        let magic = b.get(0..4).unwrap_or_default();
        let (is_block, hdr) = match (magic, v5) {
            (b"XD2B", false) => (true, 16),
            (b"XD2D", false) => (false, 16),
            (b"XDB3", true) => (true, 64),
            (b"XDD3", true) => (false, 64),
            _ => return Err(corrupt(what(), dir.offset, "bad magic")),
        };
        if v5 && (!crc_ok(b, 4) || be64(b, 40) != dir.ino) {
            return Err(corrupt(what(), dir.offset, "CRC mismatch or wrong owner"));
        }
        let mut end = b.len();
        if is_block {
            // Tail: leaf count, stale count; the leaf array sits before it.
            let count = usize::try_from(be32(b, end - 8)).unwrap_or(usize::MAX);
            end = count
                .checked_mul(8)
                .and_then(|l| (end - 8).checked_sub(l))
                .filter(|e| *e >= hdr)
                .ok_or_else(|| corrupt(what(), dir.offset, format!("{count} leaf entries")))?;
        }
        self.data_entries(b.get(hdr..end).unwrap_or_default(), want, found)
            .map_err(|why| corrupt(what(), dir.offset, why))
    }

    /// Walks the entries (and free regions) of one data area.
    fn data_entries(&self, d: &[u8], want: &Want<'_>, found: &mut Found) -> Result<bool, String> {
        let mut p = 0usize;
        while p < d.len() {
            if be16(d, p) == 0xFFFF {
                let len = usize::from(be16(d, p + 2));
                if len < 8 || len % 8 != 0 || p + len > d.len() {
                    return Err(format!("free region of {len} bytes at {p}"));
                }
                p += len;
                continue;
            }
            let ino = be64(d, p);
            let namelen = usize::from(d.get(p + 8).copied().unwrap_or(0));
            let len = (11 + namelen + usize::from(self.sb.ftype)).div_ceil(8) * 8;
            if namelen == 0 || p + len > d.len() {
                return Err(format!("entry of {namelen}-byte name at {p}"));
            }
            let name = d.get(p + 9..p + 9 + namelen).unwrap_or_default();
            if found.take(want, name, ino) {
                return Ok(true);
            }
            p += len;
        }
        Ok(false)
    }
}
