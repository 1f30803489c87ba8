//! A tiny read-only FAT12/16/32 directory walker, enough to find
//! `\EFI\<vendor>\<loader>.EFI` on an EFI system partition.
//!
//! Only 8.3 short names are read (every long name has one; `BOOTX64.EFI`
//! and `grubx64.efi` are already 8.3). Cluster chains are followed at most
//! [`MAX_CHAIN`] hops and a directory is read to at most [`MAX_DIR_BYTES`],
//! so a looping or huge FAT cannot hold us.

use imgcheck_source::ByteSource;

/// Most clusters followed in one chain.
pub const MAX_CHAIN: usize = 4096;
/// Most bytes read from one directory.
pub const MAX_DIR_BYTES: usize = 256 * 1024;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Short name, upper case, "NAME.EXT".
    pub name: String,
    /// Is a directory.
    pub is_dir: bool,
    /// First cluster.
    pub cluster: u32,
}

/// Where a directory lives.
#[derive(Debug, Clone, Copy)]
enum Dir {
    /// FAT12/16 fixed root directory: byte offset and length.
    FixedRoot(u64, u64),
    /// A cluster chain.
    Chain(u32),
}

/// A FAT volume's geometry.
#[derive(Debug)]
pub struct Fat<'a> {
    src: &'a dyn ByteSource,
    cluster_size: u64,
    fat_offset: u64,
    data_offset: u64,
    clusters: u32,
    bits: u8,
    root: Dir,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl<'a> Fat<'a> {
    /// Parses the boot sector; `None` if it is not a sane FAT volume.
    pub fn open(src: &'a dyn ByteSource) -> Option<Self> {
        let mut b = [0u8; 512];
        src.read_exact_at(0, &mut b).ok()?;
        if b[510] != 0x55 || b[511] != 0xAA {
            return None;
        }
        let bps = u64::from(le16(&b, 11));
        let spc = u64::from(b[13]);
        let reserved = u64::from(le16(&b, 14));
        let nfats = u64::from(b[16]);
        let root_entries = u64::from(le16(&b, 17));
        let total16 = u64::from(le16(&b, 19));
        let fatsz16 = u64::from(le16(&b, 22));
        let total32 = u64::from(le32(&b, 32));
        let fatsz32 = u64::from(le32(&b, 36));
        if !matches!(bps, 512 | 1024 | 2048 | 4096) || !spc.is_power_of_two() || spc > 128 {
            return None;
        }
        if reserved == 0 || nfats == 0 || nfats > 4 {
            return None;
        }
        let fat_secs = if fatsz16 != 0 { fatsz16 } else { fatsz32 };
        let total = if total16 != 0 { total16 } else { total32 };
        let root_secs = (root_entries * 32).div_ceil(bps);
        let first_data = reserved
            .checked_add(nfats.checked_mul(fat_secs)?)?
            .checked_add(root_secs)?;
        let data_secs = total.checked_sub(first_data)?;
        let clusters = u32::try_from(data_secs / spc).ok()?;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        let root = if bits == 32 {
            Dir::Chain(le32(&b, 44))
        } else {
            Dir::FixedRoot((reserved + nfats * fat_secs) * bps, root_secs * bps)
        };
        Some(Self {
            src,
            cluster_size: spc * bps,
            fat_offset: reserved * bps,
            data_offset: first_data * bps,
            clusters,
            bits,
            root,
        })
    }

    /// The FAT entry for cluster `n` (the next cluster), `None` at the end
    /// of a chain or on a bad value.
    fn next(&self, n: u32) -> Option<u32> {
        let n64 = u64::from(n);
        let (off, width) = match self.bits {
            12 => (n64 + n64 / 2, 2),
            16 => (n64 * 2, 2),
            _ => (n64 * 4, 4),
        };
        let mut b = [0u8; 4];
        self.src
            .read_exact_at(self.fat_offset.checked_add(off)?, &mut b[..width])
            .ok()?;
        let v = match self.bits {
            12 => {
                let raw = u32::from(le16(&b, 0));
                if n.is_multiple_of(2) {
                    raw & 0xFFF
                } else {
                    raw >> 4
                }
            }
            16 => u32::from(le16(&b, 0)),
            _ => le32(&b, 0) & 0x0FFF_FFFF,
        };
        self.valid(v).then_some(v)
    }

    fn valid(&self, c: u32) -> bool {
        c >= 2 && c < self.clusters.saturating_add(2)
    }

    /// Reads a directory's raw bytes, bounded.
    fn dir_bytes(&self, d: Dir) -> Vec<u8> {
        let mut out = Vec::new();
        match d {
            Dir::FixedRoot(off, len) => {
                let len = usize::try_from(len).unwrap_or(0).min(MAX_DIR_BYTES);
                let mut v = vec![0u8; len];
                if self.src.read_exact_at(off, &mut v).is_ok() {
                    out = v;
                }
            }
            Dir::Chain(mut c) => {
                let cs = usize::try_from(self.cluster_size).unwrap_or(0);
                for _ in 0..MAX_CHAIN {
                    if !self.valid(c) || out.len().saturating_add(cs) > MAX_DIR_BYTES {
                        break;
                    }
                    let Some(off) = u64::from(c - 2)
                        .checked_mul(self.cluster_size)
                        .and_then(|o| o.checked_add(self.data_offset))
                    else {
                        break;
                    };
                    let mut v = vec![0u8; cs];
                    if self.src.read_exact_at(off, &mut v).is_err() {
                        break;
                    }
                    out.extend_from_slice(&v);
                    match self.next(c) {
                        Some(n) => c = n,
                        None => break,
                    }
                }
            }
        }
        out
    }

    fn entries(&self, d: Dir) -> Vec<Entry> {
        let bytes = self.dir_bytes(d);
        let mut out = Vec::new();
        for e in bytes.chunks_exact(32) {
            match e[0] {
                0 => break,
                0xE5 => continue,
                _ => {}
            }
            let attr = e[11];
            if attr & 0x0F == 0x0F || attr & 0x08 != 0 {
                continue; // long-name slot or volume label
            }
            let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_uppercase();
            let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_uppercase();
            if base == "." || base == ".." {
                continue;
            }
            let name = if ext.is_empty() {
                base
            } else {
                format!("{base}.{ext}")
            };
            let hi = if self.bits == 32 {
                u32::from(le16(e, 20)) << 16
            } else {
                0
            };
            out.push(Entry {
                name,
                is_dir: attr & 0x10 != 0,
                cluster: hi | u32::from(le16(e, 26)),
            });
        }
        out
    }

    /// Entries of the directory at `path` ("" or "/" is the root; components
    /// compared case-insensitively). Empty when absent.
    pub fn list(&self, path: &str) -> Vec<Entry> {
        let mut dir = self.root;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let Some(e) = self
                .entries(dir)
                .into_iter()
                .find(|e| e.is_dir && e.name.eq_ignore_ascii_case(comp))
            else {
                return Vec::new();
            };
            dir = Dir::Chain(e.cluster);
        }
        self.entries(dir)
    }

    /// Every `EFI/<dir>/<file>.EFI` path on the volume (bounded).
    pub fn efi_loaders(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in self.list("EFI").into_iter().filter(|e| e.is_dir).take(64) {
            for f in self.list(&format!("EFI/{}", d.name)) {
                if !f.is_dir && f.name.ends_with(".EFI") {
                    out.push(format!("EFI/{}/{}", d.name, f.name));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgcheck_source::MemSource;

    #[test]
    fn garbage_is_not_fat() {
        assert!(Fat::open(&MemSource::new("t", vec![0; 4096])).is_none());
        let mut b = vec![0xFFu8; 4096];
        b[510] = 0x55;
        b[511] = 0xAA;
        assert!(Fat::open(&MemSource::new("t", b)).is_none());
    }
}
