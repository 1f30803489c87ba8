//! Tests for the VMDK reader against images made by qemu-img.
//!
//! qemu-img is required: a missing qemu-img fails these tests with a
//! message, it never skips them. Images are made in a temporary directory
//! from a small pattern disk (data, zeros, holes, an odd tail), and every
//! read is compared with `qemu-img convert -O raw` of the same image.
// Test vectors are built from known-small values.
#![allow(clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use imgcheck_source::{ByteSource, FileSource, MemSource, SourceError};
use proptest::prelude::*;

use crate::context::OpenContext;
use crate::deps::DependencyPolicy;
use crate::disk::{MapKind, VirtualDisk};
use crate::error::DiskError;
use crate::limits::Limits;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("qemu-img is required for the VMDK tests (apt-get install qemu-utils): {e}")
        });
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 9 MiB + 3 sectors pattern disk: data at grain-aligned and unaligned
/// places, an explicit zero range and holes.
fn pattern(dir: &Path) -> PathBuf {
    let p = dir.join("pattern.raw");
    let size = (9 << 20) + 1536;
    let mut d = vec![0u8; size];
    let mut x = 0x1234_5678_u32;
    let mut fill = |r: std::ops::Range<usize>, d: &mut [u8]| {
        for b in &mut d[r] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    };
    fill(0..4096, &mut d);
    fill(51_200..52_736, &mut d);
    fill(1 << 20..3 << 20, &mut d);
    fill(5_000_000..5_000_512, &mut d);
    fill(size - 1536..size, &mut d);
    std::fs::write(&p, &d).unwrap();
    p
}

struct Img {
    _dir: tempfile::TempDir,
    path: PathBuf,
    reference: Vec<u8>,
}

/// Converts the pattern to VMDK with `opts` and keeps qemu-img's raw view.
fn make(opts: &str) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern(dir.path());
    let path = dir.path().join("disk.vmdk");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        opts,
        raw.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let reference = qemu_raw(&path);
    Img {
        _dir: dir,
        path,
        reference,
    }
}

fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("qemu.raw");
    qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

fn qemu_info(path: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args([
            "info",
            "-f",
            "vmdk",
            "--output=json",
            path.to_str().unwrap(),
        ])
        .output()
        .expect("qemu-img is required for the VMDK tests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn open_src(src: Arc<dyn ByteSource>) -> Result<VirtualDisk, DiskError> {
    let limits = Limits::default();
    let ctx = OpenContext {
        source: src,
        limits: &limits,
        dependencies: DependencyPolicy::SameDirectory,
    };
    super::open(&ctx).map(VirtualDisk::new)
}

fn open_path(p: &Path) -> VirtualDisk {
    open_src(Arc::new(FileSource::open(p).unwrap()))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_all(d: &VirtualDisk) -> Vec<u8> {
    let mut v = vec![0u8; usize::try_from(d.virtual_size()).unwrap()];
    // Odd-sized pieces so reads straddle grains and extents.
    for (i, c) in v.chunks_mut(777_777).enumerate() {
        d.read_at(i as u64 * 777_777, c).unwrap();
    }
    v
}

fn check_against_qemu(img: &Img) -> VirtualDisk {
    let d = open_path(&img.path);
    assert_eq!(d.virtual_size(), img.reference.len() as u64);
    assert!(
        read_all(&d) == img.reference,
        "guest bytes differ from qemu-img"
    );
    // Info mirrors qemu-img's format-specific data.
    let q = qemu_info(&img.path);
    let info = d.info();
    assert_eq!(q["virtual-size"], serde_json::json!(info.virtual_size));
    assert_eq!(
        q.get("cluster-size").and_then(|v| v.as_u64()),
        info.cluster_size
    );
    let qs = &q["format-specific"]["data"];
    let ours = serde_json::Value::Object(info.format_specific.clone());
    for key in ["cid", "parent-cid", "create-type"] {
        assert_eq!(ours[key], qs[key], "{key}");
    }
    let (qe, oe) = (
        qs["extents"].as_array().unwrap(),
        ours["extents"].as_array().unwrap(),
    );
    assert_eq!(qe.len(), oe.len());
    for (q, o) in qe.iter().zip(oe) {
        // qemu names extents by the path it opened; compare file names.
        let base = |v: &serde_json::Value| {
            Path::new(v["filename"].as_str().unwrap())
                .file_name()
                .map(|s| s.to_owned())
        };
        assert_eq!(base(q), base(o));
        for key in ["format", "virtual-size", "cluster-size", "compressed"] {
            assert_eq!(q.get(key), o.get(key), "extent {key}");
        }
    }
    assert_eq!(info.subformat.as_deref(), qs["create-type"].as_str());
    d
}

#[test]
fn monolithic_sparse_matches_qemu() {
    let img = make("subformat=monolithicSparse");
    let d = check_against_qemu(&img);
    // Holes are unallocated, data maps to the file itself.
    let kinds: Vec<_> = d
        .extents(0, d.virtual_size())
        .map(|e| e.unwrap().kind)
        .collect();
    assert!(kinds.contains(&MapKind::Unallocated));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, MapKind::Data { file: 0, .. }))
    );
    assert_eq!(d.image().host_file_count(), 1);
}

