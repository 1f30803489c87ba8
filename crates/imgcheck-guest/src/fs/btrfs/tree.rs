//! B-tree nodes and ordered scans over them, with a bounded node cache.
//!
//! Every btrfs tree (root, chunk, fs trees) is a B-tree of fixed-size
//! nodes: a 101-byte header, then key pointers (internal nodes) or items
//! whose data is packed from the end of the node (leaves). A read of one
//! guest file revisits the same few nodes (the root, the internal nodes of
//! its subvolume tree), so nodes are cached by logical address, up to
//! [`CACHE_NODES`]: without it a check would read several times what an
//! ext4 check reads.
//!
//! Hostile trees: each node's checksum (crc32c), its own address and its
//! level are checked against what the parent promised, so a pointer loop
//! cannot recurse (levels strictly decrease); a scan yields keys in strictly
//! increasing order or fails (a repeated or backwards subtree cannot loop);
//! and a scan visits at most [`MAX_NODES_PER_SCAN`] nodes.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use imgcheck_source::ByteSource;

use super::chunks::ChunkMap;
use super::superblock::{FS, corrupt, crc32c, u8_at, u32_at, u64_at};
use crate::fs::FsError;

/// Node header bytes.
const HEADER: usize = 101;
/// A leaf item: key + data offset + data size.
const ITEM: usize = 25;
/// An internal node's key pointer: key + block pointer + generation.
const KEY_PTR: usize = 33;
/// Deepest level btrfs builds (BTRFS_MAX_LEVEL is 8: levels 0..=7).
const MAX_LEVEL: u8 = 7;
/// Nodes kept in the cache (8 MiB at the default 16 KiB node size).
pub(super) const CACHE_NODES: usize = 512;
/// Most nodes one scan may visit (a 16 KiB leaf holds ~100-400 items, so
/// this covers scans far larger than any bounded caller asks for).
pub(super) const MAX_NODES_PER_SCAN: usize = 1 << 14;

/// A btrfs key, ordered as the trees order them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Key {
    /// Object id (inode number, tree id, ...).
    pub objectid: u64,
    /// Item type.
    pub ty: u8,
    /// Type-specific offset.
    pub offset: u64,
}

impl Key {
    /// A key.
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Self {
        Self {
            objectid,
            ty,
            offset,
        }
    }

    /// Parses the 17-byte disk key at `off` of `b`.
    pub fn parse(b: &[u8], off: usize) -> Option<Self> {
        Some(Self {
            objectid: u64_at(b, off)?,
            ty: u8_at(b, off.checked_add(8)?)?,
            offset: u64_at(b, off.checked_add(9)?)?,
        })
    }
}

/// Where a tree starts: its root node's logical address and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Root {
    /// Logical address of the root node.
    pub logical: u64,
    /// Its level (0 = the root is a leaf).
    pub level: u8,
}

/// One checked tree node.
#[derive(Debug)]
pub(super) struct Node {
    logical: u64,
    level: u8,
    nritems: usize,
    data: Vec<u8>,
}

impl Node {
    /// Checks the raw node `data` read for `logical`, expected at `level`.
    fn check(logical: u64, level: u8, data: Vec<u8>, verify: bool) -> Result<Self, FsError> {
        let bad = |why: String| corrupt("tree node", logical, why);
        if verify {
            let want = u32_at(&data, 0).unwrap_or(0);
            let got = crc32c(data.get(0x20..).unwrap_or_default());
            if want != got {
                return Err(bad(format!(
                    "checksum mismatch (stored {want:#010x}, computed {got:#010x})"
                )));
            }
        }
        let bytenr = u64_at(&data, 0x30).unwrap_or(0);
        if bytenr != logical {
            return Err(bad(format!("node says it is at {bytenr}")));
        }
        let got_level = u8_at(&data, 0x64).unwrap_or(u8::MAX);
        if got_level != level {
            return Err(bad(format!("level {got_level}, parent says {level}")));
        }
        let nritems = usize::try_from(u32_at(&data, 0x60).unwrap_or(0)).unwrap_or(usize::MAX);
        let per = if level == 0 { ITEM } else { KEY_PTR };
        let room = data.len().saturating_sub(HEADER) / per;
        if nritems > room || (level > 0 && nritems == 0) {
            return Err(bad(format!("{nritems} items (room for {room})")));
        }
        Ok(Self {
            logical,
            level,
            nritems,
            data,
        })
    }

