//! Logical-to-physical mapping: btrfs addresses every tree node and data
//! extent by a *logical* byte number, and chunk items map logical ranges
//! onto device stripes.
//!
//! The bootstrap chunks (enough to read the chunk tree) sit in the
//! superblock's `sys_chunk_array`; the rest are CHUNK_ITEMs of the chunk
//! tree. A guest image is one device, so only stripes on that device can be
//! read: SINGLE, DUP and the RAID1 family always have a full copy there;
//! RAID0/RAID10 stripes are followed when the chosen stripe is on this
//! device; RAID5/6 are refused (parity layouts are not implemented).

use super::superblock::{FS, corrupt, u16_at, u64_at};
use crate::fs::FsError;

/// CHUNK_ITEM key type.
pub(super) const CHUNK_ITEM_KEY: u8 = 228;
/// Fixed part of a chunk item.
const CHUNK_HEADER: usize = 48;
/// One stripe in a chunk item.
const STRIPE_LEN: usize = 32;
/// Most stripes per chunk we accept (btrfs allows at most a few hundred
/// devices; a single-device image has 1 or 2).
const MAX_STRIPES: u16 = 256;
/// Most chunks in the map (a 16 TiB filesystem has ~16k 1 GiB chunks).
pub(super) const MAX_CHUNKS: usize = 1 << 16;

const RAID0: u64 = 1 << 3;
const RAID10: u64 = 1 << 6;
const RAID5: u64 = 1 << 7;
const RAID6: u64 = 1 << 8;

/// One chunk: `length` logical bytes from `logical`.
#[derive(Debug, Clone)]
pub(super) struct Chunk {
    logical: u64,
    length: u64,
    stripe_len: u64,
    kind: u64,
    sub_stripes: u16,
    /// (device id, physical offset) per stripe.
    stripes: Vec<(u64, u64)>,
}

impl Chunk {
    /// Parses the chunk item `item` whose key offset is `logical`; `at` is
    /// where it was found, for errors.
    pub fn parse(logical: u64, item: &[u8], at: u64) -> Result<Self, FsError> {
        let bad = |why: &str| corrupt("chunk item", at, why);
        let f = |off: usize| u64_at(item, off).ok_or_else(|| bad("short chunk item"));
        let num = u16_at(item, 44).ok_or_else(|| bad("short chunk item"))?;
        let sub_stripes = u16_at(item, 46).ok_or_else(|| bad("short chunk item"))?;
        if num == 0 || num > MAX_STRIPES {
            return Err(bad(&format!("{num} stripes")));
        }
        let mut stripes = Vec::with_capacity(usize::from(num));
        for i in 0..usize::from(num) {
            let o = CHUNK_HEADER + i * STRIPE_LEN;
            let dev = u64_at(item, o).ok_or_else(|| bad("short chunk item"))?;
            let phys = u64_at(item, o + 8).ok_or_else(|| bad("short chunk item"))?;
            stripes.push((dev, phys));
        }
        let c = Self {
            logical,
            length: f(0)?,
            stripe_len: f(16)?,
            kind: f(24)?,
            sub_stripes,
            stripes,
        };
        if c.length == 0 || c.logical.checked_add(c.length).is_none() {
            return Err(bad("empty or overflowing chunk"));
        }
        if c.kind & (RAID0 | RAID10) != 0 && (!c.stripe_len.is_power_of_two() || c.sub_stripes == 0)
        {
            return Err(bad("bad stripe length or sub-stripe count"));
        }
        Ok(c)
    }

    /// Bytes of a chunk item with `num` stripes (from its header).
    pub fn item_len(header: &[u8]) -> Option<usize> {
        let n = usize::from(u16_at(header, 44)?);
        CHUNK_HEADER.checked_add(n.checked_mul(STRIPE_LEN)?)
    }
}

/// The chunks, sorted by logical address, and the device we read.
#[derive(Debug, Clone)]
pub(super) struct ChunkMap {
    chunks: Vec<Chunk>,
    devid: u64,
}

impl ChunkMap {
    /// An empty map for device `devid`.
    pub fn new(devid: u64) -> Self {
        Self {
            chunks: Vec::new(),
            devid,
        }
    }