#[test]
fn stream_optimized_matches_qemu() {
    let img = make("subformat=streamOptimized");
    let d = check_against_qemu(&img);
    assert!(
        d.extents(0, d.virtual_size())
            .any(|e| e.unwrap().kind == MapKind::Encoded)
    );
}

#[test]
fn flat_and_split_match_qemu() {
    for sub in [
        "monolithicFlat",
        "twoGbMaxExtentFlat",
        "twoGbMaxExtentSparse",
    ] {
        let img = make(&format!("subformat={sub}"));
        let d = check_against_qemu(&img);
        assert_eq!(d.image().host_file_count(), 2, "{sub}");
        assert!(
            d.info()
                .external_refs
                .iter()
                .any(|r| r.opened && r.kind == "VMDK extent")
        );
        assert!(
            d.extents(0, d.virtual_size())
                .any(|e| matches!(e.unwrap().kind, MapKind::Data { file: 1, .. })),
            "{sub}"
        );
    }
}

#[test]
fn options_match_qemu() {
    for opts in [
        "zeroed_grain=on",
        "compat6=on",
        "adapter_type=lsilogic,hwversion=7",
        "subformat=streamOptimized,adapter_type=buslogic",
        "subformat=twoGbMaxExtentSparse,zeroed_grain=on",
    ] {
        let img = make(opts);
        check_against_qemu(&img);
    }
}

#[test]
fn zeroed_grains_read_as_zero() {
    // qemu-img writes zero grains (GTE 1) when asked to zero a range of an
    // image made with zeroed_grain=on.
    let img = make("zeroed_grain=on");
    qemu_img_io(&img.path, "write -z 1M 1M");
    let reference = qemu_raw(&img.path);
    let d = open_path(&img.path);
    assert!(read_all(&d) == reference);
    assert!(
        d.extents(0, d.virtual_size())
            .any(|e| e.unwrap().kind == MapKind::Zero)
    );
}

fn qemu_img_io(path: &Path, cmd: &str) {
    let out = Command::new("qemu-io")
        .args(["-f", "vmdk", "-c", cmd, path.to_str().unwrap()])
        .output()
        .expect("qemu-io (qemu-utils) is required for the VMDK tests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A large sparse disk really splits into several 2 GiB extents.
#[test]
fn two_gb_split_has_several_extents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.vmdk");
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            path.to_str().unwrap(),
            "5G",
        ]);
        qemu_img_io(&path, "write -P 0xab 2047M 2M");
        let d = open_path(&path);
        assert_eq!(d.virtual_size(), 5 << 30);
        assert_eq!(d.image().host_file_count(), 4, "{sub}");
        let mut buf = vec![0u8; 4 << 20];
        d.read_at(2046 << 20, &mut buf).unwrap();
        assert!(buf[..1 << 20].iter().all(|&b| b == 0));
        assert!(buf[1 << 20..3 << 20].iter().all(|&b| b == 0xab));
        assert!(buf[3 << 20..].iter().all(|&b| b == 0));
        for f in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
    }
}

