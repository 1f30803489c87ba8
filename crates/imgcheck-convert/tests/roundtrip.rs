//! Round trips of random sparse disks through the writers.
//!
//! Disks are built in memory (MemSource opened as raw), with runs of random
//! bytes, constant bytes and zeros at random places, sizes chosen to cross
//! the gzip block (1 MiB), bzip2 block (900 kB), qcow2 cluster (64 KiB) and
//! L2 boundaries. gzip output is decoded with flate2's MultiGzDecoder (and
//! must be a single member), bzip2 with MultiBzDecoder, qcow2 with
//! `qemu-img check` (no errors, no leaks) and `qemu-img convert -O raw` (a
//! missing qemu-img fails the test).

use std::io::Read;
use std::process::Command;
use std::sync::Arc;

use imgcheck_convert::{Options, write_bzip2, write_gzip, write_qcow2, write_qcow2_gz, write_raw};
use imgcheck_disk::{Format, OpenOptions, VirtualDisk};
use imgcheck_source::MemSource;
use proptest::prelude::*;

fn disk_of(data: Vec<u8>) -> VirtualDisk {
    let opts = OpenOptions {
        format: Some(Format::Raw),
        ..Default::default()
    };
    imgcheck_disk::open(Arc::new(MemSource::new("mem", data)), &opts).expect("open raw")
}

/// A disk of `sectors` × 512 bytes with `runs` written into it.
fn build(sectors: u64, runs: &[(f64, u32, u8, bool)], seed: u64) -> Vec<u8> {
    let size = (sectors * 512) as usize;
    let mut d = vec![0u8; size];
    let mut x = seed | 1;
    for &(at, len, byte, random) in runs {
        let start = ((at * size as f64) as usize).min(size);
        let end = (start + len as usize).min(size);
        for b in &mut d[start..end] {
            *b = if random {
                // xorshift: cheap, deterministic per case.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                byte
            };
        }
    }
    d
}

fn runs() -> impl Strategy<Value = Vec<(f64, u32, u8, bool)>> {
    prop::collection::vec(
        (0.0f64..1.0, 1u32..400_000, any::<u8>(), any::<bool>()),
        0..8,
    )
}

fn noop(_: u64) {}

/// `qemu-img check` must find no errors or leaks; returns qemu-img's raw
/// conversion of the image.
fn qemu_check_and_read(q: &std::path::Path, dir: &std::path::Path) -> Vec<u8> {
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(q)
        .output()
        .expect("qemu-img is required for this test (tools/install-deps)");
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && out.contains("No errors were found"),
        "qemu-img check: {out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let r = dir.join("back.raw");
    let conv = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(q)
        .arg(&r)
        .status()
        .expect("qemu-img");
    assert!(conv.success(), "qemu-img convert failed");
    std::fs::read(&r).expect("read qemu-img output")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn gzip_round_trips(sectors in 0u64..8_000, runs in runs(), seed in any::<u64>(), threads in 1usize..4) {
        let data = build(sectors, &runs, seed);
        let disk = disk_of(data.clone());
        let mut gz = Vec::new();
        let opts = Options { threads, level: None };
        let stats = write_gzip(&disk, &mut gz, &opts, &noop).unwrap();
        prop_assert_eq!(stats.bytes_written, gz.len() as u64);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        prop_assert!(back == data, "gzip round trip differs");
        // One member: the single-member decoder sees everything too.
        let mut one = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut one).unwrap();
        prop_assert_eq!(one.len(), data.len());
        // The output does not depend on scheduling or thread count.
        let mut again = Vec::new();
        let other = Options { threads: 4 - threads, level: None };
        write_gzip(&disk, &mut again, &other, &noop).unwrap();
        prop_assert!(again == gz, "gzip output is not deterministic");
    }

    /// Raw output reads back as the disk, whatever the worker count.
    #[test]
    fn raw_round_trips(sectors in 0u64..12_000, runs in runs(), seed in any::<u64>(), threads in 1usize..4) {
        let data = build(sectors, &runs, seed);
        let disk = disk_of(data.clone());
        let dir = tempfile::tempdir().unwrap();
        for (k, t) in [threads, 4 - threads].into_iter().enumerate() {
            let path = dir.path().join(format!("o{k}.raw"));
            let f = std::fs::File::create_new(&path).unwrap();
            let opts = Options { threads: t, level: None };
            let stats = write_raw(&disk, &f, &path, &opts, &noop).unwrap();
            drop(f);
            prop_assert_eq!(stats.virtual_size, data.len() as u64);
            prop_assert!(std::fs::read(&path).unwrap() == data, "raw output differs ({} threads)", t);
        }
    }

    #[test]
    fn bzip2_round_trips(sectors in 0u64..5_000, runs in runs(), seed in any::<u64>()) {
        let data = build(sectors, &runs, seed);
        let disk = disk_of(data.clone());
        let mut bz = Vec::new();
        write_bzip2(&disk, &mut bz, &Options::default(), &noop).unwrap();
        let mut back = Vec::new();
        bzip2::read::MultiBzDecoder::new(&bz[..]).read_to_end(&mut back).unwrap();
        prop_assert!(back == data, "bzip2 round trip differs");
    }

    #[test]
    fn qcow2_round_trips(sectors in 1u64..12_000, runs in runs(), seed in any::<u64>(), threads in 1usize..4) {
        let data = build(sectors, &runs, seed);
        let disk = disk_of(data.clone());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.qcow2");
        let f = std::fs::File::create_new(&path).unwrap();
        let opts = Options { threads, level: None };
        write_qcow2(&disk, &f, &path, &opts, &noop).unwrap();
        drop(f);
        let back = qemu_check_and_read(&path, dir.path());
        prop_assert!(back == data, "qcow2 round trip differs");
        // Workers write their own clusters, but the layout does not depend
        // on scheduling or thread count.
        let again = dir.path().join("again.qcow2");
        let f = std::fs::File::create_new(&again).unwrap();
        let other = Options { threads: 4 - threads, level: None };
        write_qcow2(&disk, &f, &again, &other, &noop).unwrap();
        drop(f);
        prop_assert!(
            std::fs::read(&again).unwrap() == std::fs::read(&path).unwrap(),
            "qcow2 output is not deterministic"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// `.qcow2.gz`: gunzip (all members) gives a qcow2 qemu-img accepts.
    #[test]
    fn qcow2_gz_round_trips(sectors in 1u64..12_000, runs in runs(), seed in any::<u64>()) {
        let data = build(sectors, &runs, seed);
        let disk = disk_of(data.clone());
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("o.qcow2.gz");
        let f = std::fs::File::create_new(&gz).unwrap();
        let stats = write_qcow2_gz(&disk, &f, &gz, &Options::default(), &noop).unwrap();
        drop(f);
        let bytes = std::fs::read(&gz).unwrap();
        prop_assert_eq!(stats.bytes_written, bytes.len() as u64);
        let mut q = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut q).unwrap();
        let path = dir.path().join("o.qcow2");
        std::fs::write(&path, &q).unwrap();
        let back = qemu_check_and_read(&path, dir.path());
        prop_assert!(back == data, "qcow2.gz round trip differs");
        // The streamed body (one ordered pipeline) and the plain file's
        // (workers placing clusters in turn) are the same bytes.
        let plain = dir.path().join("plain.qcow2");
        let f = std::fs::File::create_new(&plain).unwrap();
        write_qcow2(&disk, &f, &plain, &Options::default(), &noop).unwrap();
        drop(f);
        prop_assert!(std::fs::read(&plain).unwrap() == q, "gunzipped .qcow2.gz differs from .qcow2");
    }
}

