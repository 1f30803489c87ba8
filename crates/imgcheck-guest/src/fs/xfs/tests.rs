//! Unit tests on hand-made structures: geometry arithmetic, record
//! decoding, and hostile values a real mkfs never writes (cycles, huge
//! sizes, bad levels, pointers outside the filesystem).

use std::sync::Arc;

use imgcheck_source::MemSource;

use super::bmap::decode;
use super::sb::{SB_LEN, Superblock};
use super::{GuestFs, Kind, Xfs, crc_ok};
use crate::fs::FsError;

const BS: usize = 4096;

/// A v4 superblock: 4 KiB blocks, 256-byte inodes, 2 AGs of 100 blocks
/// (not a power of two, so AG arithmetic is exercised), ftype on.
fn sb_bytes() -> [u8; SB_LEN] {
    let mut b = [0u8; SB_LEN];
    b[0..4].copy_from_slice(b"XFSB");
    b[4..8].copy_from_slice(&4096u32.to_be_bytes());
    b[8..16].copy_from_slice(&200u64.to_be_bytes());
    b[56..64].copy_from_slice(&128u64.to_be_bytes());
    b[84..88].copy_from_slice(&100u32.to_be_bytes());
    b[88..92].copy_from_slice(&2u32.to_be_bytes());
    b[100..102].copy_from_slice(&(0x2000u16 | 0x8000 | 4).to_be_bytes());
    b[102..104].copy_from_slice(&512u16.to_be_bytes());
    b[104..106].copy_from_slice(&256u16.to_be_bytes());
    b[106..108].copy_from_slice(&16u16.to_be_bytes());
    b[120] = 12;
    b[121] = 9;
    b[122] = 8;
    b[123] = 4;
    b[124] = 7; // 100 blocks need 7 bits
    b[200..204].copy_from_slice(&0x200u32.to_be_bytes());
    b
}

#[test]
fn superblock_geometry_and_rejections() {
    let sb = Superblock::parse(&sb_bytes()).unwrap();
    assert!(sb.ftype && !sb.v5);
    // fsb 128 = AG 1, block 0 -> linear block 100.
    assert_eq!(sb.fsb_to_byte(1 << 7), Some((100 * 4096, 100)));
    assert_eq!(sb.fsb_to_byte(100), None); // AG block past agblocks
    assert_eq!(sb.fsb_to_byte(2 << 7), None); // AG 2 of 2
    assert_eq!(sb.fsb_to_byte(u64::MAX), None);
    assert_eq!(sb.inode_byte(128), Some(8 * 4096));
    assert_eq!(sb.inode_byte(u64::MAX), None);
    let bad = |f: &dyn Fn(&mut [u8; SB_LEN])| {
        let mut b = sb_bytes();
        f(&mut b);
        Superblock::parse(&b).unwrap_err().to_string()
    };
    assert!(bad(&|b| b[0] = b'Y').contains("magic"));
    assert!(bad(&|b| b[100..102].copy_from_slice(&4u16.to_be_bytes())).contains("v1 directories"));
    assert!(bad(&|b| b[4..8].copy_from_slice(&4095u32.to_be_bytes())).contains("block size"));
    assert!(bad(&|b| b[124] = 31).contains("agblklog"));
    assert!(bad(&|b| b[88..92].copy_from_slice(&0u32.to_be_bytes())).contains("groups"));
    assert!(bad(&|b| b[8..16].copy_from_slice(&u64::MAX.to_be_bytes())).contains("more than"));
    assert!(bad(&|b| b[192] = 9).contains("directory block"));
    assert!(bad(&|b| b[126] = 1).contains("inprogress"));
    let v5 = |incompat: u32| {
        move |b: &mut [u8; SB_LEN]| {
            b[100..102].copy_from_slice(&(0x8000u16 | 5).to_be_bytes());
            b[216..220].copy_from_slice(&incompat.to_be_bytes());
        }
    };
    assert!(bad(&v5(0x10)).contains("needsrepair"));
    assert!(bad(&v5(0x1000)).contains("0x1000"));
    assert!(bad(&v5(0x1)).contains("v5 inode size 256"));
}

#[test]
fn extent_records_and_crc() {
    // unwritten, offset 0x123, block (0x1FF << 43) | 5, length 7.
    let l0: u64 = (1 << 63) | (0x123 << 9) | 0x1FF;
    let l1: u64 = (5 << 21) | 7;
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&l0.to_be_bytes());
    r[8..].copy_from_slice(&l1.to_be_bytes());
    let e = decode(&r);
    assert!(e.unwritten);
    assert_eq!((e.off, e.block, e.len), (0x123, (0x1FF << 43) | 5, 7));
    let mut b = vec![7u8; 64];
    let crc = crc32c::crc32c(&{
        let mut z = b.clone();
        z[8..12].fill(0);
        z
    });
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    assert!(crc_ok(&b, 8));
    b[20] ^= 1;
    assert!(!crc_ok(&b, 8));
    assert!(!crc_ok(&b, 62));
}