/// Moves the grain directory of a qemu-made streamOptimized file to the
/// end, as VMware/ovftool write it: header gdOffset = GD_AT_END, then
/// `... grains, GT markers + GTs, GD marker + GD, FOOTER marker, footer
/// header, EOS`.
fn to_gd_at_end(file: &[u8]) -> Vec<u8> {
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let cap = le64(file, 12);
    let grain = le64(file, 20);
    let per_gt = u64::from(le32(file, 44));
    let gd_sector = le64(file, 56) as usize;
    let entries = cap.div_ceil(grain * per_gt) as usize;
    let gd: Vec<u32> = (0..entries)
        .map(|i| le32(file, gd_sector * 512 + 4 * i))
        .collect();
    // Keep everything up to the EOS marker qemu wrote (drop its footer, if
    // any): find the last grain by walking the tables.
    let mut end = 0usize;
    for &g in &gd {
        if g == 0 {
            continue;
        }
        for j in 0..per_gt as usize {
            let s = le32(file, g as usize * 512 + 4 * j) as usize;
            if s > 1 {
                let size = le32(file, s * 512 + 8) as usize;
                end = end.max((s * 512 + 12 + size).div_ceil(512) * 512);
            }
        }
    }
    let mut out = file[..end].to_vec();
    let marker = |out: &mut Vec<u8>, sectors: u64, ty: u32| {
        let mut m = [0u8; 512];
        m[..8].copy_from_slice(&sectors.to_le_bytes());
        m[12..16].copy_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&m);
    };
    let mut new_gd = Vec::new();
    for &g in &gd {
        if g == 0 {
            new_gd.push(0u32);
            continue;
        }
        let gt_bytes = per_gt as usize * 4;
        let gt_sectors = gt_bytes.div_ceil(512);
        marker(&mut out, gt_sectors as u64, 1);
        new_gd.push((out.len() / 512) as u32);
        let at = g as usize * 512;
        out.extend_from_slice(&file[at..at + gt_bytes]);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    let gd_sectors = (entries * 4).div_ceil(512);
    marker(&mut out, gd_sectors as u64, 2);
    let new_gd_sector = out.len() / 512;
    for e in &new_gd {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.resize(out.len().div_ceil(512) * 512, 0);
    marker(&mut out, 1, 3);
    let mut footer = file[..512].to_vec();
    footer[56..64].copy_from_slice(&(new_gd_sector as u64).to_le_bytes());
    footer[8..12].copy_from_slice(&(le32(file, 8) & !2).to_le_bytes()); // no RGD
    footer[48..56].copy_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&footer);
    marker(&mut out, 0, 0);
    // The header at the start says "at end"; the old up-front GD and GTs
    // are wiped so only the footer can lead to the grains.
    out[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    let rgd = le64(file, 48) as usize;
    for s in [rgd, gd_sector] {
        out[s * 512..(s + 1) * 512].fill(0);
    }
    out
}

#[test]
fn gd_at_end_reads_the_same_bytes() {
    let img = make("subformat=streamOptimized");
    let file = std::fs::read(&img.path).unwrap();
    let moved = to_gd_at_end(&file);
    assert_eq!(&moved[56..64], &[0xff; 8]);
    let d = open_src(Arc::new(MemSource::new("gd-at-end.vmdk", moved.clone()))).unwrap();
    assert!(read_all(&d) == img.reference);
    // qemu reads the hand-made vector the same way.
    let p = img.path.with_file_name("gd-at-end.vmdk");
    std::fs::write(&p, &moved).unwrap();
    assert!(
        qemu_raw(&p) == img.reference,
        "qemu disagrees with the hand-made GD_AT_END vector"
    );
    // A broken footer is an error naming it, not a panic.
    let mut broken = moved;
    let n = broken.len();
    broken[n - 1024] = b'X';
    let e = open_src(Arc::new(MemSource::new("b", broken))).unwrap_err();
    assert!(e.to_string().contains("footer"), "{e}");
}

#[test]
fn redundant_gd_is_used_when_the_primary_is_unusable() {
    let img = make("subformat=monolithicSparse");
    let mut file = std::fs::read(&img.path).unwrap();
    // gdOffset far past the end of the file.
    file[56..64].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let d = open_src(Arc::new(MemSource::new("rgd.vmdk", file.clone()))).unwrap();
    assert!(read_all(&d) == img.reference);
    // Without the RGD flag the same damage is an error naming the GD.
    file[8] &= !2;
    let e = open_src(Arc::new(MemSource::new("rgd.vmdk", file))).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("rgd.vmdk") && s.contains("grain directory"),
        "{s}"
    );
}

