//! Symlink targets: inline in the inode ("local" format) when they fit, or
//! in "remote" blocks mapped by the data fork. On v5 each remote block
//! starts with a 56-byte CRC'd header ("XSLM", offset, byte count, CRC,
//! UUID, owner, block number, LSN) followed by that many target bytes.

use super::inode::{Format, Inode};
use super::{Xfs, be32, be64, corrupt, crc_ok};
use crate::fs::FsError;

/// `XFS_SYMLINK_MAXLEN`: Linux's own limit on a target.
const MAX_LEN: u64 = 1024;
/// Bytes of a v5 remote symlink block header.
const HDR: u64 = 56;

impl Xfs {
    /// The target of symlink inode `ino`.
    pub fn link_target(&self, ino: &Inode) -> Result<Vec<u8>, FsError> {
        let what = || format!("symlink {}", ino.name());
        if ino.size == 0 || ino.size > MAX_LEN {
            return Err(corrupt(
                what(),
                ino.offset,
                format!("target of {} bytes", ino.size),
            ));
        }
        let size = usize::try_from(ino.size).map_err(|_| corrupt(what(), ino.offset, "size"))?;
        if ino.format == Format::Local {
            return ino
                .fork()
                .get(..size)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| corrupt(what(), ino.offset, "target longer than the fork"));
        }
        let bs = self.sb.block_size;
        let per_block = if self.sb.v5 { bs - HDR } else { bs };
        let blocks = ino.size.div_ceil(per_block);
        let map = self.extents(ino, blocks)?;
        let bsz = usize::try_from(bs).map_err(|_| corrupt(what(), ino.offset, "block size"))?;
        let mut out = Vec::with_capacity(size);
        for i in 0..blocks {
            let mut b = vec![0u8; bsz];
            self.fill(ino, &map, i * bs, &mut b)?;
            let want = usize::try_from((ino.size - i * per_block).min(per_block)).unwrap_or(0);
            let data = if self.sb.v5 {
                let at_ok = u64::from(be32(&b, 4)) == i * per_block;
                let n = usize::try_from(be32(&b, 8)).unwrap_or(usize::MAX);
                if b.get(0..4) != Some(b"XSLM")
                    || !crc_ok(&b, 12)
                    || !at_ok
                    || n != want
                    || be64(&b, 32) != ino.ino
                {
                    return Err(corrupt(
                        what(),
                        ino.offset,
                        format!("remote block {i}: bad header or CRC"),
                    ));
                }
                b.get(56..56 + want)
            } else {
                b.get(..want)
            };
            out.extend_from_slice(data.unwrap_or_default());
        }
        Ok(out)
    }
}
