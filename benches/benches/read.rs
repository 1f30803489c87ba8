//! Reading through the virtual disk: open cost (metadata only) and
//! sequential guest reads, per format. Images are made with qemu-img from a
//! 256 MiB pattern (random data, zeros, holes) in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use imgcheck_disk::{OpenOptions, VirtualDisk, open};
use imgcheck_source::{ByteSource, FileSource, MemSource};

const SIZE: u64 = 256 << 20;

fn pattern(dir: &Path) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let p = dir.join("pattern.raw");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(SIZE).unwrap();
    // 1 MiB of pseudo-random data every 4 MiB, the rest holes.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for chunk in (0..SIZE).step_by(4 << 20) {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        f.write_all_at(&buf, chunk).unwrap();
    }
    p
}

fn convert(src: &Path, fmt: &str, opts: &[&str], out: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-O", fmt])
        .args(opts)
        .arg(src)
        .arg(out)
        .status()
        .expect("qemu-img is required for the benches (tools/install-deps)");
    assert!(st.success());
}

fn open_path(p: &Path) -> VirtualDisk {
    let src: Arc<dyn ByteSource> = Arc::new(FileSource::open(p).unwrap());
    open(src, &OpenOptions::default()).unwrap()
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern(dir.path());
    let mut images = vec![("raw", raw.clone())];
    for (name, fmt, opts) in [
        ("qcow2", "qcow2", &[][..]),
        ("qcow2-zlib", "qcow2", &["-c"][..]),
        ("vhdx", "vhdx", &[][..]),
        ("vdi", "vdi", &[][..]),
        ("vmdk", "vmdk", &[][..]),
        (
            "vmdk-stream",
            "vmdk",
            &["-o", "subformat=streamOptimized"][..],
        ),
    ] {
        let out = dir.path().join(format!("img.{name}"));
        convert(&raw, fmt, opts, &out);
        images.push((name, out));
    }

    let mut g = c.benchmark_group("detect");
    let mem = MemSource::new("m", vec![0u8; 1 << 20]);
    g.bench_function("raw-1MiB", |b| {
        b.iter(|| imgcheck_disk::detect(&mem).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("open");
    for (name, path) in &images {
        if open_path_checked(path).is_none() {
            continue;
        }
        g.bench_with_input(BenchmarkId::from_parameter(name), path, |b, p| {
            b.iter(|| open_path(p))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("read-sequential");
    g.throughput(Throughput::Bytes(SIZE));
    g.sample_size(10);
    for (name, path) in &images {
        let Some(disk) = open_path_checked(path) else {
            continue;
        };
        let mut buf = vec![0u8; 4 << 20];
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                for off in (0..SIZE).step_by(buf.len()) {
                    disk.read_at(off, &mut buf).unwrap();
                }
            })
        });
    }
    g.finish();
}

/// Formats whose reader is not built yet are left out of the run (and
/// named), not failed: the bench measures what exists.
fn open_path_checked(p: &Path) -> Option<VirtualDisk> {
    let src: Arc<dyn ByteSource> = Arc::new(FileSource::open(p).ok()?);
    match open(src, &OpenOptions::default()) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping {}: {e}", p.display());
            None
        }
    }
}

criterion_group!(read, benches);
criterion_main!(read);