    /// The key of entry `i` (item or key pointer).
    fn key(&self, i: usize) -> Option<Key> {
        let per = if self.level == 0 { ITEM } else { KEY_PTR };
        Key::parse(&self.data, HEADER.checked_add(i.checked_mul(per)?)?)
    }

    /// Leaf item `i`: its key and data.
    fn item(&self, i: usize) -> Result<(Key, &[u8]), FsError> {
        let bad = || corrupt("tree leaf", self.logical, format!("item {i} out of bounds"));
        let at = HEADER + i * ITEM;
        let key = self.key(i).ok_or_else(bad)?;
        let off = u32_at(&self.data, at + 17).ok_or_else(bad)?;
        let size = u32_at(&self.data, at + 21).ok_or_else(bad)?;
        let start = usize::try_from(off)
            .ok()
            .and_then(|o| o.checked_add(HEADER));
        let end = start
            .zip(usize::try_from(size).ok())
            .and_then(|(s, n)| s.checked_add(n));
        let data = start
            .zip(end)
            .and_then(|(s, e)| self.data.get(s..e))
            .ok_or_else(bad)?;
        Ok((key, data))
    }

    /// Internal node entry `i`: its key and child address.
    fn child(&self, i: usize) -> Result<(Key, u64), FsError> {
        let bad = || {
            corrupt(
                "tree node",
                self.logical,
                format!("key pointer {i} out of bounds"),
            )
        };
        let key = self.key(i).ok_or_else(bad)?;
        let ptr = u64_at(&self.data, HEADER + i * KEY_PTR + 17).ok_or_else(bad)?;
        Ok((key, ptr))
    }
}

/// Cached nodes by logical address, oldest evicted first.
#[derive(Debug, Default)]
struct Cache {
    nodes: HashMap<u64, Rc<Node>>,
    order: VecDeque<u64>,
}

/// Reads checked nodes of one filesystem.
#[derive(Debug)]
pub(super) struct Reader {
    src: Arc<dyn ByteSource>,
    /// The chunk map.
    pub map: ChunkMap,
    nodesize: usize,
    verify: bool,
    cache: RefCell<Cache>,
}

impl Reader {
    /// A reader over `src` with `map`.
    pub fn new(src: Arc<dyn ByteSource>, map: ChunkMap, nodesize: u32, verify: bool) -> Self {
        Self {
            src,
            map,
            nodesize: usize::try_from(nodesize).unwrap_or(4096),
            verify,
            cache: RefCell::new(Cache::default()),
        }
    }

    /// The node at `logical`, which its parent says is at `level`.
    fn node(&self, logical: u64, level: u8) -> Result<Rc<Node>, FsError> {
        if let Some(n) = self.cache.borrow().nodes.get(&logical) {
            if n.level != level {
                return Err(corrupt("tree node", logical, "reached at two levels"));
            }
            return Ok(n.clone());
        }
        if level > MAX_LEVEL {
            return Err(corrupt("tree node", logical, format!("level {level}")));
        }
        let (phys, contiguous) = self.map.map(logical)?;
        if contiguous < self.nodesize as u64 {
            return Err(corrupt(
                "tree node",
                logical,
                "node crosses a stripe or chunk end",
            ));
        }
        let mut data = vec![0u8; self.nodesize];
        self.src.read_exact_at(phys, &mut data)?;
        let node = Rc::new(Node::check(logical, level, data, self.verify)?);
        let mut c = self.cache.borrow_mut();
        if c.order.len() >= CACHE_NODES
            && let Some(old) = c.order.pop_front()
        {
            c.nodes.remove(&old);
        }
        c.order.push_back(logical);
        c.nodes.insert(logical, node.clone());
        Ok(node)
    }

