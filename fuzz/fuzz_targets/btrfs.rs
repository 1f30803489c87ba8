#![no_main]
//! Fuzz target: the btrfs reader alone, over arbitrary bytes as one
//! filesystem. Checksums are fixed up before the reader sees the bytes
//! (the superblock's, and every node-sized block that carries the
//! superblock's fsid), so mutations reach the tree, item, extent and
//! decompression parsers instead of stopping at the crc32c check.
use std::sync::Arc;

use imgcheck_guest::FsKind;
use imgcheck_guest::fs;
use imgcheck_source::{ByteSource, MemSource};
use libfuzzer_sys::fuzz_target;

const SB: usize = 0x1_0000;

fn fix_checksums(d: &mut [u8]) {
    if d.len() < SB + 4096 {
        return;
    }
    let nodesize = u32::from_le_bytes(d[SB + 0x94..SB + 0x98].try_into().unwrap()) as usize;
    let sb_crc = crc32c::crc32c(&d[SB + 0x20..SB + 4096]);
    d[SB..SB + 4].copy_from_slice(&sb_crc.to_le_bytes());
    if !(4096..=65536).contains(&nodesize) || !nodesize.is_power_of_two() {
        return;
    }
    let fsid: [u8; 16] = d[SB + 0x20..SB + 0x30].try_into().unwrap();
    let mut off = 0;
    while off + nodesize <= d.len() {
        if off != SB && d[off + 0x20..off + 0x30] == fsid {
            let crc = crc32c::crc32c(&d[off + 0x20..off + nodesize]);
            d[off..off + 4].copy_from_slice(&crc.to_le_bytes());
        }
        off += nodesize;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = data.to_vec();
    fix_checksums(&mut d);
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz", d));
    let Some(Ok(view)) = fs::open(FsKind::Btrfs, src) else {
        return;
    };
    let mut views = vec![view.clone()];
    views.extend(view.alternate_roots().into_iter().map(|(_, v)| v).take(8));
    for o in ["subvol=root", "subvolid=256", "subvol=/@/boot", "subvolid=5"] {
        if let Ok(Some(v)) = view.with_mount_options(o) {
            views.push(v);
        }
    }
    for v in views {
        let Ok(names) = v.read_dir("/", 64) else { continue };
        for n in names.iter().take(16) {
            let p = format!("/{n}");
            let _ = v.lstat(&p);
            let _ = v.read(&p, 1 << 20);
            let _ = v.read_link(&p);
            let _ = v.read_dir(&p, 64);
        }
        let _ = v.read("/etc/os-release", 1 << 16);
    }
});
