//! Hostile input: inspect() and the text parsers never panic, never hang.
//!
//! Three generators: plain random bytes; synthetic disks with planted MBR,
//! EBR, GPT (with valid CRCs, so the checks behind them are reached) and
//! ext superblocks holding random values; and random byte patches over the
//! metadata of a real fixture disk (through an overlay, no copy).

use std::sync::Arc;

use imgcheck_guest::facts::datasource::{
    cmdline_datasource, parse_datasource_list, parse_default_user,
};
use imgcheck_guest::inspect;
use imgcheck_guest::root::parse_fstab;
use imgcheck_source::{ByteSource, FileSource, MemSource, SourceError};
use proptest::prelude::*;

fn run(d: Vec<u8>) {
    let r = inspect(Arc::new(MemSource::new("prop", d)));
    // Serialising must work too (the CLI prints this).
    let _ = serde_json::to_string(&r).expect("report serialises");
}

/// One MBR entry: (boot, type, start, sectors).
fn entry() -> impl Strategy<Value = (u8, u8, u32, u32)> {
    (
        prop_oneof![Just(0u8), Just(0x80), any::<u8>()],
        prop_oneof![
            Just(0u8),
            Just(0x05),
            Just(0x0F),
            Just(0x83),
            Just(0xEE),
            Just(0xEF),
            any::<u8>()
        ],
        prop_oneof![Just(0u32), Just(1), 1u32..2048, any::<u32>()],
        prop_oneof![Just(0u32), 1u32..4096, any::<u32>()],
    )
}

fn put_entry(d: &mut [u8], at: usize, e: (u8, u8, u32, u32)) {
    d[at] = e.0;
    d[at + 4] = e.1;
    d[at + 8..at + 12].copy_from_slice(&e.2.to_le_bytes());
    d[at + 12..at + 16].copy_from_slice(&e.3.to_le_bytes());
}

/// A GPT header with a valid CRC and random fields, at `lba`.
#[derive(Debug, Clone)]
struct GptPlant {
    my_lba: u64,
    backup_lba: u64,
    part_start: u64,
    num_parts: u32,
    part_size: u32,
    entries: Vec<(u8, u64, u64)>,
    entries_crc_ok: bool,
}

