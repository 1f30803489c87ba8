//! The gzip and bzip2 sources against the compressed fixtures made by
//! tools/fixtures/60-compressed.sh with the real gzip, pigz, bzip2, pbzip2
//! and lbzip2: every decompressed byte equals the reference raw, random
//! reads (proptest) equal the same range of the reference, broken files give
//! errors that name the structure, and bombs stop at the limit after reading
//! a bounded amount. Missing fixtures fail the test (run tools/gen-fixtures).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgcheck_source::{
    ByteSource, Bzip2Source, DecompressOptions, ErrorKind, FileSource, GzipSource, SourceError,
    StreamInfo,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn fixtures_dir() -> PathBuf {
    std::env::var_os("IMGCHECK_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"))
}

struct Line {
    kind: String,
    path: PathBuf,
    reference: Option<PathBuf>,
    notes: String,
}

fn manifest() -> Vec<Line> {
    let dir = fixtures_dir();
    let text = std::fs::read_to_string(dir.join("manifest.tsv"))
        .unwrap_or_else(|e| panic!("{}: {e}: run tools/gen-fixtures", dir.display()));
    text.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c.len() >= 4).then(|| Line {
                kind: c[0].to_owned(),
                path: dir.join(c[1]),
                reference: (c[3] != "-").then(|| dir.join(c[3])),
                notes: c.get(4).copied().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

fn compressed_disks() -> Vec<Line> {
    let v: Vec<Line> = manifest()
        .into_iter()
        .filter(|l| l.kind == "disk" && l.notes.contains("compression="))
        .collect();
    assert!(
        v.len() >= 8,
        "expected the compressed fixtures of 60-compressed.sh, found {}",
        v.len()
    );
    v
}

fn bad(name: &str) -> PathBuf {
    let p = fixtures_dir().join("compressed").join(name);
    assert!(
        p.exists(),
        "{}: missing; run tools/gen-fixtures",
        p.display()
    );
    p
}

/// Opens a compressed file with the source its magic calls for.
fn open_with(path: &Path, opts: &DecompressOptions) -> Result<Arc<dyn ByteSource>, SourceError> {
    let file: Arc<dyn ByteSource> = Arc::new(FileSource::open(path)?);
    let mut magic = [0u8; 2];
    file.read_exact_at(0, &mut magic)?;
    Ok(if magic == [0x1f, 0x8b] {
        Arc::new(GzipSource::open(file, opts)?)
    } else {
        Arc::new(Bzip2Source::open(file, opts)?)
    })
}

fn info_of(path: &Path, opts: &DecompressOptions) -> StreamInfo {
    let file: Arc<dyn ByteSource> = Arc::new(FileSource::open(path).unwrap());
    if path.to_string_lossy().ends_with(".gz") {
        GzipSource::open(file, opts).unwrap().info().clone()
    } else {
        Bzip2Source::open(file, opts).unwrap().info().clone()
    }
}

fn open(path: &Path) -> Arc<dyn ByteSource> {
    open_with(path, &DecompressOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_byte_equals_the_reference() {
    for l in compressed_disks() {
        let src = open(&l.path);
        // The reference is the *inner* image's guest bytes; for a raw inner
        // image that is the decompressed file itself.
        if !l.path.to_string_lossy().contains(".img.") {
            continue;
        }
        let want = read_file(l.reference.as_ref().unwrap());
        assert_eq!(src.len(), want.len() as u64, "{}", l.path.display());
        let mut got = vec![0u8; want.len()];
        // In 1 MiB + 3 pieces so reads straddle chunks and blocks.
        for (i, piece) in got.chunks_mut((1 << 20) + 3).enumerate() {
            let off = i as u64 * ((1 << 20) + 3);
            src.read_exact_at(off, piece).unwrap();
        }
        assert!(
            got == want,
            "{}: decompressed bytes differ",
            l.path.display()
        );
        assert!(src.read_exact_at(src.len(), &mut [0u8; 1]).is_err());
    }
}

#[test]
fn random_reads_equal_the_reference() {
    for l in compressed_disks() {
        if !l.path.to_string_lossy().contains(".img.") {
            continue;
        }
        let src = open(&l.path);
        let want = read_file(l.reference.as_ref().unwrap());
        let len = want.len() as u64;
        let mut runner = TestRunner::new(Config {
            cases: 48,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&(0..len, 0usize..300_000), |(off, n)| {
                let n = n.min((len - off) as usize);
                let mut buf = vec![0u8; n];
                src.read_exact_at(off, &mut buf).unwrap();
                prop_assert!(buf[..] == want[off as usize..off as usize + n]);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", l.path.display()));
    }
}

#[test]
fn inner_images_of_other_formats_open() {
    // qcow2.gz / vmdk.bz2: the decompressed stream starts with the inner
    // format's magic and has the inner file's size.
    for (name, magic) in [
        ("gpt-ext4.qcow2.gz", &b"QFI\xfb"[..]),
        ("gpt-ext4.vmdk.bz2", b"KDMV"),
    ] {
        let src = open(&bad(name));
        let mut head = [0u8; 4];
        src.read_exact_at(0, &mut head).unwrap();
        assert_eq!(&head[..], magic, "{name}");
    }
}

#[test]
fn multi_member_and_multi_stream_are_read_whole() {
    let opts = DecompressOptions::default();
    let multi = info_of(&bad("gpt-ext4.multi.img.gz"), &opts);
    assert_eq!(multi.members, 2, "{multi:?}");
    assert_eq!(multi.uncompressed_size, 96 << 20);
    let pb = info_of(&bad("gpt-ext4.pbzip2.img.bz2"), &opts);
    assert!(pb.members > 1, "pbzip2 writes one stream per block: {pb:?}");
    assert_eq!(pb.uncompressed_size, 96 << 20);
    let small = info_of(&bad("pattern.img.bz2"), &opts);
    assert!(
        small.blocks > 50,
        "bzip2 -1 of 48 MiB (6 MiB random): {small:?}"
    );
}

#[test]
fn bad_crc_names_member_and_offset() {
    let p = bad("badcrc.img.gz");
    let err = open_with(&p, &Default::default()).unwrap_err();
    let size = std::fs::metadata(&p).unwrap().len();
    assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
    assert!(err.structure.contains("gzip member 0"), "{err}");
    assert_eq!(err.offset, Some(size - 8), "{err}");
    assert!(err.to_string().contains("CRC32 mismatch"), "{err}");
}

#[test]
fn truncated_and_corrupt_are_errors() {
    let err = open_with(&bad("truncated.img.gz"), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(err.to_string().contains("gzip member 0"), "{err}");
    let err = open_with(&bad("badblock.img.bz2"), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("bzip2 stream 0 block"), "{err}");
    let err = open_with(&bad("gpt-ext4.img.xz"), &Default::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
}

#[test]
fn bombs_stop_at_the_limit_after_a_bounded_read() {
    let limit = 1u64 << 30;
    let opts = DecompressOptions {
        max_uncompressed: Some(limit),
        ..Default::default()
    };
    // gzip: deflate expands at most ~1032:1, so passing 1 GiB needs ~1 MiB
    // of input; allow that plus the 1 MiB input buffer.
    let p = bad("bomb.img.gz");
    let file = Arc::new(FileSource::open(&p).unwrap());
    let err = GzipSource::open(file.clone(), &opts).unwrap_err();
    assert!(
        matches!(&err.kind, ErrorKind::LimitExceeded(l)
            if l.limit == limit && l.value > limit && l.value < limit + (2 << 20)),
        "{err}"
    );
    assert!(
        file.bytes_fetched() < 3 << 20,
        "read {} bytes",
        file.bytes_fetched()
    );
    assert!(file.bytes_fetched() < file.len() / 4);
    // bzip2: the scan reads the (small) file once; the bomb is one 45 MiB
    // block of zeros repeated, which is decoded once and then recognised,
    // so the decode work is one block whatever the limit.
    let p = bad("bomb.img.bz2");
    let file = Arc::new(FileSource::open(&p).unwrap());
    for limit in [1u64 << 30, 100_000_000_000] {
        let last = Arc::new(std::sync::Mutex::new(None));
        let l = last.clone();
        let opts = DecompressOptions {
            max_uncompressed: Some(limit),
            progress: Some(imgcheck_source::ProgressFn::new(move |p| {
                *l.lock().unwrap() = Some(p);
            })),
            ..Default::default()
        };
        let err = Bzip2Source::open(file.clone(), &opts).unwrap_err();
        assert!(
            matches!(&err.kind, ErrorKind::LimitExceeded(l)
                if l.value > limit && l.value <= limit + (45 << 20)),
            "{err}"
        );
        let p: imgcheck_source::Progress = last.lock().unwrap().unwrap();
        assert!(p.uncompressed > limit, "{p:?}");
        assert_eq!(p.decoded, 45 << 20, "{p:?}");
    }
    assert!(file.bytes_fetched() <= 2 * 2 * file.len());
}

#[test]
fn index_stays_within_its_budget() {
    // 48 MiB (6 MiB of it random) with room for only 4 windows: the spacing
    // must grow and reads must stay correct.
    let p = bad("pattern.img.gz");
    let budget = 4 * (32 << 10) + 1024;
    let opts = DecompressOptions {
        index_budget: budget,
        cache_budget: 1 << 20,
        ..Default::default()
    };
    let src = open_with(&p, &opts).unwrap();
    let info = info_of(&p, &opts);
    assert!(info.index_bytes <= budget + 64 * 1024, "{info:?}");
    assert!(info.spacing > 1 << 20, "{info:?}");
    let want = read_file(&fixtures_dir().join("base/pattern.raw"));
    for off in [47u64 << 20, 1 << 20, 20 << 20, 123_456, 33 << 20] {
        let mut buf = vec![0u8; 100_000];
        src.read_exact_at(off, &mut buf).unwrap();
        assert!(
            buf[..] == want[off as usize..off as usize + 100_000],
            "at {off}"
        );
    }
    let full = info_of(&p, &DecompressOptions::default());
    assert!(
        full.index_points > info.index_points,
        "{full:?} vs {info:?}"
    );
}

/// Small mixed-entropy data: words, runs and noise.
fn sample(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => v.extend_from_slice(b"the quick brown fox "),
            1 => v.extend(std::iter::repeat_n(
                (x >> 8) as u8,
                (x >> 16) as usize % 300,
            )),
            _ => v.extend_from_slice(&x.to_le_bytes()),
        }
    }
    v.truncate(n);
    v
}

fn gzip_of(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2_of(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(1));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Opens mutated bytes. A panic fails the test. An error must be of a
/// damaged-input kind (a decoder or CRC complaint, a truncation, a size
/// over a limit), never I/O or "file changed". A stream that opens must
/// read back whole and equal the original content up to a member boundary:
/// `members` are the original members' uncompressed lengths, so a stream
/// cut exactly between two members reads back as the members before the
/// cut, and a flip that lands where no checksum looks (the gzip header's
/// MTIME or OS byte) leaves the content intact. Any other changed byte is
/// a flip that went unnoticed, which is what this test exists to catch.
fn survive(
    kind: &str,
    bytes: Vec<u8>,
    original: &[u8],
    members: &[usize],
) -> Result<(), TestCaseError> {
    let src: Arc<dyn ByteSource> = Arc::new(imgcheck_source::MemSource::new("m", bytes));
    let opts = DecompressOptions {
        max_uncompressed: Some(8 << 20),
        index_budget: 4 * 33 * 1024,
        ..Default::default()
    };
    let opened: Result<Arc<dyn ByteSource>, SourceError> = if kind == "gz" {
        GzipSource::open(src, &opts).map(|s| Arc::new(s) as Arc<dyn ByteSource>)
    } else {
        Bzip2Source::open(src, &opts).map(|s| Arc::new(s) as Arc<dyn ByteSource>)
    };
    match opened {
        Err(e) => {
            prop_assert!(
                matches!(
                    e.kind,
                    ErrorKind::Corrupt | ErrorKind::Truncated | ErrorKind::LimitExceeded(_)
                ),
                "{kind}: a damaged stream gave an error of the wrong kind: {e:?}"
            );
        }
        Ok(s) => {
            let boundaries: Vec<usize> = members
                .iter()
                .scan(0, |sum, m| {
                    *sum += m;
                    Some(*sum)
                })
                .collect();
            let n = usize::try_from(s.len()).unwrap_or(usize::MAX);
            prop_assert!(
                boundaries.contains(&n),
                "{kind}: opened with {n} bytes, not at a member boundary {boundaries:?}"
            );
            let mut buf = vec![0u8; n];
            let read = s.read_exact_at(0, &mut buf);
            prop_assert!(
                read.is_ok(),
                "{kind}: opened but does not read back: {read:?}"
            );
            prop_assert!(
                buf.as_slice() == &original[..n],
                "{kind}: a mutation went unnoticed: {n} bytes read back, content differs"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 64, failure_persistence: None, ..Config::default() })]

    /// Bit flips, truncations and splices of valid gzip: never a panic; a
    /// flipped bit in the data is caught (by inflate or the CRC): see
    /// [`survive`].
    #[test]
    fn mutated_gzip_never_panics(seed in 1u64.., flips in proptest::collection::vec((0usize..1 << 20, 0u8..8), 0..4), cut in 0usize..1 << 20) {
        let data = sample(300_000, seed);
        let mut gz = gzip_of(&data);
        gz.extend(gzip_of(&data[..1000]));
        let mut original = data.clone();
        original.extend_from_slice(&data[..1000]);
        let n = gz.len();
        for (at, bit) in &flips {
            gz[at % n] ^= 1 << bit;
        }
        if cut % 3 == 0 {
            gz.truncate(cut % n);
        }
        survive("gz", gz, &original, &[300_000, 1000])?;
    }

    /// The same for bzip2 (block and stream CRCs).
    #[test]
    fn mutated_bzip2_never_panics(seed in 1u64.., flips in proptest::collection::vec((0usize..1 << 20, 0u8..8), 0..4), cut in 0usize..1 << 20) {
        let data = sample(250_000, seed);
        let mut bz = bzip2_of(&data);
        let n = bz.len();
        for (at, bit) in &flips {
            bz[at % n] ^= 1 << bit;
        }
        if cut % 3 == 0 {
            bz.truncate(cut % n);
        }
        survive("bz", bz, &data, &[250_000])?;
    }
}
