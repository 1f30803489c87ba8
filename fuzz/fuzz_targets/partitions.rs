#![no_main]
//! Fuzz target: MBR/GPT parsing alone (both sector sizes are tried inside).
use std::sync::Arc;

use imgcheck_source::{ByteSource, MemSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz", data.to_vec()));
    let _ = imgcheck_guest::partitions::read_table(&disk);
});