    /// Parses the superblock's system chunk array (key, chunk item)*.
    pub fn from_sys_array(array: &[u8], devid: u64) -> Result<Self, FsError> {
        let mut map = Self::new(devid);
        let mut p = 0usize;
        // Offsets in errors are into the superblock's array.
        let at = |p: usize| 0x1_0000 + 0x32b + u64::try_from(p).unwrap_or(u64::MAX);
        while p < array.len() {
            let key = array
                .get(p..p + 17)
                .ok_or_else(|| corrupt("sys_chunk_array", at(p), "truncated key"))?;
            let logical = u64_at(key, 9).unwrap_or(0);
            if key.get(8) != Some(&CHUNK_ITEM_KEY) {
                return Err(corrupt(
                    "sys_chunk_array",
                    at(p),
                    "entry is not a chunk item",
                ));
            }
            p += 17;
            let len = array
                .get(p..)
                .and_then(Chunk::item_len)
                .ok_or_else(|| corrupt("sys_chunk_array", at(p), "truncated chunk item"))?;
            let end = p.saturating_add(len);
            let item = array
                .get(p..end)
                .ok_or_else(|| corrupt("sys_chunk_array", at(p), "truncated chunk item"))?;
            map.insert(Chunk::parse(logical, item, at(p))?)?;
            p = end;
        }
        if map.chunks.is_empty() {
            return Err(corrupt("sys_chunk_array", at(0), "no system chunk"));
        }
        Ok(map)
    }

    /// Adds `c`; a chunk already known (same start) is kept, an overlapping
    /// one is corruption.
    pub fn insert(&mut self, c: Chunk) -> Result<(), FsError> {
        let i = self.chunks.partition_point(|x| x.logical < c.logical);
        if self.chunks.get(i).is_some_and(|x| x.logical == c.logical) {
            return Ok(());
        }
        let end = c.logical.saturating_add(c.length);
        let prev_overlaps = i
            .checked_sub(1)
            .and_then(|j| self.chunks.get(j))
            .is_some_and(|x| x.logical.saturating_add(x.length) > c.logical);
        let next_overlaps = self.chunks.get(i).is_some_and(|x| x.logical < end);
        if prev_overlaps || next_overlaps {
            return Err(corrupt(
                "chunk tree",
                c.logical,
                "chunk overlaps another chunk",
            ));
        }
        if self.chunks.len() >= MAX_CHUNKS {
            return Err(FsError::LimitExceeded {
                fs: FS,
                what: "chunks".into(),
                limit: MAX_CHUNKS as u64,
            });
        }
        self.chunks.insert(i, c);
        Ok(())
    }

