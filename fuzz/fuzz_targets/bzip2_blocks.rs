#![no_main]
//! Fuzz target: the bzip2 block scanner, stream walk, block splicing and
//! false-magic merging on arbitrary bytes, then reads through the block
//! index. Errors are fine; panics, hangs and runaway memory are bugs.
use std::sync::Arc;

use imgcheck_source::{ByteSource, Bzip2Source, DecompressOptions, MemSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz.bz2", data.to_vec()));
    let opts = DecompressOptions {
        max_uncompressed: Some(64 << 20),
        index_budget: 1 << 20,
        cache_budget: 1 << 20,
        progress: None,
    };
    let Ok(bz) = Bzip2Source::open(src, &opts) else {
        return;
    };
    let len = bz.len();
    if len == 0 {
        return;
    }
    let mut buf = vec![0u8; 4096];
    for i in 0..8u64 {
        let off = len / 8 * i;
        let n = (len - off).min(buf.len() as u64) as usize;
        bz.read_exact_at(off, &mut buf[..n])
            .expect("a verified stream reads back");
    }
});
