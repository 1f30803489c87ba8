//! Tests for the VHDX reader against images made by qemu-img.
//!
//! qemu-img is required: a missing qemu-img fails these tests with a
//! message, it never skips them. Every image that qemu can read is compared
//! byte for byte with `qemu-img convert -O raw`. The vectors qemu-img cannot
//! write (4096-byte logical sectors, a non-empty log, a differencing disk)
//! are made by editing a qemu-made image here; the first two are still
//! compared with qemu (which reads 4 KiB sectors, and replays a log when
//! `qemu-img check -r all` opens the file read-write); qemu refuses
//! differencing disks, so that one is checked against bytes built here.
// Test vectors are built from known-small values.
#![allow(clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgcheck_source::MemSource;
use proptest::prelude::*;

use super::*;
use crate::deps::DependencyPolicy;
use crate::disk::VirtualDisk;
use crate::limits::Limits;

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("qemu-img is required for the VHDX tests (apt-get install qemu-utils): {e}")
        });
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pattern disk of `size` bytes: data at block-aligned and unaligned
/// places, explicit zeros, holes, and the last sector.
fn pattern(dir: &Path, size: usize) -> PathBuf {
    let p = dir.join("pattern.raw");
    let mut d = vec![0u8; size];
    let mut x = 0x9E37_79B9_u32;
    let mut fill = |r: std::ops::Range<usize>, d: &mut [u8]| {
        let r = r.start.min(d.len())..r.end.min(d.len());
        for b in &mut d[r] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    };
    fill(0..4096, &mut d);
    fill(51_200..52_736, &mut d);
    fill(1 << 20..(3 << 20) + 4096, &mut d);
    fill(size - 4096..size, &mut d);
    std::fs::write(&p, &d).unwrap();
    p
}

struct Img {
    dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Converts a pattern of `size` bytes to VHDX with `opts`.
fn make(opts: &str, size: usize) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern(dir.path(), size);
    let path = dir.path().join("disk.vhdx");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        opts,
        raw.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&path).unwrap();
    Img { dir, path, bytes }
}