#[test]
fn gd_entry_past_the_end_is_refused_before_reading_tables() {
    let img = make("subformat=monolithicSparse,compat6=on");
    let mut file = std::fs::read(&img.path).unwrap();
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    for gd in [le64(&file, 56), le64(&file, 48)] {
        let at = gd as usize * 512;
        file[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    let e = open_src(Arc::new(MemSource::new("gt.vmdk", file))).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
}

/// Records every `open_sibling` call, to prove what was (not) opened.
#[derive(Debug)]
struct Spy {
    inner: MemSource,
    dir: PathBuf,
    opened: Arc<Mutex<Vec<String>>>,
}

impl ByteSource for Spy {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.inner.read_exact_at(offset, buf)
    }
    fn open_sibling(&self, name: &str) -> Result<Arc<dyn ByteSource>, SourceError> {
        self.opened.lock().unwrap().push(name.to_owned());
        Ok(Arc::new(FileSource::open(self.dir.join(name))?))
    }
}

fn spy(text: &str, dir: &Path) -> (Arc<Spy>, Arc<Mutex<Vec<String>>>) {
    let opened = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::new(Spy {
        inner: MemSource::new("evil.vmdk", text.as_bytes().to_vec()),
        dir: dir.to_path_buf(),
        opened: opened.clone(),
    });
    (s, opened)
}

#[test]
fn extent_names_outside_the_directory_open_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok-flat.vmdk"), vec![7u8; 4096]).unwrap();
    for bad in ["/etc/passwd", "../x", "sub/x.vmdk", "..", "C:\\x"] {
        // A good extent first: it must not be opened either, because the
        // whole descriptor is checked before any file is touched.
        let text = format!(
            "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"ok-flat.vmdk\" 0\nRW 8 FLAT \"{bad}\" 0\n"
        );
        let (s, opened) = spy(&text, dir.path());
        let e = open_src(s).unwrap_err();
        match &e {
            DiskError::ExternalReference {
                kind, name, file, ..
            } => {
                assert_eq!(kind, "VMDK extent");
                assert_eq!(name, bad);
                assert_eq!(file, "evil.vmdk");
            }
            other => panic!("{bad}: expected ExternalReference, got {other}"),
        }
        assert!(
            opened.lock().unwrap().is_empty(),
            "{bad}: opened {:?}",
            opened.lock().unwrap()
        );
    }
    // The good one alone opens, through open_sibling.
    let text = "version=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"ok-flat.vmdk\" 0\n";
    let (s, opened) = spy(text, dir.path());
    let d = open_src(s).unwrap();
    assert_eq!(*opened.lock().unwrap(), vec!["ok-flat.vmdk".to_owned()]);
    let mut b = [0u8; 4096];
    d.read_at(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 7));
}