    /// Calls `f` with each leaf item of tree `root` whose key is `>= start`,
    /// in key order, until `f` returns `Ok(false)`, `max_items` items have
    /// been passed, or the tree ends. `f` also gets the leaf's address (for
    /// errors).
    pub fn scan(
        &self,
        root: Root,
        start: Key,
        max_items: usize,
        mut f: impl FnMut(Key, &[u8], u64) -> Result<bool, FsError>,
    ) -> Result<(), FsError> {
        let mut visited = 0usize;
        let mut visit = |logical: u64, level: u8| {
            visited += 1;
            if visited > MAX_NODES_PER_SCAN {
                return Err(FsError::LimitExceeded {
                    fs: FS,
                    what: "tree nodes visited in one search".into(),
                    limit: MAX_NODES_PER_SCAN as u64,
                });
            }
            self.node(logical, level)
        };
        // Descend to the leaf that would hold `start`.
        let mut stack: Vec<(Rc<Node>, usize)> = Vec::new();
        let mut node = visit(root.logical, root.level)?;
        while node.level > 0 {
            let mut idx = 0;
            for i in 0..node.nritems {
                if node.key(i).is_some_and(|k| k <= start) {
                    idx = i;
                } else {
                    break;
                }
            }
            let (_, ptr) = node.child(idx)?;
            let child = visit(ptr, node.level - 1)?;
            stack.push((node, idx));
            node = child;
        }
        let mut idx = 0;
        while idx < node.nritems && node.key(idx).is_some_and(|k| k < start) {
            idx += 1;
        }
        let mut prev: Option<Key> = None;
        let mut passed = 0usize;
        loop {
            while idx < node.nritems {
                let (key, data) = node.item(idx)?;
                if prev.is_some_and(|p| key <= p) {
                    return Err(corrupt("tree leaf", node.logical, "keys out of order"));
                }
                prev = Some(key);
                if passed >= max_items || !f(key, data, node.logical)? {
                    return Ok(());
                }
                passed += 1;
                idx += 1;
            }
            // Up to the first ancestor with a next child, then down its
            // leftmost path.
            loop {
                let Some((parent, pidx)) = stack.pop() else {
                    return Ok(());
                };
                if pidx + 1 < parent.nritems {
                    let (_, ptr) = parent.child(pidx + 1)?;
                    let mut child = visit(ptr, parent.level - 1)?;
                    stack.push((parent, pidx + 1));
                    while child.level > 0 {
                        let (_, p) = child.child(0)?;
                        let next = visit(p, child.level - 1)?;
                        stack.push((child, 0));
                        child = next;
                    }
                    node = child;
                    idx = 0;
                    break;
                }
            }
        }
    }

