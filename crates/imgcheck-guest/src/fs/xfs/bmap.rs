//! Block maps: which filesystem blocks hold which part of a file (or
//! directory), from the data fork's extent array or its block-map btree
//! (bmbt), and reading a byte range through such a map, holes and
//! unwritten extents as zeros.
//!
//! Only the part of the map that covers the bytes asked for is read: the
//! btree walk skips every subtree whose first key is past the end, so the
//! first KiB of a heavily fragmented file costs one path down the tree.
//!
//! Formats ("XFS Algorithms & Data Structures", "Data Extents" and
//! "B+tree Extent List"): a record is 128 bits, big-endian: 1 bit unwritten
//! flag, 54 bits file offset, 52 bits start block, 21 bits length (all in
//! filesystem blocks). The fork root of a btree is `xfs_bmdr_block` (level,
//! numrecs, then keys and pointers sized for the whole fork); tree blocks
//! are long-form btree blocks ("BMAP", or "BMA3" with a 72-byte CRC'd
//! header on v5).

use super::inode::{Format, Inode};
use super::{MAX_BMBT_DEPTH, MAX_BMBT_NODES, MAX_EXTENTS, Xfs, be16, be64, corrupt, crc_ok, limit};
use crate::fs::FsError;

/// One mapping of file blocks to filesystem blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub off: u64,
    /// First filesystem block (AG-encoded).
    pub block: u64,
    /// Length in blocks.
    pub len: u64,
    /// Allocated but never written: reads as zeros.
    pub unwritten: bool,
}

/// Decodes one 16-byte extent record.
pub fn decode(r: &[u8]) -> Extent {
    let l0 = be64(r, 0);
    let l1 = be64(r, 8);
    Extent {
        unwritten: l0 >> 63 != 0,
        off: (l0 & ((1 << 63) - 1)) >> 9,
        block: ((l0 & 0x1FF) << 43) | (l1 >> 21),
        len: l1 & ((1 << 21) - 1),
    }
}

/// Where a btree walk is: the extents found so far, the blocks visited.
struct Walk {
    out: Vec<Extent>,
    nodes: usize,
    /// Only extents starting before this file block are wanted.
    end: u64,
}

impl Walk {
    fn push(&mut self, e: Extent, ino: &Inode) -> Result<bool, FsError> {
        if e.off >= self.end {
            return Ok(false);
        }
        if self.out.len() >= MAX_EXTENTS {
            return Err(limit(
                format!("extents read for {}", ino.name()),
                MAX_EXTENTS,
            ));
        }
        self.out.push(e);
        Ok(true)
    }
}

/// Bytes of a long-form btree block header.
fn long_header(v5: bool) -> usize {
    if v5 { 72 } else { 24 }
}

impl Xfs {
    /// The extents of `ino`'s data fork that start before file block
    /// `end_block`, sorted by file offset.
    pub fn extents(&self, ino: &Inode, end_block: u64) -> Result<Vec<Extent>, FsError> {
        let mut w = Walk {
            out: Vec::new(),
            nodes: 0,
            end: end_block,
        };
        match ino.format {
            Format::Extents => {
                let fork = ino.fork();
                let n = usize::try_from(ino.nextents).unwrap_or(usize::MAX);
                let bytes = n
                    .checked_mul(16)
                    .filter(|b| *b <= fork.len())
                    .ok_or_else(|| {
                        corrupt(
                            ino.name(),
                            ino.offset,
                            format!("{n} extents do not fit in the fork"),
                        )
                    })?;
                for r in fork.get(..bytes).unwrap_or_default().chunks_exact(16) {
                    if !w.push(decode(r), ino)? {
                        break;
                    }
                }
            }
            Format::Btree => self.fork_root(ino, &mut w)?,
            Format::Local | Format::Other => {}
        }
        // Records are sorted on disk; a hostile map is sorted here so that
        // the readers' binary searches and early exits stay correct.
        if !w.out.is_sorted_by_key(|e| e.off) {
            w.out.sort_by_key(|e| e.off);
        }
        Ok(w.out)
    }

    /// Walks the btree whose root (`xfs_bmdr_block`) is in the fork.
    fn fork_root(&self, ino: &Inode, w: &mut Walk) -> Result<(), FsError> {
        let fork = ino.fork();
        let level = be16(fork, 0);
        let numrecs = usize::from(be16(fork, 2));
        let maxrecs = fork.len().saturating_sub(4) / 16;
        if level == 0 || usize::from(level) > MAX_BMBT_DEPTH || numrecs > maxrecs {
            return Err(corrupt(
                ino.name(),
                ino.offset,
                format!("btree root of level {level} with {numrecs} records"),
            ));
        }
        let keys = 4;
        let ptrs = 4 + maxrecs * 8;
        for i in 0..numrecs {
            let key = be64(fork, keys + i * 8);
            if key >= w.end {
                break;
            }
            let child = be64(fork, ptrs + i * 8);
            self.bmbt_block(ino, child, level - 1, w)?;
        }
        Ok(())
    }

