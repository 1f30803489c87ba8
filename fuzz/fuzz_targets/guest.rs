#![no_main]
//! Fuzz target: guest inspection (partition tables, filesystem probes, the
//! ext walk and fact gathering) over arbitrary bytes as a whole disk.
use std::sync::Arc;

use imgcheck_source::{ByteSource, MemSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz", data.to_vec()));
    let _ = imgcheck_guest::inspect(disk);
});
