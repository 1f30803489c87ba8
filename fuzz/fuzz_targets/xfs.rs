#![no_main]
//! Fuzz target: the XFS reader over arbitrary bytes as a filesystem
//! (superblock, inodes, extent lists and bmbt, every directory format,
//! symlinks). Seed it with the start of an XFS partition from
//! testdata/generated/guests/xfs-rocky-v4.img (no CRCs, so mutations reach
//! the parsers) to get past the superblock checks.
use std::sync::Arc;

use imgcheck_guest::fs::xfs;
use imgcheck_guest::fs::{GuestFs, Kind};
use imgcheck_source::{ByteSource, MemSource};
use libfuzzer_sys::fuzz_target;

/// Lists and reads the tree breadth-first, bounded in depth and width.
fn walk(fs: &dyn GuestFs) {
    let mut dirs = vec![("/".to_owned(), 0u32)];
    let mut visited = 0;
    while let Some((d, depth)) = dirs.pop() {
        let Ok(names) = fs.read_dir(&d, 64) else { continue };
        for n in names {
            visited += 1;
            if visited > 512 {
                return;
            }
            let p = if d == "/" { format!("/{n}") } else { format!("{d}/{n}") };
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
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz", data.to_vec()));
    let Ok(fs) = xfs::open(src) else { return };
    for p in ["/etc/os-release", "/usr/lib/os-release", "/etc/cloud/cloud.cfg"] {
        let _ = fs.lstat(p);
        let _ = fs.read(p, 1 << 20);
    }
    walk(fs.as_ref());
});