#[test]
fn descriptor_level_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "createType=\"seSparse\"\nRW 8 SESPARSE \"x\"\n",
            "VMDK createType seSparse",
        ),
        (
            "createType=\"fullDevice\"\nRW 8 FLAT \"x\" 0\n",
            "VMDK createType fullDevice",
        ),
        (
            "createType=\"custom\"\nRW 8 FLAT \"x\" 0\n",
            "VMDK createType custom",
        ),
        ("createType=\"vmfs\"\nNOACCESS 8 VMFS \"x\"\n", "NOACCESS"),
        ("createType=\"vmfs\"\nRW 8 VMFSRDM \"x\"\n", "VMFSRDM"),
        ("createType=\"monolithicFlat\"\n", "no extent"),
        ("RW 8 FLAT \"x\" 0\n", "no createType"),
    ];
    for (body, want) in cases {
        let (s, opened) = spy(&format!("version=1\n{body}"), dir.path());
        let e = open_src(s).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("evil.vmdk"), "{want}: {e}");
        assert!(opened.lock().unwrap().is_empty());
    }
}

#[test]
fn zero_extents_and_parents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.raw"), vec![9u8; 1024]).unwrap();
    let text = "version=1\nCID=0000abcd\nparentCID=12345678\ncreateType=\"monolithicFlat\"\nparentFileNameHint=\"base.vmdk\"\nRW 1 ZERO\nRDONLY 1 FLAT \"a.raw\" 1\n";
    let (s, _) = spy(text, dir.path());
    let d = open_src(s).unwrap();
    let info = d.info();
    assert_eq!(info.virtual_size, 1024);
    assert_eq!(info.backing_file.as_deref(), Some("base.vmdk"));
    assert!(
        info.external_refs
            .iter()
            .any(|r| r.name == "base.vmdk" && !r.opened)
    );
    assert!(
        info.external_refs
            .iter()
            .any(|r| r.name == "a.raw" && r.opened)
    );
    assert_eq!(info.format_specific["cid"], serde_json::json!(0xabcd));
    assert_eq!(
        info.format_specific["parent-cid"],
        serde_json::json!(0x1234_5678)
    );
    let mut b = [1u8; 1024];
    d.read_at(0, &mut b).unwrap();
    assert!(b[..512].iter().all(|&x| x == 0) && b[512..].iter().all(|&x| x == 9));
    assert_eq!(d.map(0, 1024).unwrap().kind, MapKind::Zero);
    // A flat file too short for its extent is an error naming it.
    let text = "version=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"a.raw\" 0\n";
    let (s, _) = spy(text, dir.path());
    let e = open_src(s).unwrap_err().to_string();
    assert!(e.contains("a.raw") && e.contains("needs 4096 bytes"), "{e}");
}

#[test]
fn split_sparse_capacity_must_match_the_descriptor() {
    let img = make("subformat=twoGbMaxExtentSparse");
    let desc = std::fs::read_to_string(&img.path).unwrap();
    let desc = desc
        .trim_end_matches('\0')
        .replace("RW 18435 SPARSE", "RW 18434 SPARSE");
    std::fs::write(&img.path, desc).unwrap();
    let e = open_src(Arc::new(FileSource::open(&img.path).unwrap())).unwrap_err();
    assert!(e.to_string().contains("capacity is 18435 sectors"), "{e}");
}

/// Small qemu-made images for the mutation tests (sparse and stream), with
/// qemu-img's raw view of each.
fn small(sub: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("p.raw");
    let mut d = vec![0u8; 1 << 20];
    for (i, b) in d.iter_mut().enumerate().take(200_000) {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&raw, d).unwrap();
    let out = dir.path().join("s.vmdk");
    // Small grains and tables so the file has many tables in few bytes.
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        &format!("subformat={sub}"),
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    (std::fs::read(&out).unwrap(), qemu_raw(&out))
}

