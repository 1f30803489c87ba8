//! Conversion throughput: parallel gzip and bzip2 of a raw stream, and the
//! qcow2 writer, on an in-memory 64 MiB disk that mixes the kinds of data a
//! real image holds: compressible text-like bytes, random bytes (already
//! compressed files) and zeros (free space). Throughput is in guest bytes.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgcheck_convert::{Options, write_bzip2, write_gzip, write_qcow2, write_raw};
use imgcheck_disk::{Format, OpenOptions, VirtualDisk, open};
use imgcheck_source::MemSource;

const SIZE: usize = 64 << 20;

/// Thirds, in 1 MiB stripes: text-like, random, zeros.
fn disk() -> VirtualDisk {
    let mut d = vec![0u8; SIZE];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let words: &[&[u8]] = &[
        b"the ",
        b"kernel ",
        b"image ",
        b"root ",
        b"/usr/lib ",
        b"0x1f ",
        b"\n",
    ];
    for (i, stripe) in d.chunks_mut(1 << 20).enumerate() {
        match i % 3 {
            0 => {
                let mut pos = 0;
                while pos < stripe.len() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let w = words[(x % words.len() as u64) as usize];
                    let n = w.len().min(stripe.len() - pos);
                    stripe[pos..pos + n].copy_from_slice(&w[..n]);
                    pos += n;
                }
            }
            1 => {
                for b in stripe.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
                }
            }
            _ => {}
        }
    }
    let opts = OpenOptions {
        format: Some(Format::Raw),
        ..Default::default()
    };
    open(Arc::new(MemSource::new("bench", d)), &opts).unwrap()
}

fn noop(_: u64) {}

fn benches(c: &mut Criterion) {
    let disk = disk();
    let opts = Options::default();
    let mut g = c.benchmark_group("convert");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("gzip", |b| {
        let mut out = Vec::with_capacity(SIZE);
        b.iter(|| {
            out.clear();
            write_gzip(&disk, &mut out, &opts, &noop).unwrap()
        })
    });
    g.bench_function("bzip2", |b| {
        let mut out = Vec::with_capacity(SIZE);
        b.iter(|| {
            out.clear();
            write_bzip2(&disk, &mut out, &opts, &noop).unwrap()
        })
    });
    g.bench_function("qcow2", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter(|| {
            let p = dir.path().join("o.qcow2");
            let f = std::fs::File::create(&p).unwrap();
            write_qcow2(&disk, &f, &p, &opts, &noop).unwrap()
        })
    });
    g.bench_function("raw", |b| {
        let dir = tempfile::tempdir().unwrap();
        b.iter(|| {
            let p = dir.path().join("o.raw");
            let f = std::fs::File::create(&p).unwrap();
            write_raw(&disk, &f, &p, &Options::default(), &noop).unwrap()
        })
    });
    g.finish();
    compressed_qcow2_to_raw(c, &disk);

    // A sparse raw file: 1 GiB virtual, the same 64 MiB of data at its
    // start and middle, holes elsewhere (SEEK_DATA/SEEK_HOLE skip them).
    let dir = tempfile::tempdir().unwrap();
    let sparse = dir.path().join("sparse.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(1 << 30).unwrap();
        let mut buf = vec![0u8; SIZE];
        disk.read_at(0, &mut buf).unwrap();
        f.write_all_at(&buf, 0).unwrap();
        f.write_all_at(&buf, 512 << 20).unwrap();
    }
    let sparse_disk = open(
        Arc::new(imgcheck_source::FileSource::open(&sparse).unwrap()),
        &OpenOptions::default(),
    )
    .unwrap();
    let mut g = c.benchmark_group("convert_sparse_raw");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(1 << 30));
    g.bench_function("qcow2 from 1 GiB sparse raw", |b| {
        b.iter(|| {
            let p = dir.path().join("o.qcow2");
            let f = std::fs::File::create(&p).unwrap();
            write_qcow2(&sparse_disk, &f, &p, &opts, &noop).unwrap()
        })
    });
    g.finish();
}

/// qcow2 images with deflate and zstd compressed clusters (made by
/// qemu-img from the same disk) converted to raw: the decoders' speed, on
/// every core.
fn compressed_qcow2_to_raw(c: &mut Criterion, disk: &VirtualDisk) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.raw");
    {
        let mut buf = vec![0u8; SIZE];
        disk.read_at(0, &mut buf).unwrap();
        std::fs::write(&raw, &buf).unwrap();
    }
    let mut g = c.benchmark_group("convert_compressed_qcow2");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    for ctype in ["zlib", "zstd"] {
        let img = dir.path().join(format!("{ctype}.qcow2"));
        let st = std::process::Command::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2", "-o"])
            .arg(format!("compression_type={ctype}"))
            .arg(&raw)
            .arg(&img)
            .status()
            .expect("qemu-img is required for this bench (apt-get install qemu-utils)");
        assert!(st.success(), "qemu-img convert failed");
        let src = imgcheck_source::FileSource::open(&img).unwrap();
        let d = open(Arc::new(src), &OpenOptions::default()).unwrap();
        g.bench_function(format!("{ctype} qcow2 -> raw"), |b| {
            b.iter(|| {
                let p = dir.path().join("o.raw");
                let f = std::fs::File::create(&p).unwrap();
                write_raw(&d, &f, &p, &Options::default(), &noop).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(convert_benches, benches);
criterion_main!(convert_benches);