    /// The data of the item with exactly `key` in tree `root`, if any.
    pub fn find(&self, root: Root, key: Key) -> Result<Option<(Vec<u8>, u64)>, FsError> {
        let mut out = None;
        self.scan(root, key, 1, |k, d, at| {
            if k == key {
                out = Some((d.to_vec(), at));
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// Reads `buf.len()` bytes at logical address `logical` (data extents),
    /// following the chunk map across stripe boundaries.
    pub fn read_logical(&self, logical: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = logical
                .checked_add(done as u64)
                .ok_or_else(|| corrupt("extent", logical, "address overflows"))?;
            let (phys, contiguous) = self.map.map(at)?;
            let n = usize::try_from(contiguous)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let dst = buf
                .get_mut(done..done + n)
                .ok_or_else(|| corrupt("extent", logical, "bad length"))?;
            self.src.read_exact_at(phys, dst)?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgcheck_source::MemSource;

    const NS: usize = 4096;

    /// A checksummed node at `logical`: a leaf when `level` is 0 (each
    /// entry's value is its item data), else key pointers to `value`s.
    fn node(logical: u64, level: u8, entries: &[(Key, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; NS];
        b[0x30..0x38].copy_from_slice(&logical.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&u32::try_from(entries.len()).unwrap().to_le_bytes());
        b[0x64] = level;
        let mut data_end = NS - HEADER;
        for (i, (k, v)) in entries.iter().enumerate() {
            let per = if level == 0 { ITEM } else { KEY_PTR };
            let at = HEADER + i * per;
            b[at..at + 8].copy_from_slice(&k.objectid.to_le_bytes());
            b[at + 8] = k.ty;
            b[at + 9..at + 17].copy_from_slice(&k.offset.to_le_bytes());
            if level == 0 {
                data_end -= 8;
                b[at + 17..at + 21]
                    .copy_from_slice(&u32::try_from(data_end).unwrap().to_le_bytes());
                b[at + 21..at + 25].copy_from_slice(&8u32.to_le_bytes());
                b[HEADER + data_end..HEADER + data_end + 8].copy_from_slice(&v.to_le_bytes());
            } else {
                b[at + 17..at + 25].copy_from_slice(&v.to_le_bytes());
            }
        }
        let c = crc32c(&b[0x20..]);
        b[0..4].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// A reader over `nodes` placed at physical == logical.
    fn reader(nodes: &[(u64, Vec<u8>)]) -> Reader {
        let mut disk = vec![0u8; 1 << 16];
        for (at, n) in nodes {
            let at = usize::try_from(*at).unwrap();
            disk[at..at + NS].copy_from_slice(n);
        }
        let mut item = vec![0u8; 48];
        item[0..8].copy_from_slice(&(1u64 << 16).to_le_bytes());
        item[24..32].copy_from_slice(&4u64.to_le_bytes());
        item[44..46].copy_from_slice(&1u16.to_le_bytes());
        item.extend_from_slice(&1u64.to_le_bytes());
        item.extend_from_slice(&0u64.to_le_bytes());
        item.extend_from_slice(&[0u8; 16]);
        let mut map = ChunkMap::new(1);
        map.insert(super::super::chunks::Chunk::parse(0, &item, 0).unwrap())
            .unwrap();
        Reader::new(Arc::new(MemSource::new("t", disk)), map, 4096, true)
    }

    fn k(n: u64) -> Key {
        Key::new(n, 1, 0)
    }

    fn keys(r: &Reader, root: Root, from: Key, max: usize) -> Result<Vec<u64>, FsError> {
        let mut out = Vec::new();
        r.scan(root, from, max, |k, _, _| {
            out.push(k.objectid);
            Ok(true)
        })?;
        Ok(out)
    }

    #[test]
    fn scans_across_leaves_and_refuses_hostile_trees() {
        let leaf1 = node(0x2000, 0, &[(k(1), 10), (k(2), 20), (k(3), 30)]);
        let leaf2 = node(0x3000, 0, &[(k(4), 40), (k(5), 50), (k(6), 60)]);
        let root = node(0x1000, 1, &[(k(1), 0x2000), (k(4), 0x3000)]);
        let r = reader(&[(0x1000, root), (0x2000, leaf1.clone()), (0x3000, leaf2)]);
        let top = Root {
            logical: 0x1000,
            level: 1,
        };
        assert_eq!(keys(&r, top, k(2), 100).unwrap(), [2, 3, 4, 5, 6]);
        assert_eq!(keys(&r, top, k(0), 2).unwrap(), [1, 2]);
        let (d, at) = r.find(top, k(5)).unwrap().unwrap();
        assert_eq!((u64_at(&d, 0), at), (Some(50), 0x3000));
        assert!(r.find(top, Key::new(5, 2, 0)).unwrap().is_none());
        // The root asked for at the wrong level.
        assert!(
            keys(
                &r,
                Root {
                    logical: 0x1000,
                    level: 0
                },
                k(0),
                9
            )
            .is_err()
        );

        // A pointer loop: the root's child is the root itself.
        let looped = node(0x1000, 1, &[(k(1), 0x1000)]);
        let r = reader(&[(0x1000, looped)]);
        assert!(keys(&r, top, k(0), 9).is_err());

        // Both children are the same leaf: its keys come again, out of order.
        let twice = node(0x1000, 1, &[(k(1), 0x2000), (k(4), 0x2000)]);
        let r = reader(&[(0x1000, twice), (0x2000, leaf1.clone())]);
        let e = keys(&r, top, k(0), 100).unwrap_err().to_string();
        assert!(e.contains("out of order"), "{e}");

        // A flipped bit fails the checksum; a node placed at another
        // address is refused.
        let mut bad = leaf1.clone();
        bad[200] ^= 1;
        let leaf0 = Root {
            logical: 0x2000,
            level: 0,
        };
        assert!(keys(&reader(&[(0x2000, bad)]), leaf0, k(0), 9).is_err());
        assert!(
            keys(
                &reader(&[(0x5000, leaf1)]),
                Root {
                    logical: 0x5000,
                    level: 0
                },
                k(0),
                9
            )
            .is_err()
        );
        // Item data outside the node.
        let mut wild = node(0x2000, 0, &[(k(1), 1)]);
        wild[HEADER + 17..HEADER + 21].copy_from_slice(&5000u32.to_le_bytes());
        let c = crc32c(&wild[0x20..]);
        wild[0..4].copy_from_slice(&c.to_le_bytes());
        assert!(keys(&reader(&[(0x2000, wild)]), leaf0, k(0), 9).is_err());
    }

    #[test]
    fn key_order_is_objectid_type_offset() {
        assert!(Key::new(1, 200, 0) < Key::new(2, 0, 0));
        assert!(Key::new(1, 1, 9) < Key::new(1, 2, 0));
        assert!(Key::new(1, 1, 1) < Key::new(1, 1, 2));
        assert_eq!(Key::parse(&[0u8; 16], 0), None);
    }
}