/// qemu-img's guest bytes of the VHDX file `path`.
fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("qemu.raw");
    qemu_img(&[
        "convert",
        "-f",
        "vhdx",
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

fn open_with(bytes: Vec<u8>, limits: &Limits) -> Result<VirtualDisk, DiskError> {
    let ctx = OpenContext {
        source: Arc::new(MemSource::new("test.vhdx", bytes)),
        limits,
        dependencies: DependencyPolicy::SameDirectory,
    };
    open(&ctx).map(VirtualDisk::new)
}

fn open_mem(bytes: Vec<u8>) -> Result<VirtualDisk, DiskError> {
    open_with(bytes, &Limits::default())
}

fn read_all(d: &VirtualDisk) -> Vec<u8> {
    let mut v = vec![0u8; d.virtual_size() as usize];
    d.read_at(0, &mut v).unwrap();
    v
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn guid_at(b: &[u8], off: usize) -> Guid {
    b[off..off + 16].try_into().unwrap()
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the CRC of the structure of `len` bytes at `at`.
fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    let c = checksum(&b[at..at + len]);
    put32(b, at + 4, c);
}

fn fix_headers(b: &mut [u8]) {
    for h in HEADER_OFFSETS {
        fix_crc(b, h as usize, HEADER_LEN);
    }
}

/// (BAT, metadata) regions of an image.
fn regions(b: &[u8]) -> (Region, Region) {
    let src = MemSource::new("t", b.to_vec());
    read_regions(&src, "t", REGION_OFFSETS[0]).unwrap().unwrap()
}

/// File offset of the metadata item `id`.
fn meta_item(b: &[u8], id: &Guid) -> usize {
    let (_, m) = regions(b);
    let at = m.offset as usize;
    let count = le16(b, at + 10) as usize;
    (0..count)
        .map(|i| at + 32 + i * 32)
        .find(|&e| guid_at(b, e) == *id)
        .map(|e| at + le32(b, e + 16) as usize)
        .expect("metadata item present")
}

fn check_against_qemu(img: &Img) -> VirtualDisk {
    let d = open_mem(img.bytes.clone()).unwrap();
    let reference = qemu_raw(&img.path);
    assert_eq!(d.virtual_size(), reference.len() as u64);
    assert!(
        read_all(&d) == reference,
        "guest bytes differ from qemu-img"
    );
    // Unaligned reads across block edges.
    for (off, len) in [(1 << 20) - 700, 3 << 20, 51_000, (2 << 20) + 5]
        .into_iter()
        .zip([1400usize, 8192, 2000, 100_000])
    {
        let mut buf = vec![0u8; len];
        d.read_at(off, &mut buf).unwrap();
        assert_eq!(&buf[..], &reference[off as usize..off as usize + len]);
    }
    d
}

#[test]
fn dynamic_and_fixed_match_qemu() {
    for opts in [
        "subformat=dynamic,block_size=1M",
        "subformat=fixed,block_size=1M",
        "subformat=dynamic,block_size=8M,block_state_zero=off",
        "subformat=fixed,block_size=256M,block_state_zero=off",
        "subformat=dynamic",
    ] {
        let img = make(opts, (9 << 20) + 1536);
        let d = check_against_qemu(&img);
        let info = d.info();
        let sub = if opts.contains("fixed") {
            "fixed"
        } else {
            "dynamic"
        };
        assert_eq!(info.subformat.as_deref(), Some(sub), "{opts}");
        assert_eq!(info.format_specific["logical-sector-size"], 512);
        assert!(info.external_refs.is_empty());
    }
}

#[test]
fn long_runs_are_returned() {
    let img = make(
        "subformat=fixed,block_size=1M,block_state_zero=off",
        16 << 20,
    );
    let d = open_mem(img.bytes.clone()).unwrap();
    // A fixed image's blocks follow each other: one run for the whole disk.
    let m = d.map(0, 16 << 20).unwrap();
    assert!(matches!(m.kind, MapKind::Data { .. }));
    assert_eq!(m.len, 16 << 20);
}

#[test]
fn qemu_img_prints_no_format_specific_for_vhdx() {
    // Our format_specific keys are imgcheck's own: check qemu still has none.
    let img = make("subformat=dynamic", 4 << 20);
    let out = qemu_img(&[
        "info",
        "-f",
        "vhdx",
        "--output=json",
        img.path.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("format-specific").is_none(), "{out}");
    let d = open_mem(img.bytes).unwrap();
    assert_eq!(v["cluster-size"], d.info().cluster_size.unwrap());
    assert_eq!(v["virtual-size"], d.virtual_size());
}

#[test]
fn logical_sector_4096_reads_like_512() {
    // qemu-img cannot create 4 KiB logical sectors and qemu 10 refuses to
    // open them (ENOTSUP; older qemu mixed 4 KiB and 512-byte sector
    // units). For a disk of fewer blocks than the chunk ratio the BAT
    // layout does not depend on the sector size, and payload blocks hold
    // guest bytes in order either way, so the 4 KiB-sector edit of a
    // qemu-made image must read exactly like the original, which is
    // compared with qemu.
    let mut img = make("subformat=dynamic,block_size=1M", 9 << 20);
    let want = read_all(&check_against_qemu(&img));
    let at = meta_item(&img.bytes, &META_LOGICAL_SECTOR);
    put32(&mut img.bytes, at, 4096);
    let at = meta_item(&img.bytes, &META_PHYSICAL_SECTOR);
    put32(&mut img.bytes, at, 4096);
    let d = open_mem(img.bytes.clone()).unwrap();
    assert!(read_all(&d) == want);
    assert_eq!(d.info().format_specific["logical-sector-size"], 4096);
    assert_eq!(d.info().format_specific["physical-sector-size"], 4096);
    std::fs::write(&img.path, &img.bytes).unwrap();
    let out = Command::new("qemu-img")
        .args(["info", "-f", "vhdx"])
        .arg(&img.path)
        .output()
        .expect("qemu-img is required for the VHDX tests");
    assert!(
        !out.status.success(),
        "qemu-img now opens 4 KiB-sector VHDX: compare with it instead"
    );
}

#[test]
fn one_bad_header_uses_the_other() {
    let img = make("subformat=dynamic,block_size=1M", 5 << 20);
    let want = read_all(&open_mem(img.bytes.clone()).unwrap());
    for h in HEADER_OFFSETS {
        let mut b = img.bytes.clone();
        b[h as usize + 200] ^= 1;
        let d = open_mem(b).unwrap();
        assert!(read_all(&d) == want);
    }
    // The valid header with the higher sequence number wins, even when it
    // is in the second slot.
    let mut b = img.bytes.clone();
    let (h1, h2) = (HEADER_OFFSETS[0] as usize, HEADER_OFFSETS[1] as usize);
    let seq = le64(&b, h1 + 8) + 10;
    put64(&mut b, h2 + 8, seq);
    put32(&mut b, h2 + 68, 0); // log length 0: would fail if the log were read
    b[h2 + 48] = 1; // LogGuid set in header 2 only
    fix_headers(&mut b);
    let e = open_mem(b.clone()).unwrap_err().to_string();
    assert!(e.contains("log"), "{e}");
    b[h2 + 48] = 0;
    put32(&mut b, h2 + 68, 1 << 20);
    fix_headers(&mut b);
    let src = MemSource::new("t", b);
    assert_eq!(current_header(&src, "t").unwrap().slot, 1);
}

#[test]
fn both_headers_bad_is_corrupt() {
    let mut b = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    b[HEADER_OFFSETS[0] as usize + 300] ^= 1;
    b[HEADER_OFFSETS[1] as usize] = b'x';
    let e = open_mem(b).unwrap_err();
    assert!(e.is_corrupt());
    let s = e.to_string();
    assert!(
        s.contains("neither header") && s.contains("CRC") && s.contains("signature"),
        "{s}"
    );
}

#[test]
fn bad_identifier_is_corrupt() {
    let mut b = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    b[0] = b'X';
    assert!(open_mem(b).unwrap_err().to_string().contains("vhdxfile"));
}

#[test]
fn region_table_fallback_and_corruption() {
    let img = make("subformat=dynamic,block_size=1M", 5 << 20);
    let want = read_all(&open_mem(img.bytes.clone()).unwrap());
    let mut b = img.bytes.clone();
    b[REGION_OFFSETS[0] as usize + 20] ^= 0x40;
    let d = open_mem(b.clone()).unwrap();
    assert!(read_all(&d) == want, "second region table copy used");
    b[REGION_OFFSETS[1] as usize + 20] ^= 0x40;
    let s = open_mem(b).unwrap_err().to_string();
    assert!(s.contains("neither region table"), "{s}");
}

#[test]
fn unknown_required_region_is_unsupported() {
    let mut b = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    let at = REGION_OFFSETS[0] as usize;
    let n = le32(&b, at + 8) as usize;
    let e = at + 16 + n * 32;
    b[e..e + 16].copy_from_slice(&[0x42; 16]);
    put64(&mut b, e + 16, 64 << 20);
    put32(&mut b, e + 24, 1 << 20);
    put32(&mut b, e + 28, 1);
    put32(&mut b, at + 8, n as u32 + 1);
    fix_crc(&mut b, at, REGION_LEN);
    let err = open_mem(b.clone()).unwrap_err();
    assert!(matches!(err, DiskError::Unsupported { .. }), "{err}");
    // Not required: ignored.
    put32(&mut b, e + 28, 0);
    fix_crc(&mut b, at, REGION_LEN);
    open_mem(b).unwrap();
}

#[test]
fn unknown_required_metadata_is_unsupported() {
    let mut b = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    let (_, m) = regions(&b);
    let at = m.offset as usize;
    let n = le16(&b, at + 10) as usize;
    let e = at + 32 + n * 32;
    b[e..e + 16].copy_from_slice(&[0x17; 16]);
    put32(&mut b, e + 16, 65536);
    put32(&mut b, e + 20, 8);
    put32(&mut b, e + 24, 4);
    b[at + 10..at + 12].copy_from_slice(&(n as u16 + 1).to_le_bytes());
    let err = open_mem(b.clone()).unwrap_err();
    assert!(
        matches!(&err, DiskError::Unsupported { what, .. } if what.contains("metadata")),
        "{err}"
    );
    put32(&mut b, e + 24, 0);
    open_mem(b).unwrap();
}

#[test]
fn block_size_out_of_range_is_corrupt() {
    let b0 = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    let at = meta_item(&b0, &META_FILE_PARAMETERS);
    for bad in [512 << 10, 3 << 20, 512 << 20, 0] {
        let mut b = b0.clone();
        put32(&mut b, at, bad);
        let s = open_mem(b).unwrap_err().to_string();
        assert!(s.contains("block size"), "{bad}: {s}");
    }
    let at = meta_item(&b0, &META_LOGICAL_SECTOR);
    let mut b = b0.clone();
    put32(&mut b, at, 1024);
    assert!(open_mem(b).unwrap_err().to_string().contains("sector size"));
}

#[test]
fn bat_over_the_limit_is_refused_before_reading() {
    let b0 = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    // 5 blocks = 40 bytes of BAT.
    let lim = Limits {
        max_table_bytes: 32,
        ..Limits::default()
    };
    let e = open_with(b0.clone(), &lim).unwrap_err();
    assert!(matches!(e, DiskError::Limit { .. }), "{e}");
    // A 64 TiB disk of 1 MiB blocks needs a 512 MiB BAT: refused by the
    // limit, not by an allocation.
    let mut b = b0;
    let at = meta_item(&b, &META_VIRTUAL_DISK_SIZE);
    put64(&mut b, at, 64 << 40);
    let e = open_mem(b).unwrap_err();
    assert!(
        matches!(&e, DiskError::Limit { what, .. } if what.contains("BAT")),
        "{e}"
    );
}

#[test]
fn bad_bat_entries_are_corrupt() {
    let b0 = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    let (bat, _) = regions(&b0);
    let at = bat.offset as usize;
    // State 4 does not exist; 7 only in differencing disks; a present
    // block past the end of the file.
    for (v, what) in [
        (4u64, "payload state 4"),
        (7 | (1 << 20), "PARTIALLY_PRESENT"),
        (6 | (4096 << 20), "outside the file"),
        (6 | bat.offset, "overlaps the BAT"),
        (6 | (1 << 20), "overlaps the log"),
    ] {
        let mut b = b0.clone();
        put64(&mut b, at + 8, v);
        let s = open_mem(b).unwrap_err().to_string();
        assert!(s.contains(what), "{what}: {s}");
    }
    // Unmapped as qemu numbers it (5) and as the spec does (3) read as zero.
    for st in [3u64, 5] {
        let mut b = b0.clone();
        put64(&mut b, at, st);
        let d = open_mem(b).unwrap();
        assert_eq!(d.map(0, 1 << 20).unwrap().kind, MapKind::Zero);
    }
}

/// One log descriptor to write.
enum Desc {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
}

/// A log entry with a correct CRC-32C.
fn log_entry(guid: &Guid, seq: u64, tail: u32, file_len: u64, descs: &[Desc]) -> Vec<u8> {
    let n = descs.len();
    let desc_sectors = (64 + 32 * n).div_ceil(4096);
    let data = descs.iter().filter(|d| matches!(d, Desc::Data(..))).count();
    let len = (desc_sectors + data) * 4096;
    let mut e = vec![0u8; len];
    e[..4].copy_from_slice(b"loge");
    put32(&mut e, 8, len as u32);
    put32(&mut e, 12, tail);
    put64(&mut e, 16, seq);
    put32(&mut e, 24, n as u32);
    e[32..48].copy_from_slice(guid);
    put64(&mut e, 48, file_len);
    put64(&mut e, 56, file_len);
    let mut ds = desc_sectors * 4096;
    for (i, d) in descs.iter().enumerate() {
        let at = 64 + i * 32;
        match d {
            Desc::Zero(off, zl) => {
                e[at..at + 4].copy_from_slice(b"zero");
                put64(&mut e, at + 8, *zl);
                put64(&mut e, at + 16, *off);
            }
            Desc::Data(off, sector) => {
                e[at..at + 4].copy_from_slice(b"desc");
                e[at + 4..at + 8].copy_from_slice(&sector[4092..]);
                e[at + 8..at + 16].copy_from_slice(&sector[..8]);
                put64(&mut e, at + 16, *off);
                e[ds..ds + 4].copy_from_slice(b"data");
                put32(&mut e, ds + 4, (seq >> 32) as u32);
                e[ds + 8..ds + 4092].copy_from_slice(&sector[8..4092]);
                put32(&mut e, ds + 4092, seq as u32);
                ds += 4096;
            }
        }
        put64(&mut e, at + 24, seq);
    }
    fix_crc(&mut e, 0, len);
    e
}

/// A qemu-made image with a log entry that (a) rewrites the BAT sector so
/// that block 4 (never written) maps to block 1's data, (b) writes a new
/// data sector into block 1 and (c) zeroes 8 KiB of block 0.
fn with_log() -> Img {
    let mut img = make("subformat=dynamic,block_size=1M", 6 << 20);
    let b = &mut img.bytes;
    let h = current_header(&MemSource::new("t", b.clone()), "t").unwrap();
    assert_eq!(h.log_guid, [0; 16], "qemu-img leaves a clean log");
    let (bat, _) = regions(b);
    let mut bat_sector = b[bat.offset as usize..bat.offset as usize + 4096].to_vec();
    let e1 = le64(&bat_sector, 8);
    assert_eq!(e1 & 7, PAYLOAD_FULLY_PRESENT);
    assert_eq!(le64(&bat_sector, 32) & 7, PAYLOAD_ZERO, "block 4 is zero");
    put64(&mut bat_sector, 32, e1);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let b0 = block_host(le64(&bat_sector, 0));
    let guid: Guid = *b"imgcheck-logtest";
    let entry = log_entry(
        &guid,
        7,
        0,
        b.len() as u64,
        &[
            Desc::Data(bat.offset, bat_sector),
            Desc::Data(block_host(e1) + 8192, data),
            Desc::Zero(b0, 8192),
        ],
    );
    let log_at = h.log_offset as usize;
    b[log_at..log_at + entry.len()].copy_from_slice(&entry);
    for at in HEADER_OFFSETS {
        b[at as usize + 48..at as usize + 64].copy_from_slice(&guid);
    }
    fix_headers(b);
    std::fs::write(&img.path, &*b).unwrap();
    img
}

#[test]
fn valid_log_is_replayed_like_qemu() {
    let img = with_log();
    let d = open_mem(img.bytes.clone()).unwrap();
    let got = read_all(&d);
    // The edits are visible.
    assert_eq!(
        &got[(4 << 20) + 8192..(4 << 20) + 8200],
        &[3, 10, 17, 24, 31, 38, 45, 52]
    );
    assert!(got[..8192].iter().all(|&x| x == 0));
    assert_eq!(got[(4 << 20)..(5 << 20)], got[(1 << 20)..(2 << 20)]);
    assert_eq!(d.info().format_specific["log-replayed"], true);
    // qemu refuses a dirty log read-only; `check -r all` opens the file
    // read-write and replays it. Its view of the replayed copy must match.
    let copy = img.dir.path().join("replayed.vhdx");
    std::fs::copy(&img.path, &copy).unwrap();
    qemu_img(&["check", "-r", "all", "-f", "vhdx", copy.to_str().unwrap()]);
    let replayed = std::fs::read(&copy).unwrap();
    let h = current_header(&MemSource::new("t", replayed), "t").unwrap();
    assert_eq!(h.log_guid, [0; 16], "qemu replayed and cleared the log");
    assert!(qemu_raw(&copy) == got, "replayed bytes differ from qemu's");
}

#[test]
fn qemu_refuses_a_dirty_log_read_only() {
    // The point of replay: without it the reader would see stale data.
    let img = with_log();
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "vhdx", "-O", "raw"])
        .arg(&img.path)
        .arg(img.dir.path().join("x.raw"))
        .output()
        .expect("qemu-img is required for the VHDX tests");
    assert!(!out.status.success());
}

#[test]
fn corrupt_log_is_an_error() {
    let img = with_log();
    let h = current_header(&MemSource::new("t", img.bytes.clone()), "t").unwrap();
    // A flipped byte in the entry: CRC mismatch, nothing to replay.
    let mut b = img.bytes.clone();
    b[h.log_offset as usize + 5000] ^= 1;
    let e = open_mem(b).unwrap_err();
    let s = e.to_string();
    assert!(
        e.is_corrupt() && s.contains("CRC") && s.contains("stale"),
        "{s}"
    );
    // Another log GUID in the header: the entry is not ours.
    let mut b = img.bytes.clone();
    for at in HEADER_OFFSETS {
        b[at as usize + 50] ^= 1;
    }
    fix_headers(&mut b);
    assert!(open_mem(b).unwrap_err().to_string().contains("log GUID"));
    // Every 4 KiB of the log claims a whole-log entry with a bad CRC:
    // refused after a bounded amount of checking, not after len² work.
    let mut b = img.bytes.clone();
    let (at, len) = (h.log_offset as usize, h.log_length as usize);
    for o in (at..at + len).step_by(4096) {
        b[o..o + 4].copy_from_slice(b"loge");
        put32(&mut b, o + 8, len as u32);
        b[o + 32..o + 48].copy_from_slice(&h.log_guid);
    }
    let started = std::time::Instant::now();
    let s = open_mem(b).unwrap_err().to_string();
    assert!(s.contains("too many damaged entries"), "{s}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A tail that names no entry: the sequence is incomplete.
    let mut b = img.bytes.clone();
    let at = h.log_offset as usize;
    put32(&mut b, at + 12, 4096 * 3);
    let elen = le32(&b, at + 8) as usize;
    fix_crc(&mut b, at, elen);
    assert!(open_mem(b).is_err());
}

#[test]
fn newer_log_sequence_wins() {
    // Two sequences: an old one at log offset 0 and a newer one after it,
    // each complete; the newer one's data must win.
    let mut img = with_log();
    let b = &mut img.bytes;
    let h = current_header(&MemSource::new("t", b.clone()), "t").unwrap();
    let (bat, _) = regions(b);
    let e1 = block_host(le64(b, bat.offset as usize + 8));
    let first_len = le32(b, h.log_offset as usize + 8) as usize;
    let data = vec![0xEE; 4096];
    let e = log_entry(
        &h.log_guid,
        8,
        first_len as u32,
        b.len() as u64,
        &[Desc::Data(e1 + 8192, data)],
    );
    let at = h.log_offset as usize + first_len;
    b[at..at + e.len()].copy_from_slice(&e);
    let d = open_mem(b.clone()).unwrap();
    let got = read_all(&d);
    assert!(
        got[(1 << 20) + 8192..(1 << 20) + 12288]
            .iter()
            .all(|&x| x == 0xEE)
    );
    // Entry 8's tail names entry 7 instead: one sequence of two; the
    // BAT edit of entry 7 and the data of entry 8 both apply.
    put32(b, at + 12, 0);
    fix_crc(b, at, e.len());
    let got = read_all(&open_mem(b.clone()).unwrap());
    assert!(
        got[(4 << 20) + 8192..(4 << 20) + 12288]
            .iter()
            .all(|&x| x == 0xEE)
    );
}

#[test]
fn differencing_reports_parent_and_reads_bitmap() {
    // qemu-img cannot write differencing disks (and refuses to read them),
    // so turn a qemu-made 1 MiB-block image into one by hand: HasParent,
    // a parent locator, block 1 PARTIALLY_PRESENT with a sector bitmap.
    let mut b = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    let own = read_all(&open_mem(b.clone()).unwrap());
    let fp = meta_item(&b, &META_FILE_PARAMETERS);
    put32(&mut b, fp + 4, 2);
    let (bat, m) = regions(&b);
    // Parent locator item at region offset 512 KiB.
    let loc_at = m.offset as usize + (512 << 10);
    let pairs = [("parent_linkage", "{x}"), ("relative_path", ".\\base.vhdx")];
    let mut loc = vec![0u8; 20 + 12 * pairs.len()];
    loc[18..20].copy_from_slice(&(pairs.len() as u16).to_le_bytes());
    for (i, (k, v)) in pairs.iter().enumerate() {
        for (j, s) in [k, v].iter().enumerate() {
            let u: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let off = loc.len();
            loc.extend_from_slice(&u);
            put32(&mut loc, 20 + i * 12 + j * 4, off as u32);
            loc[20 + i * 12 + 8 + j * 2..20 + i * 12 + 10 + j * 2]
                .copy_from_slice(&(u.len() as u16).to_le_bytes());
        }
    }
    b[loc_at..loc_at + loc.len()].copy_from_slice(&loc);
    let n = le16(&b, m.offset as usize + 10) as usize;
    let e = m.offset as usize + 32 + n * 32;
    b[e..e + 16].copy_from_slice(&META_PARENT_LOCATOR);
    put32(&mut b, e + 16, 512 << 10);
    put32(&mut b, e + 20, loc.len() as u32);
    put32(&mut b, e + 24, 4 | 2);
    b[m.offset as usize + 10..m.offset as usize + 12]
        .copy_from_slice(&(n as u16 + 1).to_le_bytes());
    // Sector bitmap for chunk 0 (BAT index chunk_ratio = 4096) in a new
    // MiB at the end of the file: sectors 2048..2050 and 2100 of the disk
    // (block 1) are present in this file.
    let sb_at = b.len();
    b.resize(sb_at + (1 << 20), 0);
    b[sb_at + 2048 / 8] = 0b0000_0011;
    b[sb_at + 2100 / 8] |= 1 << (2100 % 8);
    put64(
        &mut b,
        bat.offset as usize + 4096 * 8,
        sb_at as u64 | SB_PRESENT,
    );
    let e1 = le64(&b, bat.offset as usize + 8);
    put64(
        &mut b,
        bat.offset as usize + 8,
        (e1 & !7) | PAYLOAD_PARTIALLY_PRESENT,
    );

    let d = open_mem(b).unwrap();
    let info = d.info();
    assert_eq!(info.subformat.as_deref(), Some("differencing"));
    assert_eq!(info.backing_file.as_deref(), Some(".\\base.vhdx"));
    assert_eq!(info.external_refs.len(), 1);
    assert!(!info.external_refs[0].opened);
    let got = read_all(&d);
    let mut want = own.clone();
    for s in 2048..4096usize {
        if !(s == 2048 || s == 2049 || s == 2100) {
            want[s * 512..(s + 1) * 512].fill(0);
        }
    }
    assert!(
        got == want,
        "present sectors from this file, the rest zeros"
    );
    let m = d.map(1 << 20, 1 << 20).unwrap();
    assert_eq!(m.len, 1024);
    assert!(matches!(m.kind, MapKind::Data { .. }));
    let m = d.map((1 << 20) + 1024, 1 << 20).unwrap();
    assert_eq!((m.kind, m.len), (MapKind::Unallocated, 50 * 512));
}

/// A small dynamic image and qemu-img's raw view of it.
fn small_image_and_reference() -> &'static (Vec<u8>, Vec<u8>) {
    use std::sync::OnceLock;
    static IMG: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    IMG.get_or_init(|| {
        let img = make("subformat=dynamic,block_size=1M,log_size=1M", 3 << 20);
        let reference = qemu_raw(&img.path);
        (img.bytes, reference)
    })
}

fn small_image() -> &'static [u8] {
    &small_image_and_reference().0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncation_never_panics(cut in 0usize..8 << 20) {
        let (b, reference) = small_image_and_reference();
        let b = b[..cut.min(b.len())].to_vec();
        crate::testutil::assert_cut_outcome(open_mem(b), reference, 1 << 20, u64::MAX);
    }

    #[test]
    fn bit_flips_never_panic(
        flips in proptest::collection::vec((0usize..5 << 20, 0u8..8), 1..16),
        fix in any::<bool>(),
    ) {
        let mut b = small_image().to_vec();
        let len = b.len();
        for (at, bit) in flips {
            // Aim most flips at the structures: headers, tables, BAT.
            let at = at % len;
            b[at] ^= 1 << bit;
        }
        if fix {
            // Let flips in headers and region tables get past the CRCs.
            fix_headers(&mut b);
            for r in REGION_OFFSETS {
                fix_crc(&mut b, r as usize, REGION_LEN);
            }
        }
        crate::testutil::assert_flip_outcome(open_mem(b), 64 << 10, 16 << 20);
    }
}

/// The log, BAT and metadata regions must not overlap each other or the
/// header section (MS-VHDX 2.2). A qemu-img image, patched at the spec's
/// offsets: header 1 at 64 KiB (LogOffset at +72, LogLength at +68, CRC
/// recomputed), region table 1 at 192 KiB (entry 0 at +16: FileOffset at
/// +16 of the entry, CRC recomputed).
#[test]
fn overlapping_regions_are_corrupt() {
    let b0 = make("subformat=dynamic,block_size=1M", 5 << 20).bytes;
    let (bat, meta) = regions(&b0);
    let kind = |e: &DiskError| e.kind();
    // The log moved onto the BAT (both header copies, so neither is a
    // fallback).
    let mut b = b0.clone();
    for h in HEADER_OFFSETS {
        put64(&mut b, h as usize + 72, bat.offset);
    }
    fix_headers(&mut b);
    let e = open_mem(b).unwrap_err();
    assert!(e.to_string().contains("overlaps the log region"), "{e}");
    assert_eq!(kind(&e), imgcheck_source::ErrorKind::Corrupt);
    // The log over the header section.
    let mut b = b0.clone();
    for h in HEADER_OFFSETS {
        put64(&mut b, h as usize + 72, 0);
    }
    fix_headers(&mut b);
    let e = open_mem(b).unwrap_err();
    assert!(e.to_string().contains("overlaps the header section"), "{e}");
    // The BAT region moved onto the log (1 MiB, where qemu-img puts it),
    // in both region table copies.
    let mut b = b0.clone();
    for r in REGION_OFFSETS {
        let t = r as usize;
        let count = le32(&b, t + 8) as usize;
        let e = (0..count)
            .map(|i| t + 16 + i * 32)
            .find(|&e| guid_at(&b, e) == REGION_BAT)
            .expect("BAT entry");
        put64(&mut b, e + 16, 1 << 20);
        fix_crc(&mut b, t, REGION_LEN);
    }
    assert_ne!(meta.offset, 1 << 20);
    let e = open_mem(b).unwrap_err();
    assert!(e.to_string().contains("overlaps the log region"), "{e}");
    assert_eq!(kind(&e), imgcheck_source::ErrorKind::Corrupt);
}