    /// The physical offset of `logical` on this device and how many bytes
    /// from there are contiguous (to the end of the stripe or chunk).
    pub fn map(&self, logical: u64) -> Result<(u64, u64), FsError> {
        let i = self.chunks.partition_point(|x| x.logical <= logical);
        let c = i
            .checked_sub(1)
            .and_then(|j| self.chunks.get(j))
            .filter(|c| logical - c.logical < c.length)
            .ok_or_else(|| corrupt("chunk map", logical, "logical address in no chunk"))?;
        let off = logical - c.logical;
        if c.kind & (RAID5 | RAID6) != 0 {
            return Err(FsError::Unsupported {
                fs: FS,
                what: "RAID5/6 chunks".into(),
            });
        }
        let nstripes = c.stripes.len() as u64;
        let (candidates, stripe_off, contiguous): (Vec<usize>, u64, u64) =
            if c.kind & (RAID0 | RAID10) != 0 {
                let sub = if c.kind & RAID10 != 0 {
                    u64::from(c.sub_stripes)
                } else {
                    1
                };
                let factor = (nstripes / sub).max(1);
                let nr = off / c.stripe_len;
                let within = off % c.stripe_len;
                let first = (nr % factor) * sub;
                let idx: Vec<usize> = (first..first.saturating_add(sub))
                    .filter_map(|k| usize::try_from(k).ok())
                    .collect();
                let so = (nr / factor)
                    .checked_mul(c.stripe_len)
                    .and_then(|v| v.checked_add(within));
                let so =
                    so.ok_or_else(|| corrupt("chunk map", logical, "stripe offset overflows"))?;
                (idx, so, c.stripe_len - within)
            } else {
                ((0..c.stripes.len()).collect(), off, c.length - off)
            };
        let stripe = candidates
            .iter()
            .filter_map(|&k| c.stripes.get(k))
            .find(|(dev, _)| *dev == self.devid)
            .ok_or_else(|| FsError::Unsupported {
                fs: FS,
                what: format!(
                    "logical {logical}: its stripe is on another device of a multi-device filesystem"
                ),
            })?;
        let phys = stripe
            .1
            .checked_add(stripe_off)
            .ok_or_else(|| corrupt("chunk map", logical, "physical offset overflows"))?;
        Ok((phys, contiguous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(len: u64, kind: u64, stripe_len: u64, sub: u16, stripes: &[(u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; CHUNK_HEADER];
        b[0..8].copy_from_slice(&len.to_le_bytes());
        b[16..24].copy_from_slice(&stripe_len.to_le_bytes());
        b[24..32].copy_from_slice(&kind.to_le_bytes());
        b[44..46].copy_from_slice(&u16::try_from(stripes.len()).unwrap().to_le_bytes());
        b[46..48].copy_from_slice(&sub.to_le_bytes());
        for (d, o) in stripes {
            b.extend_from_slice(&d.to_le_bytes());
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&[0u8; 16]);
        }
        b
    }

    #[test]
    fn single_dup_raid0() {
        let mut m = ChunkMap::new(1);
        let dup = item(1 << 20, 0x4 | 0x20, 65536, 0, &[(1, 5 << 20), (1, 9 << 20)]);
        m.insert(Chunk::parse(30 << 20, &dup, 0).unwrap()).unwrap();
        assert_eq!(
            m.map((30 << 20) + 7).unwrap(),
            ((5 << 20) + 7, (1 << 20) - 7)
        );
        assert!(m.map(31 << 20).is_err());
        assert!(m.map(0).is_err());
        // Overlap is refused, a duplicate is ignored.
        let single = item(1 << 20, 1, 65536, 0, &[(1, 0)]);
        assert!(
            m.insert(Chunk::parse((30 << 20) + 4096, &single, 0).unwrap())
                .is_err()
        );
        m.insert(Chunk::parse(30 << 20, &single, 0).unwrap())
            .unwrap();
        // RAID0 over two stripes of this device: the second 64 KiB is on
        // stripe 1.
        let r0 = item(
            1 << 20,
            1 | RAID0,
            65536,
            1,
            &[(1, 100 << 20), (1, 200 << 20)],
        );
        m.insert(Chunk::parse(40 << 20, &r0, 0).unwrap()).unwrap();
        assert_eq!(
            m.map((40 << 20) + 65536 + 5).unwrap(),
            ((200 << 20) + 5, 65531)
        );
        assert_eq!(
            m.map((40 << 20) + 2 * 65536).unwrap(),
            ((100 << 20) + 65536, 65536)
        );
        // A stripe on another device.
        let other = item(1 << 20, 1, 65536, 0, &[(2, 0)]);
        m.insert(Chunk::parse(50 << 20, &other, 0).unwrap())
            .unwrap();
        assert!(matches!(m.map(50 << 20), Err(FsError::Unsupported { .. })));
        // Hostile: no stripes, zero length, RAID0 with a zero stripe length.
        assert!(Chunk::parse(0, &item(1, 1, 0, 0, &[]), 0).is_err());
        assert!(Chunk::parse(0, &item(0, 1, 0, 0, &[(1, 0)]), 0).is_err());
        assert!(Chunk::parse(0, &item(9, RAID0, 0, 1, &[(1, 0)]), 0).is_err());
        assert!(Chunk::parse(u64::MAX, &item(9, 1, 0, 1, &[(1, 0)]), 0).is_err());
    }

    #[test]
    fn sys_array() {
        let mut a = vec![0u8; 17];
        a[0..8].copy_from_slice(&256u64.to_le_bytes());
        a[8] = CHUNK_ITEM_KEY;
        a[9..17].copy_from_slice(&(22u64 << 20).to_le_bytes());
        a.extend(item(
            8 << 20,
            2 | 0x20,
            65536,
            1,
            &[(1, 1 << 20), (1, 9 << 20)],
        ));
        let m = ChunkMap::from_sys_array(&a, 1).unwrap();
        assert_eq!(m.map(22 << 20).unwrap().0, 1 << 20);
        assert!(ChunkMap::from_sys_array(&a[..a.len() - 1], 1).is_err());
        assert!(ChunkMap::from_sys_array(&[], 1).is_err());
        a[8] = 1;
        assert!(ChunkMap::from_sys_array(&a, 1).is_err());
    }
}