/// A few sparse patterns checked by qemu-img itself.
#[test]
fn qcow2_passes_qemu_img() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Sizes: tiny, odd sectors, across an L2 region (512 MiB) boundary.
    for sectors in [1u64, 129, 20_001, (513 << 20) / 512] {
        let mut runs = Vec::new();
        for _ in 0..6 {
            runs.push((
                (next() % 1000) as f64 / 1000.0,
                (next() % 300_000) as u32 + 1,
                next() as u8,
                next() % 2 == 0,
            ));
        }
        // Data right at the end, to cover the last L2 table.
        runs.push((0.9999, 4096, 0xAB, false));
        let data = build(sectors, &runs, next());
        let disk = disk_of(data.clone());
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("o.qcow2");
        let f = std::fs::File::create_new(&q).unwrap();
        write_qcow2(&disk, &f, &q, &Options::default(), &noop).unwrap();
        drop(f);
        let back = qemu_check_and_read(&q, dir.path());
        assert!(
            back == data,
            "{sectors} sectors: qemu-img reads other bytes"
        );
    }
}

/// A read error mid-way (the source is shorter than the disk claims) fails
/// the conversion; the caller's AtomicOutput then removes the temp file.
#[test]
fn read_error_leaves_no_output() {
    #[derive(Debug)]
    struct Failing(MemSource);
    impl imgcheck_source::ByteSource for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        fn len(&self) -> u64 {
            8 << 20
        }
        fn read_exact_at(
            &self,
            off: u64,
            buf: &mut [u8],
        ) -> Result<(), imgcheck_source::SourceError> {
            self.0.read_exact_at(off, buf)
        }
    }
    let src = Failing(MemSource::new("m", vec![7u8; 5 << 20]));
    let opts = OpenOptions {
        format: Some(Format::Raw),
        ..Default::default()
    };
    let disk = imgcheck_disk::open(Arc::new(src), &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, i) in [
        ("a.img.gz", 0),
        ("a.img.bz2", 1),
        ("a.qcow2", 2),
        ("a.img", 3),
    ] {
        let target = dir.path().join(name);
        let out = imgcheck_convert::AtomicOutput::create(&target, false).unwrap();
        let (fmt, c) = match i {
            0 => (
                imgcheck_convert::OutputFormat::Raw,
                imgcheck_convert::Compress::Gzip,
            ),
            1 => (
                imgcheck_convert::OutputFormat::Raw,
                imgcheck_convert::Compress::Bzip2,
            ),
            2 => (
                imgcheck_convert::OutputFormat::Qcow2,
                imgcheck_convert::Compress::None,
            ),
            _ => (
                imgcheck_convert::OutputFormat::Raw,
                imgcheck_convert::Compress::None,
            ),
        };
        let r = imgcheck_convert::convert(&disk, &out, fmt, c, &Options::default(), &noop);
        assert!(r.is_err(), "{name}: a short source must fail");
        drop(out);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{name}: files left behind: {left:?}");
    }
}