/// A v4 image: root inode 128 is a shortform directory holding "etc"
/// (inode 129, itself a directory whose parent and "loop" entry point
/// back at the root), "big" (130, a file claiming 2^62 bytes), "far" (131,
/// an extent outside the filesystem), "deep" (132, a btree of level 200)
/// and "many" (133, more extents than the fork holds).
fn image() -> Xfs {
    let mut img = vec![0u8; 200 * BS];
    img[..SB_LEN].copy_from_slice(&sb_bytes());
    let inode = |img: &mut Vec<u8>, ino: usize, mode: u16, fmt: u8, size: u64, fork: &[u8]| {
        let at = 8 * BS + (ino - 128) * 256;
        let b = &mut img[at..at + 256];
        b[0..2].copy_from_slice(b"IN");
        b[2..4].copy_from_slice(&mode.to_be_bytes());
        b[4] = 2;
        b[5] = fmt;
        b[56..64].copy_from_slice(&size.to_be_bytes());
        b[76..80].copy_from_slice(&1u32.to_be_bytes());
        b[100..100 + fork.len()].copy_from_slice(fork);
    };
    let sf = |entries: &[(&str, u8, u32)]| {
        let mut f = vec![u8::try_from(entries.len()).unwrap(), 0, 0, 0, 0, 128];
        for (n, ft, ino) in entries {
            f.push(u8::try_from(n.len()).unwrap());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(n.as_bytes());
            f.push(*ft);
            f.extend_from_slice(&ino.to_be_bytes());
        }
        f
    };
    let root = sf(&[
        ("etc", 2, 129),
        ("big", 1, 130),
        ("far", 1, 131),
        ("deep", 1, 132),
        ("many", 1, 133),
    ]);
    inode(&mut img, 128, 0o40755, 1, root.len() as u64, &root);
    let etc = sf(&[("loop", 2, 128)]);
    inode(&mut img, 129, 0o40755, 1, etc.len() as u64, &etc);
    // One extent: file block 0 -> fsb 20, 1 block.
    let rec = |off: u64, block: u64, len: u64| {
        let mut r = ((off << 9) | (block >> 43)).to_be_bytes().to_vec();
        r.extend_from_slice(&((block << 21) | len).to_be_bytes());
        r
    };
    inode(&mut img, 130, 0o100644, 2, 1 << 62, &rec(0, 20, 1));
    inode(&mut img, 131, 0o100644, 2, 4096, &rec(0, 99 << 7, 1));
    let mut deep = 200u16.to_be_bytes().to_vec();
    deep.extend_from_slice(&1u16.to_be_bytes());
    inode(&mut img, 132, 0o100644, 3, 4096, &deep);
    inode(&mut img, 133, 0o100644, 2, 4096, &rec(0, 20, 1));
    img[8 * BS + 5 * 256 + 76..8 * BS + 5 * 256 + 80].copy_from_slice(&u32::MAX.to_be_bytes());
    Xfs::open(Arc::new(MemSource::new("t", img))).unwrap()
}

#[test]
fn hostile_inodes_are_errors() {
    let fs = image();
    assert_eq!(fs.lstat("/etc").unwrap(), Some(Kind::Dir));
    // A directory cycle is just a path: bounded by the components.
    let p = "/etc/loop".repeat(100);
    assert_eq!(fs.lstat(&p).unwrap(), Some(Kind::Dir));
    let long = "/etc/loop".repeat(1000);
    assert!(matches!(
        fs.lstat(&long),
        Err(FsError::LimitExceeded { .. })
    ));
    assert_eq!(fs.lstat("/big").unwrap(), Some(Kind::File(1 << 62)));
    assert_eq!(fs.read("/big", 10).unwrap(), vec![0u8; 10]);
    assert!(matches!(
        fs.read("/big", u64::MAX),
        Err(FsError::LimitExceeded { .. })
    ));
    assert!(
        fs.read("/far", 100)
            .unwrap_err()
            .to_string()
            .contains("outside")
    );
    assert!(
        fs.read("/deep", 100)
            .unwrap_err()
            .to_string()
            .contains("level 200")
    );
    assert!(
        fs.read("/many", 100)
            .unwrap_err()
            .to_string()
            .contains("do not fit")
    );
    assert!(matches!(fs.read("/etc", 1), Err(FsError::WrongKind { .. })));
    assert!(matches!(
        fs.read_link("/big"),
        Err(FsError::WrongKind { .. })
    ));
    assert!(matches!(
        fs.read_dir("/nope", 1),
        Err(FsError::WrongKind { .. })
    ));
    assert_eq!(fs.lstat("/big/below").unwrap(), None);
    let mut names = fs.read_dir("/", 100).unwrap();
    names.sort();
    assert_eq!(names, ["big", "deep", "etc", "far", "many"]);
    assert_eq!(fs.read_dir("/", 2).unwrap().len(), 2);
    assert!(fs.read_dir("/", 0).unwrap().is_empty());
}