    /// Walks one bmbt block at filesystem block `fsb`, expected at `level`.
    /// Levels strictly decrease on the way down, so the walk ends; the node
    /// count bounds its width.
    fn bmbt_block(&self, ino: &Inode, fsb: u64, level: u16, w: &mut Walk) -> Result<(), FsError> {
        w.nodes += 1;
        if w.nodes > MAX_BMBT_NODES {
            return Err(limit(
                format!("btree blocks of {}", ino.name()),
                MAX_BMBT_NODES,
            ));
        }
        let sb = &self.sb;
        let at = sb
            .fsb_to_byte(fsb)
            .ok_or_else(|| corrupt(ino.name(), ino.offset, format!("btree pointer {fsb}")))?
            .0;
        let blk = self.meta(at, sb.block_size)?;
        let b: &[u8] = &blk;
        let what = || format!("bmbt block of {}", ino.name());
        let magic: &[u8] = if sb.v5 { b"BMA3" } else { b"BMAP" };
        if b.get(0..4) != Some(magic) {
            return Err(corrupt(what(), at, "bad magic"));
        }
        if sb.v5 && (!crc_ok(b, 64) || be64(b, 56) != ino.ino) {
            return Err(corrupt(what(), at, "CRC mismatch or wrong owner"));
        }
        let hdr = long_header(sb.v5);
        let numrecs = usize::from(be16(b, 6));
        if be16(b, 4) != level {
            return Err(corrupt(
                what(),
                at,
                format!("level {} where {level} was expected", be16(b, 4)),
            ));
        }
        let leaf_max = (b.len() - hdr) / 16;
        if numrecs > leaf_max {
            return Err(corrupt(what(), at, format!("{numrecs} records")));
        }
        if level == 0 {
            for r in b
                .get(hdr..hdr + numrecs * 16)
                .unwrap_or_default()
                .chunks_exact(16)
            {
                if !w.push(decode(r), ino)? {
                    break;
                }
            }
            return Ok(());
        }
        // Node: numrecs keys, then pointers after room for leaf_max keys.
        let ptrs = hdr + leaf_max * 8;
        for i in 0..numrecs {
            if be64(b, hdr + i * 8) >= w.end {
                break;
            }
            self.bmbt_block(ino, be64(b, ptrs + i * 8), level - 1, w)?;
        }
        Ok(())
    }

    /// Fills `buf` with the file bytes at `start` through `map`; holes and
    /// unwritten extents stay as they are (the caller passes zeros).
    pub fn fill(
        &self,
        ino: &Inode,
        map: &[Extent],
        start: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        let bs = self.sb.block_size;
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let end = start.saturating_add(len);
        let bad = |why: String| corrupt(ino.name(), ino.offset, why);
        // Skip the extents that end before `start` (the map is sorted), so
        // reading a directory block by block stays linear in its extents.
        let first = map.partition_point(|e| {
            e.off
                .checked_add(e.len)
                .and_then(|x| x.checked_mul(bs))
                .is_some_and(|x| x <= start)
        });
        for e in map.get(first..).unwrap_or_default() {
            let (Some(e_start), Some(e_end)) = (
                e.off.checked_mul(bs),
                e.off.checked_add(e.len).and_then(|x| x.checked_mul(bs)),
            ) else {
                return Err(bad(format!("extent at file block {} overflows", e.off)));
            };
            if e_start >= end {
                break;
            }
            let (lo, hi) = (e_start.max(start), e_end.min(end));
            if lo >= hi || e.unwritten {
                continue;
            }
            let (disk, room) = self
                .sb
                .fsb_to_byte(e.block)
                .ok_or_else(|| bad(format!("extent block {} outside the filesystem", e.block)))?;
            if e.len > room {
                return Err(bad(format!("extent of {} blocks runs past its AG", e.len)));
            }
            let at = disk
                .checked_add(lo - e_start)
                .ok_or_else(|| bad("extent offset".into()))?;
            let (a, z) = (usize::try_from(lo - start), usize::try_from(hi - start));
            let dst = match (a, z) {
                (Ok(a), Ok(z)) => buf.get_mut(a..z),
                _ => None,
            };
            let dst = dst.ok_or_else(|| bad("extent range".into()))?;
            self.data_read(at, dst)?;
        }
        Ok(())
    }
}
