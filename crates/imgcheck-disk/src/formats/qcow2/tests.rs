//! qcow2 tests: hand-built headers for each validation branch, images made
//! by qemu-img / qemu-io compared with `qemu-img convert -O raw` (a missing
//! qemu-img fails the test with a message), and mutated images that must
//! never panic.
// Test vectors are built from known-small values.
#![allow(clippy::cast_possible_truncation)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use imgcheck_source::{ByteSource, FileSource, MemSource};
use proptest::prelude::*;

use super::*;
use crate::deps::DependencyPolicy;
use crate::disk::VirtualDisk;
use crate::limits::Limits;

fn tool(name: &str, args: &[&str]) {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is required for the qcow2 tests (apt-get install qemu-utils): {e}")
    });
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open_src(src: Arc<dyn ByteSource>, limits: &Limits) -> Result<VirtualDisk, DiskError> {
    let ctx = OpenContext {
        source: src,
        limits,
        dependencies: DependencyPolicy::SameDirectory,
    };
    open(&ctx).map(VirtualDisk::new)
}

fn open_mem(bytes: Vec<u8>) -> Result<VirtualDisk, DiskError> {
    open_src(
        Arc::new(MemSource::new("test.qcow2", bytes)),
        &Limits::default(),
    )
}

fn read_all(d: &VirtualDisk) -> Vec<u8> {
    let mut v = vec![0u8; d.virtual_size() as usize];
    d.read_at(0, &mut v).unwrap();
    v
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

const CS: usize = 512;

/// A minimal valid v3 image with 512-byte clusters, written by hand:
/// cluster 0 header, 1 refcount table, 2 L1 (32 entries: 1 MiB), 3 the L2
/// table of L1 entry 0, 4 one data cluster (0xAB) mapped at guest 0.
fn hand_v3() -> Vec<u8> {
    let mut b = vec![0u8; 5 * CS];
    put32(&mut b, 0, header::MAGIC);
    put32(&mut b, 4, 3); // version
    put64(&mut b, 8, 0); // backing_file_offset
    put32(&mut b, 16, 0); // backing_file_size
    put32(&mut b, 20, 9); // cluster_bits
    put64(&mut b, 24, 1 << 20); // size
    put32(&mut b, 32, 0); // crypt_method
    put32(&mut b, 36, 32); // l1_size
    put64(&mut b, 40, 2 * CS as u64); // l1_table_offset
    put64(&mut b, 48, CS as u64); // refcount_table_offset
    put32(&mut b, 56, 1); // refcount_table_clusters
    put32(&mut b, 60, 0); // nb_snapshots
    put64(&mut b, 64, 0); // snapshots_offset
    put64(&mut b, 72, 0); // incompatible_features
    put64(&mut b, 80, 0); // compatible_features
    put64(&mut b, 88, 0); // autoclear_features
    put32(&mut b, 96, 4); // refcount_order
    put32(&mut b, 100, 112); // header_length
    b[104] = 0; // compression_type
    // Extension area from 112: end marker (already zero).
    put64(&mut b, 2 * CS, (1 << 63) | (3 * CS as u64)); // L1[0] -> L2
    put64(&mut b, 3 * CS, (1 << 63) | (4 * CS as u64)); // L2[0] -> data
    b[4 * CS..5 * CS].fill(0xAB);
    b
}

fn err_of(b: Vec<u8>) -> DiskError {
    match open_mem(b) {
        Ok(_) => panic!("the image must be refused"),
        Err(e) => e,
    }
}

fn assert_corrupt(e: &DiskError, words: &str) {
    assert!(
        matches!(e, DiskError::Corrupt { .. }),
        "expected corrupt, got {e}"
    );
    assert!(e.to_string().contains(words), "{e:?} lacks {words:?}");
}

#[test]
fn hand_built_image_reads() {
    let d = open_mem(hand_v3()).unwrap();
    assert_eq!(d.virtual_size(), 1 << 20);
    let all = read_all(&d);
    assert!(all[..CS].iter().all(|&x| x == 0xAB));
    assert!(all[CS..].iter().all(|&x| x == 0));
    let m = d.map(0, 1 << 20).unwrap();
    assert_eq!(
        m.kind,
        MapKind::Data {
            file: 0,
            host_offset: 4 * CS as u64
        }
    );
    assert_eq!(m.len, CS as u64);
    // The rest is one unallocated run across L2 tables.
    let m = d.map(CS as u64, 1 << 20).unwrap();
    assert_eq!(m.kind, MapKind::Unallocated);
    assert_eq!(m.len, (1 << 20) - CS as u64);
    let info = d.info();
    assert_eq!(info.subformat.as_deref(), Some("v3"));
    assert_eq!(info.format_specific["compat"], "1.1");
    assert_eq!(info.format_specific["refcount-bits"], 16);
    assert_eq!(info.format_specific["lazy-refcounts"], false);
}

#[test]
fn truncated_header() {
    let b = hand_v3();
    for n in [0, 4, 50, 100] {
        let e = err_of(b[..n].to_vec());
        assert_corrupt(&e, "qcow2 header");
    }
    let e = err_of(b[..50].to_vec());
    assert!(e.to_string().contains("shorter than the 104-byte"), "{e}");
}

#[test]
fn flipped_magic() {
    let mut b = hand_v3();
    b[3] ^= 1;
    assert_corrupt(&err_of(b), "magic");
}

#[test]
fn bad_version_is_unsupported() {
    let mut b = hand_v3();
    put32(&mut b, 4, 4);
    assert!(matches!(err_of(b), DiskError::Unsupported { what, .. } if what.contains("version 4")));
}

#[test]
fn cluster_bits_out_of_range() {
    for bits in [8, 22, 0, u32::MAX] {
        let mut b = hand_v3();
        put32(&mut b, 20, bits);
        assert_corrupt(&err_of(b), &format!("cluster_bits is {bits}"));
    }
}

#[test]
fn absurd_l1_size_is_a_limit_before_allocation() {
    let mut b = hand_v3();
    put32(&mut b, 36, u32::MAX);
    let e = err_of(b);
    assert!(
        matches!(&e, DiskError::Limit { what, value, .. } if what.contains("L1") && *value == u64::from(u32::MAX) * 8),
        "{e}"
    );
    // A lower limit applies to a normal L1 too.
    let lim = Limits {
        max_table_bytes: 64,
        ..Limits::default()
    };
    let e = open_src(Arc::new(MemSource::new("t", hand_v3())), &lim).unwrap_err();
    assert!(matches!(e, DiskError::Limit { .. }), "{e}");
}

#[test]
fn l1_too_small_or_misplaced() {
    let mut b = hand_v3();
    put32(&mut b, 36, 31);
    assert_corrupt(&err_of(b), "too few for the virtual size");
    let mut b = hand_v3();
    put64(&mut b, 40, 2 * CS as u64 + 8);
    assert_corrupt(&err_of(b), "not aligned");
    let mut b = hand_v3();
    put64(&mut b, 40, 100 * CS as u64);
    assert_corrupt(&err_of(b), "past the end of the file");
}

#[test]
fn huge_virtual_size_is_a_limit() {
    let mut b = hand_v3();
    put64(&mut b, 24, u64::MAX);
    assert!(matches!(err_of(b), DiskError::Limit { .. }));
}

#[test]
fn header_extension_past_cluster_0() {
    let mut b = hand_v3();
    put32(&mut b, 112, 0x1234_5678);
    put32(&mut b, 116, 1000);
    assert_corrupt(&err_of(b), "runs past the end of the extension area");
    // An extension header that itself crosses the end of the extension
    // area (here: the backing file name at 500).
    let mut b = hand_v3();
    put64(&mut b, 8, 500);
    put32(&mut b, 16, 4);
    put32(&mut b, 112, 0x1234_5678);
    put32(&mut b, 116, 376);
    put32(&mut b, 496, 0x1234_5678);
    assert_corrupt(&err_of(b), "extension header runs past");
    // u32::MAX length: checked arithmetic, no overflow.
    let mut b = hand_v3();
    put32(&mut b, 112, 0x1234_5678);
    put32(&mut b, 116, u32::MAX);
    assert_corrupt(&err_of(b), "runs past");
}

#[test]
fn encrypted_is_unsupported() {
    for m in [1, 2] {
        let mut b = hand_v3();
        put32(&mut b, 32, m);
        let e = err_of(b);
        assert!(matches!(e, DiskError::Unsupported { .. }), "{e}");
        assert!(
            e.to_string().contains("encrypted qcow2 is not supported"),
            "{e}"
        );
        assert!(e.hint().is_some_and(|h| h.contains("crypt_method")));
    }
}

#[test]
fn unknown_incompatible_bit_named() {
    let mut b = hand_v3();
    put64(&mut b, 72, 1 << 7);
    let e = err_of(b);
    assert!(
        matches!(&e, DiskError::Unsupported { what, .. } if what.contains("bit(s) 7")),
        "{e}"
    );
    // With a feature name table naming it.
    let mut b = hand_v3();
    put64(&mut b, 72, 1 << 9);
    put32(&mut b, 112, 0x6803_F857);
    put32(&mut b, 116, 48);
    b[120] = 0;
    b[121] = 9;
    b[122..122 + 8].copy_from_slice(b"teleport");
    let e = err_of(b).to_string();
    assert!(e.contains("9 (\"teleport\")"), "{e}");
}

#[test]
fn backing_name_checks() {
    let mut b = hand_v3();
    put64(&mut b, 8, 200);
    put32(&mut b, 16, 2000);
    let e = err_of(b);
    assert!(
        matches!(&e, DiskError::Limit { what, limit: 1023, .. } if what.contains("backing")),
        "{e}"
    );
    let mut b = hand_v3();
    put64(&mut b, 8, 200);
    put32(&mut b, 16, 400);
    assert_corrupt(&err_of(b), "runs past the first cluster");
    let mut b = hand_v3();
    put64(&mut b, 8, 4096);
    put32(&mut b, 16, 4);
    assert_corrupt(&err_of(b), "backing_file_offset");
    // A valid one is reported, never opened.
    let mut b = hand_v3();
    put64(&mut b, 8, 400);
    put32(&mut b, 16, 11);
    b[400..411].copy_from_slice(b"/etc/shadow");
    let d = open_mem(b).unwrap();
    assert_eq!(d.info().backing_file.as_deref(), Some("/etc/shadow"));
    assert_eq!(d.info().external_refs.len(), 1);
    assert!(!d.info().external_refs[0].opened);
}

#[test]
fn external_data_file_is_named_and_refused() {
    let mut b = hand_v3();
    put64(&mut b, 72, 1 << 2);
    put32(&mut b, 112, 0x4441_5441);
    put32(&mut b, 116, 8);
    b[120..128].copy_from_slice(b"data.raw");
    match err_of(b) {
        DiskError::ExternalReference { name, kind, .. } => {
            assert_eq!(name, "data.raw");
            assert_eq!(kind, "external data file");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn other_header_fields() {
    for (off, v, words) in [
        (100, 108u32, "header_length"),
        (100, 96, "header_length"),
        (96, 7, "refcount_order"),
        (56, 0, "no refcount table"),
    ] {
        let mut b = hand_v3();
        put32(&mut b, off, v);
        assert_corrupt(&err_of(b), words);
    }
    // Extended L2 needs 16 KiB clusters.
    let mut b = hand_v3();
    put64(&mut b, 72, 1 << 4);
    assert_corrupt(&err_of(b), "extended L2");
    // zstd type without the incompatible bit, and the bit without the type.
    let mut b = hand_v3();
    b[104] = 1;
    assert_corrupt(&err_of(b), "compression type");
    let mut b = hand_v3();
    put64(&mut b, 72, 1 << 3);
    assert_corrupt(&err_of(b), "compression type");
    let mut b = hand_v3();
    put32(&mut b, 56, 1 << 20);
    assert!(matches!(err_of(b), DiskError::Limit { .. }));
}

#[test]
fn l1_and_l2_entries_are_checked_when_used() {
    let l2 = 3 * CS as u64;
    for (entry, words) in [
        ((1u64 << 63) | (4 * CS as u64) | 2, "reserved bits"),
        ((1u64 << 63) | (40 * CS as u64), "past the end of the file"),
    ] {
        let mut b = hand_v3();
        put64(&mut b, 3 * CS, entry);
        let d = open_mem(b).unwrap();
        let e = d.read_at(0, &mut [0u8; 16]).unwrap_err();
        assert_corrupt(&e, words);
        assert!(e.to_string().contains("entry 0"), "{e}");
        assert!(
            matches!(e, DiskError::Corrupt { offset, .. } if offset == l2),
            "{e}"
        );
        // The unaffected rest still reads.
        d.read_at(CS as u64, &mut [0u8; 16]).unwrap();
    }
    let mut b = hand_v3();
    put64(&mut b, 2 * CS, (3 * CS as u64) | 1);
    let d = open_mem(b).unwrap();
    assert_corrupt(&d.read_at(0, &mut [0u8; 1]).unwrap_err(), "reserved bits");
    // v2 has no zero flag.
    let mut b = hand_v3();
    put32(&mut b, 4, 2);
    put64(&mut b, 3 * CS, 1);
    let d = open_mem(b).unwrap();
    assert_corrupt(&d.read_at(0, &mut [0u8; 1]).unwrap_err(), "zero flag");
    // v3 zero flag, with and without a preallocated cluster.
    for e in [1, (4 * CS as u64) | 1] {
        let mut b = hand_v3();
        put64(&mut b, 3 * CS, e);
        let d = open_mem(b).unwrap();
        assert_eq!(d.map(0, 1).unwrap().kind, MapKind::Zero);
        assert!(read_all(&d).iter().all(|&x| x == 0));
    }
}

#[test]
fn compressed_entry_past_the_file_and_garbage() {
    // Compressed at a byte offset inside the file but the bytes are not
    // deflate: an error naming the cluster, never a panic.
    let mut b = hand_v3();
    put64(&mut b, 3 * CS, (1 << 62) | (4 * CS as u64 + 3));
    let d = open_mem(b).unwrap();
    assert_eq!(d.map(0, 1).unwrap().kind, MapKind::Encoded);
    let e = d.read_at(0, &mut [0u8; 8]).unwrap_err();
    assert!(e.to_string().contains("compressed"), "{e}");
    let mut b = hand_v3();
    put64(&mut b, 3 * CS, (1 << 62) | (1 << 40));
    let d = open_mem(b).unwrap();
    assert_corrupt(&d.map(0, 1).unwrap_err(), "past the end of the file");
}

/// (image bytes, qemu-img's raw view) of a qemu-made image.
fn qemu_image(dir: &Path, create: &str, size: &str, io: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let img = dir.join("t.qcow2");
    let raw = dir.join("t.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    let _ = std::fs::remove_file(&img);
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-o", create, i, size],
    );
    let mut args = vec!["-f", "qcow2"];
    for c in io {
        args.extend(["-c", c]);
    }
    args.push(i);
    tool("qemu-io", &args);
    tool("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", i, r]);
    (std::fs::read(img).unwrap(), std::fs::read(raw).unwrap())
}

const WRITES: &[&str] = &[
    "write -P 0x11 0 3k",
    "write -c -P 0x22 64k 64k",
    "write -P 0x33 200k 70k",
    "write -z 210k 8k",
    "write -z -u 256k 64k",
    "write -c -P 0x44 1M 128k",
];

#[test]
fn qemu_images_match_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    for create in [
        "compat=0.10",
        "compat=1.1,cluster_size=512",
        "cluster_size=4k,compression_type=zstd",
        "extended_l2=on,cluster_size=16k",
        "extended_l2=on,cluster_size=64k,compression_type=zstd",
    ] {
        let writes: Vec<&str> = WRITES
            .iter()
            .copied()
            .filter(|w| !(create.contains("0.10") && w.contains("-z")))
            .collect();
        let (img, want) = qemu_image(dir.path(), create, "3M", &writes);
        let d = open_mem(img).unwrap();
        assert!(read_all(&d) == want, "{create}: bytes differ from qemu-img");
        // Small unaligned reads through the compressed-cluster cache.
        for off in [100u64, 65_536 + 1000, (1 << 20) + 70_000] {
            let mut got = vec![0u8; 3000];
            d.read_at(off, &mut got).unwrap();
            assert!(
                got[..] == want[off as usize..off as usize + 3000],
                "{create} at {off}"
            );
        }
    }
}

#[test]
fn converted_image_is_one_long_run() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("r.raw");
    std::fs::write(&raw, vec![0x5Au8; 8 << 20]).unwrap();
    let img = dir.path().join("r.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    let d = open_src(
        Arc::new(FileSource::open(&img).unwrap()),
        &Limits::default(),
    )
    .unwrap();
    let m = d.map(0, 8 << 20).unwrap();
    assert!(matches!(m.kind, MapKind::Data { .. }));
    assert_eq!(m.len, 8 << 20, "contiguous clusters merge into one run");
}

#[test]
fn big_image_open_reads_little() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.qcow2");
    let i = img.to_str().unwrap();
    tool("qemu-img", &["create", "-q", "-f", "qcow2", i, "64G"]);
    tool("qemu-io", &["-f", "qcow2", "-c", "write -P 1 40G 1M", i]);
    let src = Arc::new(FileSource::open(&img).unwrap());
    let d = open_src(src.clone(), &Limits::default()).unwrap();
    assert_eq!(d.virtual_size(), 64 << 30);
    assert!(
        src.bytes_fetched() < 1 << 20,
        "open read {} bytes",
        src.bytes_fetched()
    );
    let n = d.extents(0, 64 << 30).count();
    assert_eq!(n, 3, "unallocated, data, unallocated");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random truncations and byte mutations of small qemu-made images:
    /// open, map and read give Ok or Err, never a panic.
    #[test]
    fn mutated_images_never_panic(
        pick in 0usize..3,
        cut in proptest::option::of(0usize..400_000),
        flips in proptest::collection::vec((0usize..400_000, any::<u8>()), 0..12),
    ) {
        static IMGS: std::sync::OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = std::sync::OnceLock::new();
        let imgs = IMGS.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            ["cluster_size=4k", "extended_l2=on,cluster_size=16k", "cluster_size=4k,compression_type=zstd"]
                .iter()
                .map(|c| qemu_image(dir.path(), c, "2M", WRITES))
                .collect()
        });
        let (image, reference) = &imgs[pick];
        let mut b = image.clone();
        let flipped = !flips.is_empty();
        for (at, v) in flips {
            // Mostly the metadata at the front.
            let at = if at % 2 == 0 { at % 4096 } else { at };
            let len = b.len().max(1);
            if let Some(x) = b.get_mut(at % len) {
                *x = v;
            }
        }
        if let Some(c) = cut {
            b.truncate(c.min(b.len()));
        }
        // A cut alone changes no byte that is read: whatever reads must
        // match qemu-img; with flips, failures must be image errors.
        if flipped {
            crate::testutil::assert_flip_outcome(open_mem(b), 300 << 10, 64 << 20);
        } else {
            crate::testutil::assert_cut_outcome(open_mem(b), reference, 300 << 10, 64 << 20);
        }
    }
}

