//! Shared driver for the format fuzz targets: open the input as a given
//! format (or detect it), then exercise the mapping and read paths. Any
//! panic, hang or runaway allocation is a bug; errors are fine.

use std::sync::Arc;

use imgcheck_disk::{Format, OpenOptions, open};
use imgcheck_source::{ByteSource, MemSource};

/// Opens `data` as `format` and reads a spread of guest offsets.
pub fn exercise(format: Option<Format>, data: &[u8]) {
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz", data.to_vec()));
    // A gzip/bzip2 input is unwrapped by the opener: cap what it may
    // decode, as the check does, so a tiny bomb is not a fuzzer OOM.
    let opts = OpenOptions {
        format,
        max_uncompressed: Some(64 << 20),
        ..Default::default()
    };
    let Ok(disk) = open(src, &opts) else { return };
    let size = disk.virtual_size();
    if size == 0 {
        return;
    }
    for ext in disk.extents(0, size).take(256) {
        if ext.is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 4096];
    for i in 0..16u64 {
        let off = size / 16 * i;
        let n = (size - off).min(buf.len() as u64) as usize;
        let _ = disk.read_at(off, &mut buf[..n]);
    }
}