/// qemu-made sparse and stream files, and the stream moved to GD_AT_END
/// (the same guest bytes), each with qemu-img's raw view.
fn corpus() -> &'static [(Vec<u8>, Vec<u8>); 3] {
    static C: std::sync::OnceLock<[(Vec<u8>, Vec<u8>); 3]> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let (stream, reference) = small("streamOptimized");
        let at_end = to_gd_at_end(&stream);
        [
            small("monolithicSparse"),
            (stream, reference.clone()),
            (at_end, reference),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn truncations_never_panic(which in 0usize..3, cut in any::<prop::sample::Index>()) {
        let (f, reference) = &corpus()[which];
        let b = f[..cut.index(f.len())].to_vec();
        crate::testutil::assert_cut_outcome(
            open_src(Arc::new(MemSource::new("m.vmdk", b))),
            reference,
            70_000,
            4 << 20,
        );
    }

    #[test]
    fn bit_flips_never_panic(which in 0usize..3, flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8)) {
        let mut f = corpus()[which].0.clone();
        // Aim the flips at the metadata: the head (header, descriptor,
        // tables), the tail (footer, end-of-stream tables), anywhere.
        let meta = f.len().min(64 << 10);
        let tail = f.len().min(8 << 10);
        for (k, (i, bit)) in flips.iter().enumerate() {
            let at = match k % 3 {
                0 => i.index(meta),
                1 => f.len() - tail + i.index(tail),
                _ => i.index(f.len()),
            };
            f[at] ^= 1 << bit;
        }
        crate::testutil::assert_flip_outcome(
            open_src(Arc::new(MemSource::new("m.vmdk", f))),
            70_000,
            4 << 20,
        );
    }

    #[test]
    fn random_descriptors_never_panic(lines in prop::collection::vec(
        prop_oneof![
            Just("version=1".to_owned()),
            Just("createType=\"monolithicFlat\"".to_owned()),
            Just("createType=\"twoGbMaxExtentSparse\"".to_owned()),
            "(RW|RDONLY|NOACCESS) [0-9]{1,22} (FLAT|SPARSE|ZERO|VMFS|BOGUS) \"[a-z./]{0,6}\"( [0-9]{1,21})?",
            "[ -~]{0,40}",
            "[a-zA-Z.]{1,10} ?= ?\"?[ -~]{0,10}\"?",
        ], 0..12)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 2048]).unwrap();
        let (s, opened) = spy(&lines.join("\n"), dir.path());
        match open_src(s) {
            Ok(d) => {
                let mut b = vec![0u8; d.virtual_size().min(8192) as usize];
                if let Err(e) = d.read_at(0, &mut b) {
                    crate::testutil::assert_image_error(&e);
                }
            }
            // A refused extent name is a policy error; a missing file in
            // the folder is I/O; anything else is about the descriptor.
            Err(e) => assert!(
                !matches!(e.kind(), imgcheck_source::ErrorKind::Io)
                    || e.to_string().contains("cannot open"),
                "{e}"
            ),
        }
        // Nothing outside the image's folder was asked for: only plain
        // names reach open_sibling.
        for name in opened.lock().unwrap().iter() {
            assert!(
                crate::deps::unsafe_name_reason(name).is_none(),
                "opened {name:?}"
            );
        }
    }
}

#[test]
fn delta_reports_its_parent_and_never_opens_it() {
    let img = make("subformat=monolithicSparse");
    let delta = img.path.with_file_name("delta.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "disk.vmdk",
        "-F",
        "vmdk",
        delta.to_str().unwrap(),
    ]);
    let q = qemu_info(&delta);
    let opened = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::new(Spy {
        inner: MemSource::new("delta.vmdk", std::fs::read(&delta).unwrap()),
        dir: delta.parent().unwrap().to_path_buf(),
        opened: opened.clone(),
    });
    let d = open_src(s).unwrap();
    let info = d.info();
    assert_eq!(
        info.backing_file.as_deref(),
        q["backing-filename"].as_str(),
        "backing file differs from qemu-img info"
    );
    assert_eq!(
        info.format_specific["parent-cid"],
        q["format-specific"]["data"]["parent-cid"]
    );
    assert!(
        info.external_refs
            .iter()
            .any(|r| r.name == "disk.vmdk" && !r.opened)
    );
    assert!(opened.lock().unwrap().is_empty());
    // Unallocated grains are reported as such (the parent is not read).
    assert_eq!(d.map(0, 4096).unwrap().kind, MapKind::Unallocated);
}