#[test]
fn unaligned_host_cluster_names_the_l2_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = qemu_image(
        dir.path(),
        "cluster_size=64k",
        "1M",
        &["write -P 1 0 64k", "write -P 2 128k 64k"],
    );
    let be = |b: &[u8], o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    let l1 = be(&b, 40) as usize;
    let l2 = (be(&b, l1) & L1_OFFSET_MASK) as usize;
    let e = be(&b, l2 + 16);
    put64(&mut b, l2 + 16, e + 512);
    let d = open_mem(b).unwrap();
    d.read_at(0, &mut [0u8; 4]).unwrap();
    let e = d.read_at(128 << 10, &mut [0u8; 4]).unwrap_err();
    assert_corrupt(&e, "entry 2");
    assert_corrupt(&e, "not cluster aligned");
    assert!(matches!(e, DiskError::Corrupt { offset, .. } if offset == l2 as u64));
}

/// Metadata on top of other metadata is damage, as qemu's QCOW2_OL_*
/// checks say. Images from qemu-img, patched at the header fields of
/// qcow2.txt ("Header": l1_table_offset at byte 40, refcount_table_offset
/// at 48) and at the first L1 entry.
#[test]
fn overlapping_metadata_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = qemu_image(dir.path(), "cluster_size=64k", "1M", &["write -P 1 0 64k"]);
    let be = |b: &[u8], o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    let (l1, reftable) = (be(&b, 40), be(&b, 48));
    assert!(l1 > 0 && reftable > 0 && l1 != reftable);
    let kind_of = |e: &DiskError| e.kind();

    // L1 at offset 0: on the header.
    let mut x = b.clone();
    put64(&mut x, 40, 0);
    let e = open_mem(x).unwrap_err();
    assert_corrupt(&e, "overlaps the qcow2 header");
    assert_eq!(kind_of(&e), imgcheck_source::ErrorKind::Corrupt);

    // L1 on the refcount table.
    let mut x = b.clone();
    put64(&mut x, 40, reftable);
    assert_corrupt(
        &open_mem(x).unwrap_err(),
        "overlaps the qcow2 refcount table",
    );

    // Refcount table on the header.
    let mut x = b.clone();
    put64(&mut x, 48, 0);
    assert_corrupt(&open_mem(x).unwrap_err(), "overlaps the qcow2 header");

    // The L2 table of guest cluster 0 on the L1 table, and on the refcount
    // table: the open succeeds (L2 tables are read on demand), the read
    // fails.
    for (target, what) in [(l1, "L1 table"), (reftable, "refcount table"), (0, "")] {
        let mut x = b.clone();
        let entry = be(&x, l1 as usize);
        assert_ne!(entry & L1_OFFSET_MASK, 0, "qemu-io wrote cluster 0");
        put64(&mut x, l1 as usize, (entry & !L1_OFFSET_MASK) | target);
        let d = open_mem(x).unwrap();
        let r = d.read_at(0, &mut [0u8; 512]);
        if target == 0 {
            // Offset 0 in an L1 entry means "unallocated" (qcow2.txt).
            r.unwrap();
            continue;
        }
        let e = r.unwrap_err();
        assert_corrupt(&e, &format!("overlaps the qcow2 {what}"));
        assert_eq!(
            d.damage().map(|e| e.kind.clone()),
            Some(imgcheck_source::ErrorKind::Corrupt)
        );
    }
}
