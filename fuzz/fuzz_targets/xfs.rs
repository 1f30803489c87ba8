#![no_main]
//! Fuzz target: the XFS reader over arbitrary bytes as a filesystem
//! (superblock, inodes, extent lists and bmbt, every directory format,
//! symlinks). The input is the start of the filesystem, read as if
//! followed by zeros up to 1 TiB, so a seed of the first 2 MiB of an XFS
//! partition (dd bs=1M skip=2 count=2 of
//! testdata/generated/guests/xfs-rocky-v4.img: no CRCs, so mutations reach
//! the parsers) passes the superblock's size check.
use std::sync::Arc;

use imgcheck_guest::fs::xfs;
use imgcheck_guest::fs::{GuestFs, Kind};
use imgcheck_source::{ByteSource, SourceError};
use libfuzzer_sys::fuzz_target;

/// `data`, then zeros, 1 TiB in all.
#[derive(Debug)]
struct Padded(Vec<u8>);

impl ByteSource for Padded {
    fn name(&self) -> &str {
        "fuzz"
    }
    fn len(&self) -> u64 {
        1 << 40
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        imgcheck_source::check_range("fuzz", offset, buf.len(), self.len())?;
        buf.fill(0);
        if let Ok(start) = usize::try_from(offset) {
            if let Some(src) = self.0.get(start..) {
                let n = src.len().min(buf.len());
                buf[..n].copy_from_slice(&src[..n]);
            }
        }
        Ok(())
    }
}

/// Lists and reads the tree breadth-first, bounded in depth and width.
fn walk(fs: &dyn GuestFs) {
    let mut dirs = vec![("/".to_owned(), 0u32)];
    let mut visited = 0;
    while let Some((d, depth)) = dirs.pop() {
        let Ok(names) = fs.read_dir(&d, 64) else {
            continue;
        };
        for n in names {
            visited += 1;
            if visited > 512 {
                return;
            }
            let p = if d == "/" {
                format!("/{n}")
            } else {
                format!("{d}/{n}")
            };
            match fs.lstat(&p) {
                Ok(Some(Kind::Dir)) if depth < 4 => dirs.push((p, depth + 1)),
                Ok(Some(Kind::File(_))) => {
                    let _ = fs.read(&p, 1 << 16);
                }
                Ok(Some(Kind::Symlink)) => {
                    let _ = fs.read_link(&p);
                }
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ByteSource> = Arc::new(Padded(data.to_vec()));
    let Ok(fs) = xfs::open(src) else { return };
    for p in [
        "/etc/os-release",
        "/usr/lib/os-release",
        "/etc/cloud/cloud.cfg",
    ] {
        let _ = fs.lstat(p);
        let _ = fs.read(p, 1 << 20);
    }
    walk(fs.as_ref());
});
