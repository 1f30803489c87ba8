//! Decompression: single-thread inflate on each available backend (zlib-rs
//! through flate2, as the workspace configures it, vs miniz_oxide), the open
//! pass of `GzipSource` (inflate + CRC + restart index) and of
//! `Bzip2Source` (parallel block decode, and on one worker) against plain
//! single-thread bzip2 (libbz2), and random 4 KiB reads through both indexes.
//!
//! The payload is 32 MiB of mixed-entropy data (text-like runs, repeats and
//! noise, ~3:1 with gzip -6) so the figures resemble a disk image's data
//! areas rather than all-zero best cases.

use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use imgcheck_source::{ByteSource, Bzip2Source, DecompressOptions, GzipSource, MemSource};

const SIZE: usize = 32 << 20;

fn payload() -> Vec<u8> {
    let words: [&[u8]; 8] = [
        b"kernel ",
        b"systemd ",
        b"/usr/lib/",
        b"\x00\x00\x00\x00",
        b"ELF\x02\x01",
        b"config=",
        b"0123456789",
        b"\n",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v = Vec::with_capacity(SIZE);
    while v.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 8 {
            0..=3 => v.extend_from_slice(words[(x >> 8) as usize % 8]),
            4 => v.extend(std::iter::repeat_n(0u8, (x >> 20) as usize % 512)),
            _ => v.extend_from_slice(&x.to_le_bytes()[..(x >> 40) as usize % 8]),
        }
    }
    v.truncate(SIZE);
    v
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(9));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bench(c: &mut Criterion) {
    let data = payload();
    let gz = gzip(&data);
    let bz = bzip2(&data);
    // The raw deflate body of the gzip member (10-byte header, 8-byte trailer).
    let deflate = &gz[10..gz.len() - 8];

    let mut g = c.benchmark_group("inflate_single_thread");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("zlib-rs (flate2)", |b| {
        let mut out = vec![0u8; SIZE];
        b.iter(|| {
            let mut d = flate2::Decompress::new(false);
            d.decompress(deflate, &mut out, flate2::FlushDecompress::Finish)
                .unwrap();
            assert_eq!(d.total_out(), SIZE as u64);
        })
    });
    g.bench_function("miniz_oxide", |b| {
        b.iter(|| {
            let out = miniz_oxide::inflate::decompress_to_vec(deflate).unwrap();
            assert_eq!(out.len(), SIZE);
        })
    });
    g.bench_function("flate2 GzDecoder (Read)", |b| {
        let mut out = Vec::with_capacity(SIZE);
        b.iter(|| {
            out.clear();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
        })
    });
    g.finish();

    let mut g = c.benchmark_group("open_pass");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    let gz_src: Arc<dyn ByteSource> = Arc::new(MemSource::new("b.gz", gz.clone()));
    let bz_src: Arc<dyn ByteSource> = Arc::new(MemSource::new("b.bz2", bz.clone()));
    g.bench_function("GzipSource::open", |b| {
        b.iter(|| GzipSource::open(gz_src.clone(), &DecompressOptions::default()).unwrap())
    });
    g.bench_function("Bzip2Source::open (rayon)", |b| {
        b.iter(|| Bzip2Source::open(bz_src.clone(), &DecompressOptions::default()).unwrap())
    });
    // The same open pass on one worker: the hand-written block decoder
    // against libbz2 below, core for core.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    g.bench_function("Bzip2Source::open (1 thread)", |b| {
        b.iter(|| {
            one.install(|| Bzip2Source::open(bz_src.clone(), &DecompressOptions::default()))
                .unwrap()
        })
    });
    // 256 MiB of zeros: six identical 45 MB blocks and a tail; repeats are
    // recognised, so this measures one block's decode plus the scan.
    let zeros_bz: Arc<dyn ByteSource> =
        Arc::new(MemSource::new("z.bz2", bzip2(&vec![0u8; 256 << 20])));
    g.bench_function(
        "Bzip2Source::open, 256 MiB of zeros (repeated blocks)",
        |b| b.iter(|| Bzip2Source::open(zeros_bz.clone(), &DecompressOptions::default()).unwrap()),
    );
    g.bench_function("bzip2 MultiBzDecoder (1 thread)", |b| {
        let mut out = Vec::with_capacity(SIZE);
        b.iter(|| {
            out.clear();
            bzip2::read::MultiBzDecoder::new(&bz[..])
                .read_to_end(&mut out)
                .unwrap();
        })
    });
    g.finish();

    // A 1 MiB cache: most reads miss, so this measures decoding from the
    // nearest restart point (gzip) or the block (bzip2).
    let small = DecompressOptions {
        cache_budget: 1 << 20,
        ..Default::default()
    };
    let gzs = GzipSource::open(gz_src, &small).unwrap();
    let bzs = Bzip2Source::open(bz_src, &small).unwrap();
    let mut g = c.benchmark_group("random_read_4k");
    g.sample_size(20);
    for (name, src) in [("gzip", &gzs as &dyn ByteSource), ("bzip2", &bzs)] {
        g.bench_with_input(BenchmarkId::from_parameter(name), &src, |b, src| {
            let mut x = 0x9e37_79b9u64;
            let mut buf = [0u8; 4096];
            b.iter(|| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = x % (SIZE as u64 - 4096);
                src.read_exact_at(off, &mut buf).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
