//! `HttpSource` against a local test server on 127.0.0.1 (no internet):
//! random reads equal the file, HEAD refused, Range ignored, 503 / dropped
//! connection / cut body retried, redirects followed and bounded, siblings.

#![allow(clippy::cast_possible_truncation)]

#[path = "support/http_server.rs"]
mod http_server;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use http_server::{Behaviour, Content, Server};
use imgcheck_source::{Access, ByteSource, HttpOptions, HttpSource};
use proptest::prelude::*;

/// Deterministic, position-dependent bytes (no two blocks alike).
fn data(len: usize) -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    Arc::new(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect(),
    )
}

/// Fast retries, small blocks: tests exercise many blocks on small files.
fn opts() -> HttpOptions {
    HttpOptions {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        block_size: 4096,
        max_readahead: 64 * 1024,
        cache_bytes: 256 * 1024,
        read_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn serve(bytes: &Arc<Vec<u8>>, b: Behaviour) -> Server {
    Server::start(vec![("disk.img", Content::Mem(bytes.clone()))], b)
}

#[test]
fn head_gives_size_and_reads_match() {
    let d = data(300_000);
    let s = serve(&d, Behaviour::default());
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    assert_eq!(src.len(), d.len() as u64);
    assert!(src.head_supported());
    assert_eq!(src.info().accept_ranges.as_deref(), Some("bytes"));
    assert_eq!(src.access(), Access::Slow);
    let mut buf = vec![0u8; 10_000];
    src.read_exact_at(123_456, &mut buf).unwrap();
    assert_eq!(&buf[..], &d[123_456..133_456]);
    // Whole aligned blocks were fetched, not the whole file.
    assert!(src.bytes_fetched() >= 10_000 && src.bytes_fetched() < 20_000);
    // Cached: no new request.
    let n = s.requests().len();
    src.read_exact_at(124_000, &mut buf[..100]).unwrap();
    assert_eq!(s.requests().len(), n);
    // Past the end is an error, not a short read.
    assert!(src.read_exact_at(299_999, &mut buf[..2]).is_err());
    // The last, partial block.
    src.read_exact_at(299_990, &mut buf[..10]).unwrap();
    assert_eq!(&buf[..10], &d[299_990..]);
}

#[test]
fn head_refused_falls_back_to_range_get_and_flags_it() {
    let d = data(50_000);
    let s = serve(
        &d,
        Behaviour {
            refuse_head: true,
            ..Default::default()
        },
    );
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    assert!(!src.head_supported());
    assert_eq!(src.info().head_status, Some(405));
    assert_eq!(src.len(), 50_000);
    let mut buf = vec![0u8; 5000];
    src.read_exact_at(40_000, &mut buf).unwrap();
    assert_eq!(&buf[..], &d[40_000..45_000]);
    let log = s.requests();
    assert!(log[0].starts_with("HEAD /disk.img"), "{log:?}");
    assert!(log[1].starts_with("GET /disk.img bytes=0-0"), "{log:?}");
}

#[test]
fn range_ignored_is_a_clear_error() {
    let d = data(50_000);
    let s = serve(
        &d,
        Behaviour {
            ignore_range: true,
            ..Default::default()
        },
    );
    let url = s.url("disk.img");
    let src = HttpSource::open(&url, &opts()).unwrap();
    let mut buf = vec![0u8; 100];
    let err = src.read_exact_at(10_000, &mut buf).unwrap_err().to_string();
    assert!(err.contains("server ignores Range requests"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("GET bytes=8192-"), "{err}");
    // The 200 body was not downloaded.
    assert!(src.bytes_fetched() < 50_000, "{}", src.bytes_fetched());
}

#[test]
fn transient_503_is_retried_and_honours_retry_after() {
    let d = data(50_000);
    let s = serve(
        &d,
        Behaviour {
            fail_503: AtomicU32::new(2),
            retry_after: Some(1),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(src.head_supported());
    let mut buf = vec![0u8; 100];
    src.read_exact_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..], &d[..100]);
}

#[test]
fn persistent_503_gives_up_with_the_status() {
    let d = data(50_000);
    let s = serve(&d, Behaviour::default());
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    drop(s);
    let s2 = serve(
        &d,
        Behaviour {
            fail_503: AtomicU32::new(1000),
            ..Default::default()
        },
    );
    // Same size and path on another port: open there, then reads fail.
    let err = HttpSource::open(&s2.url("disk.img"), &opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("503"), "{err}");
    assert!(err.contains("gave up after 5 attempts"), "{err}");
    assert!(s2.requests().len() <= 10, "{:?}", s2.requests());
    drop(src);
}

#[test]
fn dropped_connection_and_cut_body_are_retried() {
    let d = data(100_000);
    let s = serve(&d, Behaviour::default());
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    drop(src);
    let s = serve(
        &d,
        Behaviour {
            drop_conn: AtomicU32::new(1),
            cut_body: AtomicU32::new(1),
            ..Default::default()
        },
    );
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    let mut buf = vec![0u8; 30_000];
    src.read_exact_at(20_000, &mut buf).unwrap();
    assert_eq!(&buf[..], &d[20_000..50_000]);
    // The dropped connection was retried (two HEADs). The cut body was
    // resumed, not refetched from the start: exactly two GETs, the second
    // starting where the server stopped (it sends half of the body) and
    // ending where the first did.
    let log = s.requests();
    let heads = log.iter().filter(|l| l.starts_with("HEAD ")).count();
    assert_eq!(heads, 2, "{log:?}");
    let ranges: Vec<(u64, u64)> = log
        .iter()
        .filter_map(|l| l.strip_prefix("GET /disk.img bytes="))
        .map(|r| {
            let (a, b) = r.split_once('-').expect("A-B range");
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(ranges.len(), 2, "{log:?}");
    let (a, b) = ranges[0];
    assert!(
        a <= 20_000 && b >= 49_999,
        "the first GET covers the read: {log:?}"
    );
    // The server sends [start, start + (end - start) / 2) of [start, end).
    let end = b + 1;
    let half = (end - a) / 2;
    assert_eq!(ranges[1], (a + half, b), "resumed at the cut: {log:?}");
}

#[test]
fn redirect_is_followed_and_reads_use_the_final_url() {
    let d = data(50_000);
    let mut redirects = HashMap::new();
    redirects.insert("/old.img".to_owned(), "/disk.img".to_owned());
    let s = serve(
        &d,
        Behaviour {
            redirects,
            ..Default::default()
        },
    );
    let src = HttpSource::open(&s.url("old.img"), &opts()).unwrap();
    assert_eq!(src.len(), 50_000);
    assert!(
        src.final_url().ends_with("/disk.img"),
        "{}",
        src.final_url()
    );
    let mut buf = vec![0u8; 100];
    src.read_exact_at(30_000, &mut buf).unwrap();
    assert_eq!(&buf[..], &d[30_000..30_100]);
    let log = s.requests();
    assert!(log.last().unwrap().starts_with("GET /disk.img"), "{log:?}");
}

#[test]
fn redirect_loop_is_bounded() {
    let d = data(1000);
    let mut redirects = HashMap::new();
    redirects.insert("/a".to_owned(), "/b".to_owned());
    redirects.insert("/b".to_owned(), "/a".to_owned());
    let s = serve(
        &d,
        Behaviour {
            redirects,
            ..Default::default()
        },
    );
    let err = HttpSource::open(&s.url("a"), &opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("too many redirects"), "{err}");
    assert!(s.requests().len() <= 12, "{:?}", s.requests());
}

#[test]
fn missing_file_names_url_and_status() {
    let d = data(1000);
    let s = serve(&d, Behaviour::default());
    let url = s.url("nope.img");
    let err = HttpSource::open(&url, &opts()).unwrap_err().to_string();
    assert!(err.contains(&url) && err.contains("404"), "{err}");
}

#[test]
fn slow_server_times_out() {
    let d = data(1000);
    let s = serve(
        &d,
        Behaviour {
            delay: Some(Duration::from_millis(1500)),
            ..Default::default()
        },
    );
    let o = HttpOptions {
        read_timeout: Duration::from_millis(300),
        retries: 1,
        ..opts()
    };
    let t = Instant::now();
    let err = HttpSource::open(&s.url("disk.img"), &o)
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        err.to_lowercase().contains("timeout") || err.contains("timed out"),
        "{err}"
    );
}

#[test]
fn sequential_reads_stream_from_one_response() {
    let d = data(2_000_000);
    let s = serve(&d, Behaviour::default());
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    let mut all = vec![0u8; d.len()];
    for (i, chunk) in all.chunks_mut(8192).enumerate() {
        src.read_exact_at(i as u64 * 8192, chunk).unwrap();
    }
    assert_eq!(all, *d);
    let gets = s.requests().iter().filter(|l| l.starts_with("GET")).count();
    // 245 reads; read-ahead ramps up, then one streaming GET serves the rest.
    assert!(gets <= 10, "{gets} GETs: {:?}", s.requests());
    assert_eq!(src.bytes_fetched(), d.len() as u64);
}

#[test]
fn random_reads_of_a_large_file_fetch_a_window_around_them() {
    // 16 MiB in 4 KiB blocks: a random read fetches a window of ~1/560 of
    // the file (8 blocks) around itself: 2 blocks before the block read,
    // 6 after it. The first read, at 0, fetches 16 blocks after it.
    let d = data(16 << 20);
    let s = serve(&d, Behaviour::default());
    let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
    let gets = || s.requests().iter().filter(|l| l.starts_with("GET")).count();
    let mut buf = vec![0u8; 512];
    src.read_exact_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..], &d[..512]);
    assert_eq!((gets(), src.bytes_fetched()), (1, 68 << 10));
    src.read_exact_at(64 << 10, &mut buf).unwrap(); // inside the first window
    assert_eq!(gets(), 1);
    let at = 8 << 20;
    src.read_exact_at(at + 100, &mut buf).unwrap();
    assert_eq!(&buf[..], &d[at as usize + 100..at as usize + 612]);
    assert_eq!((gets(), src.bytes_fetched()), (2, 104 << 10));
    for off in [at - 8192, at - 1, at + 20_000] {
        src.read_exact_at(off, &mut buf[..100]).unwrap();
        assert_eq!(&buf[..100], &d[off as usize..off as usize + 100]);
    }
    assert_eq!(gets(), 2, "{:?}", s.requests());
    // Just past the window: one more request, not overlapping the cache.
    src.read_exact_at(at + (28 << 10), &mut buf[..100]).unwrap();
    assert_eq!(gets(), 3);
    assert_eq!(src.bytes_fetched(), 132 << 10);
    // A read as large as the window fetches just its blocks.
    let mut big = vec![0u8; 32 << 10];
    src.read_exact_at(12 << 20, &mut big).unwrap();
    assert_eq!(&big[..], &d[12 << 20..(12 << 20) + (32 << 10)]);
    assert_eq!((gets(), src.bytes_fetched()), (4, 164 << 10));
}

#[test]
fn siblings_resolve_next_to_the_url() {
    let d = data(1000);
    let e = data(3000);
    let s = Server::start(
        vec![
            ("dir/disk.vmdk", Content::Mem(d.clone())),
            ("dir/disk flat.vmdk", Content::Mem(e.clone())),
        ],
        Behaviour::default(),
    );
    let src = HttpSource::open(&format!("{}?sig=abc", s.url("dir/disk.vmdk")), &opts()).unwrap();
    let sib = src.open_sibling("disk flat.vmdk");
    // The server decodes nothing: the encoded name is what it sees.
    assert!(sib.is_err());
    let log = s.requests();
    assert!(
        log.iter().any(|l| l.contains("/dir/disk%20flat.vmdk")),
        "{log:?}"
    );
    let s2 = Server::start(
        vec![
            ("dir/disk.vmdk", Content::Mem(d.clone())),
            ("dir/disk-flat.vmdk", Content::Mem(e.clone())),
        ],
        Behaviour::default(),
    );
    let src = HttpSource::open(&s2.url("dir/disk.vmdk"), &opts()).unwrap();
    let sib = src.open_sibling("disk-flat.vmdk").unwrap();
    assert_eq!(sib.len(), 3000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_reads_equal_the_file(
        reads in proptest::collection::vec((0u64..400_000, 0usize..70_000), 1..12)
    ) {
        let d = data(400_000);
        let s = serve(&d, Behaviour::default());
        let src = HttpSource::open(&s.url("disk.img"), &opts()).unwrap();
        for (off, len) in reads {
            let len = len.min((400_000 - off) as usize);
            let mut buf = vec![0u8; len];
            src.read_exact_at(off, &mut buf).unwrap();
            prop_assert_eq!(&buf[..], &d[off as usize..off as usize + len]);
        }
    }
}