#[test]
fn oversized_descriptors_are_refused_before_reading() {
    let mut big = b"# Disk DescriptorFile\nversion=1\n".to_vec();
    big.resize((1 << 20) + 1, b'#');
    let e = open_src(Arc::new(MemSource::new("big.vmdk", big))).unwrap_err();
    assert!(matches!(e, DiskError::Limit { .. }), "{e}");
    // An embedded descriptor claiming 2^40 sectors.
    let img = make("subformat=monolithicSparse");
    let mut file = std::fs::read(&img.path).unwrap();
    file[36..44].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = open_src(Arc::new(MemSource::new("emb.vmdk", file))).unwrap_err();
    assert!(matches!(e, DiskError::Limit { .. }), "{e}");
}

#[test]
fn cowd_and_garbage_are_named() {
    let e = open_src(Arc::new(MemSource::new(
        "c.vmdk",
        b"COWD\x01\0\0\0".to_vec(),
    )))
    .unwrap_err();
    assert!(matches!(e, DiskError::Unsupported { .. }), "{e}");
    let e = open_src(Arc::new(MemSource::new("k.vmdk", b"KDMV".to_vec()))).unwrap_err();
    assert!(e.to_string().contains("k.vmdk"), "{e}");
}

fn open_with(src: Arc<dyn ByteSource>, limits: &Limits) -> Result<VirtualDisk, DiskError> {
    let ctx = OpenContext {
        source: src,
        limits,
        dependencies: DependencyPolicy::SameDirectory,
    };
    super::open(&ctx).map(VirtualDisk::new)
}

#[test]
fn flat_extents_sharing_a_file_open_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![1u8; 512];
    data.extend_from_slice(&[2u8; 512]);
    std::fs::write(dir.path().join("shared-flat.vmdk"), &data).unwrap();
    // Second half first, then the first half, from the same file.
    let text = "version=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"shared-flat.vmdk\" 1\nRW 1 FLAT \"shared-flat.vmdk\" 0\n";
    let (s, opened) = spy(text, dir.path());
    let d = open_src(s).unwrap();
    assert_eq!(opened.lock().unwrap().len(), 1);
    assert_eq!(d.image().host_file_count(), 2);
    let mut b = [0u8; 1024];
    d.read_at(0, &mut b).unwrap();
    assert!(b[..512].iter().all(|&x| x == 2) && b[512..].iter().all(|&x| x == 1));
}

#[test]
fn grain_directories_of_all_extents_share_one_budget() {
    let img = make("subformat=twoGbMaxExtentSparse");
    // The same sparse extent listed three times: each grain directory is 4
    // bytes; a budget of 8 bytes admits two.
    let text = "version=1\ncreateType=\"twoGbMaxExtentSparse\"\nRW 18435 SPARSE \"disk-s001.vmdk\"\nRW 18435 SPARSE \"disk-s001.vmdk\"\nRW 18435 SPARSE \"disk-s001.vmdk\"\n";
    std::fs::write(&img.path, text).unwrap();
    let src = || Arc::new(FileSource::open(&img.path).unwrap());
    let limits = Limits {
        max_table_bytes: 8,
        ..Limits::default()
    };
    let e = open_with(src(), &limits).unwrap_err();
    assert!(e.to_string().contains("all extents"), "{e}");
    let d = open_with(src(), &Limits::default()).unwrap();
    assert_eq!(d.virtual_size(), 3 * img.reference.len() as u64);
    let mut tail = vec![0u8; img.reference.len()];
    d.read_at(2 * img.reference.len() as u64, &mut tail)
        .unwrap();
    assert!(tail == img.reference);
}

