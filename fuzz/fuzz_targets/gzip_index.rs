#![no_main]
//! Fuzz target: gzip index building (the open pass: member headers, inflate,
//! CRC/ISIZE checks, restart points) on arbitrary bytes, then random reads
//! through the index. Errors are fine; panics, hangs and runaway memory are
//! bugs. A tiny index budget forces the spacing-doubling path.
use std::sync::Arc;

use imgcheck_source::{ByteSource, DecompressOptions, GzipSource, MemSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz.gz", data.to_vec()));
    let opts = DecompressOptions {
        max_uncompressed: Some(64 << 20),
        index_budget: 4 * 33 * 1024,
        cache_budget: 1 << 20,
        progress: None,
    };
    let Ok(gz) = GzipSource::open(src, &opts) else {
        return;
    };
    let len = gz.len();
    assert_eq!(len, gz.info().uncompressed_size);
    if len == 0 {
        return;
    }
    let mut buf = vec![0u8; 4096];
    for i in (0..8u64).rev() {
        let off = len / 8 * i;
        let n = (len - off).min(buf.len() as u64) as usize;
        gz.read_exact_at(off, &mut buf[..n])
            .expect("a verified stream reads back");
    }
});
