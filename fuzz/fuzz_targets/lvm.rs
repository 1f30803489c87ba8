#![no_main]
//! Fuzz target: LVM2 physical-volume label, metadata area and metadata
//! text parsing, then mapping reads through every logical volume found.
use std::sync::Arc;

use imgcheck_source::{ByteSource, MemSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pv: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz", data.to_vec()));
    let scan = imgcheck_guest::lvm::scan(&[("pv".to_owned(), pv)]);
    for lv in scan.lvs {
        if let Ok(src) = lv.source {
            let mut buf = [0u8; 4096];
            let n = usize::try_from(src.len().min(4096)).unwrap_or(0);
            let _ = src.read_exact_at(0, &mut buf[..n]);
        }
    }
    let _ = imgcheck_guest::lvm::text::parse(data);
});
