#![no_main]
//! Fuzz target: the hand-written bzip2 block decoder
//! (`imgcheck-source/src/decompress/bzip2/block.rs`). The input is one
//! block's body (after the block magic): it is wrapped into a one-block
//! stream (level from the first byte, stream CRC = the block's stored CRC)
//! and opened through `Bzip2Source`, so every byte reaches the Huffman,
//! MTF, BWT and RLE1 stages. libbz2 decodes the same stream: whenever both
//! accept it, the bytes must be equal, and neither may accept alone.
use std::io::Read;
use std::sync::Arc;

use imgcheck_source::{ByteSource, Bzip2Source, DecompressOptions, MemSource};
use libfuzzer_sys::fuzz_target;

fn stream(data: &[u8]) -> Vec<u8> {
    let (level, body) = match data.split_first() {
        Some((l, b)) => (b'1' + l % 9, b),
        None => (b'9', data),
    };
    let mut s = vec![b'B', b'Z', b'h', level, 0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
    s.extend_from_slice(body);
    // End-of-stream magic and stream CRC (= the one block's CRC).
    s.extend_from_slice(&[0x17, 0x72, 0x45, 0x38, 0x50, 0x90]);
    let mut crc = [0u8; 4];
    for (c, b) in crc.iter_mut().zip(body) {
        *c = *b;
    }
    s.extend_from_slice(&crc);
    s
}

fuzz_target!(|data: &[u8]| {
    let f = stream(data);
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz.bz2", f.clone()));
    let opts = DecompressOptions {
        max_uncompressed: Some(64 << 20),
        index_budget: 1 << 20,
        cache_budget: 1 << 20,
        progress: None,
    };
    let ours = Bzip2Source::open(src, &opts).map(|bz| {
        let mut all = vec![0u8; bz.len() as usize];
        bz.read_exact_at(0, &mut all)
            .expect("a verified stream reads back");
        all
    });
    let mut theirs = Vec::new();
    let libbz2 = bzip2::read::BzDecoder::new(&f[..])
        .take(64 << 20)
        .read_to_end(&mut theirs)
        .is_ok();
    match ours {
        Ok(all) => {
            assert!(libbz2, "accepted here, refused by libbz2");
            assert!(all == theirs, "decodes differently from libbz2");
        }
        // Over the cap: libbz2 (reading up to the cap) has no verdict.
        Err(e) if matches!(e.kind, imgcheck_source::ErrorKind::LimitExceeded(_)) => {}
        Err(e) => assert!(!libbz2, "refused here, accepted by libbz2: {e}"),
    }
});