fn gpt_plant() -> impl Strategy<Value = GptPlant> {
    (
        prop_oneof![Just(1u64), any::<u64>()],
        prop_oneof![Just(2047u64), any::<u64>()],
        prop_oneof![Just(2u64), 0u64..4096, any::<u64>()],
        prop_oneof![Just(128u32), 0u32..8, any::<u32>()],
        prop_oneof![Just(128u32), any::<u32>()],
        prop::collection::vec((0u8..4, any::<u64>(), any::<u64>()), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(my_lba, backup_lba, part_start, num_parts, part_size, entries, ok)| GptPlant {
                my_lba,
                backup_lba,
                part_start,
                num_parts,
                part_size,
                entries,
                entries_crc_ok: ok,
            },
        )
}

const TYPES: [&[u8; 16]; 4] = [
    // BIOS boot, Linux, ESP, random-ish (mixed-endian GUID bytes).
    b"\x48\x61\x68\x21\x49\x64\x6f\x6e\x74\x4e\x65\x65\x64\x45\x46\x49",
    b"\xaf\x3d\xc6\x0f\x83\x84\x72\x47\x8e\x79\x3d\x69\xd8\x47\x7d\xe4",
    b"\x28\x73\x2a\xc1\x1f\xf8\xd2\x11\xba\x4b\x00\xa0\xc9\x3e\xc9\x3b",
    b"0123456789abcdef",
];

fn plant_gpt(d: &mut [u8], lb: usize, g: &GptPlant) {
    // Entries at LBA 2 (wherever the header says they are, we write them
    // at LBA 2, so a header pointing elsewhere sees other bytes).
    let ea = 2 * lb;
    let mut arr = Vec::new();
    for (t, first, last) in &g.entries {
        let mut e = [0u8; 128];
        e[0..16].copy_from_slice(TYPES[*t as usize]);
        e[16] = 1;
        e[32..40].copy_from_slice(&(first % 4096).to_le_bytes());
        e[40..48].copy_from_slice(&(last % 8192).to_le_bytes());
        arr.extend_from_slice(&e);
    }
    let n = usize::try_from(g.num_parts).unwrap_or(0).min(4096) * 128;
    arr.resize(n.max(arr.len()), 0);
    if ea + arr.len() <= d.len() {
        d[ea..ea + arr.len()].copy_from_slice(&arr);
    }
    let mut crc_arr = crc32fast::hash(&arr);
    if !g.entries_crc_ok {
        crc_arr ^= 1;
    }
    let mut h = [0u8; 92];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&g.my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&g.backup_lba.to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&2000u64.to_le_bytes());
    h[72..80].copy_from_slice(&g.part_start.to_le_bytes());
    h[80..84].copy_from_slice(&g.num_parts.to_le_bytes());
    h[84..88].copy_from_slice(&g.part_size.to_le_bytes());
    h[88..92].copy_from_slice(&crc_arr.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    d[lb..lb + 92].copy_from_slice(&h);
}

fn plant_ext(d: &mut [u8], at: usize, compat: u32, incompat: u32, ro: u32, junk: &[u8]) {
    let sb = at + 1024;
    if sb + 1024 > d.len() {
        return;
    }
    let n = junk.len().min(1024);
    d[sb..sb + n].copy_from_slice(&junk[..n]);
    d[sb + 0x38] = 0x53;
    d[sb + 0x39] = 0xEF;
    d[sb + 0x5C..sb + 0x60].copy_from_slice(&compat.to_le_bytes());
    d[sb + 0x60..sb + 0x64].copy_from_slice(&incompat.to_le_bytes());
    d[sb + 0x64..sb + 0x68].copy_from_slice(&ro.to_le_bytes());
}

/// A source that overlays patches on a real file, so each case costs no
/// copy of the 48 MiB fixture.
#[derive(Debug)]
struct Patched {
    inner: Arc<dyn ByteSource>,
    patches: Vec<(u64, Vec<u8>)>,
}

impl ByteSource for Patched {
    fn name(&self) -> &str {
        "patched"
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.inner.read_exact_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        for (po, pb) in &self.patches {
            for (i, b) in pb.iter().enumerate() {
                let at = po + i as u64;
                if at >= offset && at < end {
                    buf[usize::try_from(at - offset).unwrap()] = *b;
                }
            }
        }
        Ok(())
    }
}

fn good_fixture() -> Arc<dyn ByteSource> {
    let dir = match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated")
        }
    };
    let p = dir.join("guests/good.img");
    Arc::new(FileSource::open(&p).unwrap_or_else(|e| panic!("{e}: run tools/gen-fixtures first")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(d in prop::collection::vec(any::<u8>(), 0..70_000)) {
        run(d);
    }

    #[test]
    fn planted_tables_never_panic(
        entries in prop::collection::vec(entry(), 4),
        ebrs in prop::collection::vec((entry(), entry()), 0..4),
        gpt in prop::option::of((prop_oneof![Just(512usize), Just(4096)], gpt_plant())),
        ext in prop::option::of((0usize..4, any::<u32>(), any::<u32>(), any::<u32>(),
                                 prop::collection::vec(any::<u8>(), 0..1024))),
        code in any::<bool>(),
    ) {
        let mut d = vec![0u8; 1 << 20];
        for (i, e) in entries.iter().enumerate() {
            put_entry(&mut d, 446 + i * 16, *e);
        }
        d[510] = 0x55;
        d[511] = 0xAA;
        if code {
            d[0] = 0xEB;
            d[100..104].copy_from_slice(b"GRUB");
        }
        // EBRs at LBA 100, 110, ...: a chain with random links.
        for (i, (a, b)) in ebrs.iter().enumerate() {
            let at = (100 + i * 10) * 512;
            put_entry(&mut d, at + 446, *a);
            put_entry(&mut d, at + 462, *b);
            d[at + 510] = 0x55;
            d[at + 511] = 0xAA;
        }
        if let Some((lb, g)) = &gpt {
            plant_gpt(&mut d, *lb, g);
        }
        if let Some((slot, c, i, r, junk)) = &ext {
            let at = [0usize, 2048 * 512 / 4, 100 * 512, 4096][*slot];
            plant_ext(&mut d, at, *c, *i, *r, junk);
        }
        run(d);
    }

    #[test]
    fn datasource_parsers_never_panic(t in "[ a-z_A-Z:\\-\\[\\]'\"#,{}\n\t.=;é]{0,600}") {
        let _ = parse_datasource_list(&t);
        let _ = parse_default_user(&t);
        let _ = cmdline_datasource(&t);
        let _ = parse_fstab(&t);
        let with_key = format!("datasource_list:{t}");
        let _ = parse_datasource_list(&with_key);
        let with_si = format!("system_info:\n  default_user:{t}");
        let _ = parse_default_user(&with_si);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random patches over the tables, superblock, group descriptors,
    /// inode tables and directories of the real good.img.
    #[test]
    fn patched_fixture_never_panics(
        patches in prop::collection::vec(
            (prop_oneof![0u64..20_480, 2_097_152u64..2_097_152 + 6_291_456],
             prop::collection::vec(any::<u8>(), 1..64)),
            1..16)
    ) {
        let src = Patched { inner: good_fixture(), patches };
        let r = inspect(Arc::new(src));
        let _ = serde_json::to_string(&r).expect("serialises");
    }
}

/// The planted GPT is a real one: sane values parse, hostile sizes are
/// refused with a problem instead of reaching the gpt crate's assert or
/// its unbounded allocation.
#[test]
fn planted_gpt_reaches_the_checks() {
    use imgcheck_guest::{PartitionRole, TableKind};
    let sane = GptPlant {
        my_lba: 1,
        backup_lba: 2047,
        part_start: 2,
        num_parts: 128,
        part_size: 128,
        entries: vec![(0, 34, 2047), (1, 100, 200)],
        entries_crc_ok: true,
    };
    let table = |g: &GptPlant| {
        let mut d = vec![0u8; 1 << 20];
        put_entry(&mut d, 446, (0, 0xEE, 1, 2047));
        d[510] = 0x55;
        d[511] = 0xAA;
        plant_gpt(&mut d, 512, g);
        inspect(Arc::new(MemSource::new("gpt", d))).partitions
    };
    let t = table(&sane);
    assert_eq!(t.kind, TableKind::Gpt, "{t:?}");
    assert_eq!(t.entries.len(), 2, "{t:?}");
    assert_eq!(t.entries[0].role, PartitionRole::BiosBoot);
    assert_eq!(t.entries[1].role, PartitionRole::Linux);
    // No backup header at the end of this 1 MiB disk (LBA 2047).
    assert!(t.problems.iter().any(|p| p.contains("backup GPT")), "{t:?}");
    let t = table(&GptPlant {
        part_size: 256,
        ..sane.clone()
    });
    assert!(
        t.problems.iter().any(|p| p.contains("entry size 256")),
        "{t:?}"
    );
    let t = table(&GptPlant {
        num_parts: u32::MAX,
        ..sane.clone()
    });
    assert!(
        t.problems.iter().any(|p| p.contains("partition entries")),
        "{t:?}"
    );
    let t = table(&GptPlant {
        entries_crc_ok: false,
        ..sane
    });
    assert!(t.problems.iter().any(|p| p.contains("CRC")), "{t:?}");
    assert!(t.entries.is_empty());
}

/// mbrman's alignment guess would panic on a used entry at LBA 0.
#[test]
fn mbr_entry_at_lba_zero() {
    let mut d = vec![0u8; 1 << 20];
    put_entry(&mut d, 446, (0x80, 0x83, 0, 100));
    d[510] = 0x55;
    d[511] = 0xAA;
    let r = inspect(Arc::new(MemSource::new("mbr0", d)));
    assert!(
        r.partitions.problems.iter().any(|p| p.contains("LBA 0")),
        "{:?}",
        r.partitions
    );
}

/// A damaged primary GPT header falls back to the backup, and the root is
/// still found.
#[test]
fn damaged_primary_gpt_uses_backup() {
    let src = Patched {
        inner: good_fixture(),
        patches: vec![(512 + 50, vec![0x5A])],
    };
    let r = inspect(Arc::new(src));
    assert_eq!(r.partitions.entries.len(), 2, "{:?}", r.partitions);
    assert!(
        r.partitions
            .problems
            .iter()
            .any(|p| p.contains("primary GPT is damaged")),
        "{:?}",
        r.partitions
    );
    assert!(r.root.is_some());
    assert_eq!(r.guest.os.id.as_deref(), Some("debian"));
}

/// A disk grown after partitioning: the backup header is no longer at the
/// end, which is reported, and the primary is used.
#[derive(Debug)]
struct Grown(Arc<dyn ByteSource>);

impl ByteSource for Grown {
    fn name(&self) -> &str {
        "grown"
    }
    fn len(&self) -> u64 {
        self.0.len() + (1 << 20)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        imgcheck_source::check_range("grown", offset, buf.len(), self.len())?;
        buf.fill(0);
        let inner = self.0.len();
        if offset < inner {
            let n = usize::try_from(inner - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            self.0.read_exact_at(offset, &mut buf[..n])?;
        }
        Ok(())
    }
}

#[test]
fn grown_disk_reports_backup_not_at_end() {
    let r = inspect(Arc::new(Grown(good_fixture())));
    assert_eq!(r.partitions.entries.len(), 2);
    assert!(
        r.partitions
            .problems
            .iter()
            .any(|p| p.contains("not at the end")),
        "{:?}",
        r.partitions
    );
    assert!(r.root.is_some());
}

fn sane_gpt() -> GptPlant {
    GptPlant {
        my_lba: 1,
        backup_lba: 255,
        part_start: 2,
        num_parts: 128,
        part_size: 128,
        entries: vec![(1, 100, 200)],
        entries_crc_ok: true,
    }
}

/// A protective MBR that also lists a real partition is a hybrid MBR.
#[test]
fn hybrid_mbr_and_4k_sectors() {
    use imgcheck_guest::TableKind;
    let mut d = vec![0u8; 1 << 20];
    put_entry(&mut d, 446, (0, 0xEE, 1, 99));
    put_entry(&mut d, 462, (0x80, 0x83, 100, 101));
    d[510] = 0x55;
    d[511] = 0xAA;
    plant_gpt(&mut d, 512, &sane_gpt());
    let t = inspect(Arc::new(MemSource::new("hybrid", d))).partitions;
    assert_eq!(t.kind, TableKind::HybridMbr, "{t:?}");
    assert_eq!(t.entries.len(), 1);

    // 4096-byte logical sectors: the header at byte 4096.
    let mut d = vec![0u8; 1 << 20];
    put_entry(&mut d, 446, (0, 0xEE, 1, 255));
    d[510] = 0x55;
    d[511] = 0xAA;
    plant_gpt(&mut d, 4096, &sane_gpt());
    let t = inspect(Arc::new(MemSource::new("4kn", d))).partitions;
    assert_eq!(t.kind, TableKind::Gpt, "{t:?}");
    assert_eq!(t.sector_size, 4096);
    assert_eq!(t.entries[0].start, 100 * 4096);
}

/// Fuzz finding (fuzz/regressions/guest/oom-ext4-group-descriptors): a
/// 2 KiB disk whose ext superblock has `s_blocks_count_hi` set without the
/// 64bit feature. ext4-view reads the high half anyway and allocated a
/// 29 GB group-descriptor table; the superblock check now refuses it first.
#[test]
fn ext_blocks_count_hi_without_64bit_is_refused_before_ext4_view() {
    let data = include_bytes!("../../../fuzz/regressions/guest/oom-ext4-group-descriptors");
    let disk: std::sync::Arc<dyn imgcheck_source::ByteSource> =
        std::sync::Arc::new(imgcheck_source::MemSource::new("oom", data.to_vec()));
    let r = imgcheck_guest::inspect(disk);
    let errs: Vec<&str> = r
        .filesystems
        .iter()
        .filter_map(|f| f.error.as_deref())
        .collect();
    assert!(
        errs.iter().any(|e| e.contains("s_blocks_count_hi")),
        "{errs:?} {:?}",
        r.notes
    );
}