/// A KDMV header with capacity 0 whose embedded descriptor lists the
/// extents (qemu reads these), then `text` at sector 1.
fn descriptor_in_kdmv(text: &str) -> Vec<u8> {
    let mut f = vec![0u8; 1024];
    f[..4].copy_from_slice(b"KDMV");
    f[4..8].copy_from_slice(&1u32.to_le_bytes()); // version
    f[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptorOffset
    f[36..44].copy_from_slice(&1u64.to_le_bytes()); // descriptorSize
    f[512..512 + text.len()].copy_from_slice(text.as_bytes());
    f
}

#[test]
fn descriptor_only_kdmv_and_vmfs_extents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d-flat.vmdk"), vec![5u8; 2048]).unwrap();
    let text = "version=1\ncreateType=\"vmfs\"\nRW 4 VMFS \"d-flat.vmdk\"\n";
    let opened = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::new(Spy {
        inner: MemSource::new("d.vmdk", descriptor_in_kdmv(text)),
        dir: dir.path().to_path_buf(),
        opened: opened.clone(),
    });
    let d = open_src(s).unwrap();
    assert_eq!(d.virtual_size(), 2048);
    assert_eq!(d.info().subformat.as_deref(), Some("vmfs"));
    let mut b = [0u8; 2048];
    d.read_at(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 5));
    // Such a file listed as a SPARSE extent of another descriptor-only
    // file is not followed into a second descriptor.
    std::fs::write(dir.path().join("inner.vmdk"), descriptor_in_kdmv(text)).unwrap();
    let outer = "version=1\ncreateType=\"twoGbMaxExtentSparse\"\nRW 4 SPARSE \"inner.vmdk\"\n";
    let s = Arc::new(Spy {
        inner: MemSource::new("outer.vmdk", descriptor_in_kdmv(outer)),
        dir: dir.path().to_path_buf(),
        opened,
    });
    let e = open_src(s).unwrap_err().to_string();
    assert!(e.contains("inner.vmdk") && e.contains("nested"), "{e}");
}

#[test]
fn truncated_files_name_the_grain() {
    for sub in ["monolithicSparse", "streamOptimized"] {
        let img = make(&format!("subformat={sub}"));
        let mut file = std::fs::read(&img.path).unwrap();
        file.truncate(file.len() / 2);
        let d = open_src(Arc::new(MemSource::new("half.vmdk", file))).unwrap();
        let mut buf = vec![0u8; img.reference.len()];
        let e = d.read_at(0, &mut buf).unwrap_err().to_string();
        assert!(
            e.contains("half.vmdk") && e.contains("grain table") && e.contains("truncated"),
            "{sub}: {e}"
        );
    }
}

/// A grain directory or grain table on the header or the embedded
/// descriptor is damage. qemu-img's monolithicSparse file patched at the
/// VMDK 1.1 SparseExtentHeader offsets: descriptorOffset at 28, rgdOffset
/// at 48, gdOffset at 56 (sectors, u64 LE); flags at 8 (bit 1: use the
/// redundant directory).
#[test]
fn overlapping_metadata_is_corrupt() {
    let img = make("subformat=monolithicSparse");
    let b0 = std::fs::read(&img.path).unwrap();
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let desc = le64(&b0, 28);
    assert!(desc >= 1, "qemu-img embeds the descriptor");
    let open = |b: Vec<u8>| open_src(Arc::new(MemSource::new("ol.vmdk", b)));
    // Both directories on the descriptor (so the redundant one is no way
    // out).
    let mut b = b0.clone();
    b[56..64].copy_from_slice(&desc.to_le_bytes());
    b[48..56].copy_from_slice(&desc.to_le_bytes());
    let e = open(b).unwrap_err();
    assert!(
        e.to_string()
            .contains("overlaps the VMDK embedded descriptor"),
        "{e}"
    );
    assert_eq!(e.kind(), imgcheck_source::ErrorKind::Corrupt);
    // The first grain table of both directories on the descriptor (a
    // table at sector 0 would read as absent: GDE 0 means none).
    let mut b = b0.clone();
    for gd in [le64(&b0, 56), le64(&b0, 48)] {
        let at = gd as usize * 512;
        b[at..at + 4].copy_from_slice(&u32::try_from(desc).unwrap().to_le_bytes());
    }
    let e = open(b).unwrap_err();
    assert!(
        e.to_string().contains("grain table")
            && e.to_string()
                .contains("overlaps the VMDK embedded descriptor"),
        "{e}"
    );
}
