//! Shared driver for the format fuzz targets: open the input as a given
//! format (or detect it), then exercise the mapping and read paths. Any
//! panic, hang or runaway allocation is a bug; errors are fine.

use std::sync::Arc;

use imgcheck_disk::{Format, OpenOptions, open};
use imgcheck_source::{ByteSource, MemSource};

/// Opens `data` as `format` and reads a spread of guest offsets.
pub fn exercise(format: Option<Format>, data: &[u8]) {
    exercise_owned(format, data.to_vec());
}

/// [`exercise`] on an image already in a vector.
pub fn exercise_owned(format: Option<Format>, data: Vec<u8>) {
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("fuzz", data));
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

/// Largest image [`expand_sparse`] builds.
pub const SPARSE_MAX: usize = 32 << 20;

/// Expands a sparse encoding of an image: `u32` LE image length, then
/// chunks of `u32` LE offset, `u16` LE length and that many bytes, written
/// over zeros in order (clipped to the image).
///
/// Formats whose metadata is spread over megabytes (VHDX: headers in the
/// first MiB, log, metadata and BAT regions after it) are fuzzed through
/// this, so libFuzzer mutates (and hashes) a few hundred KiB of structure
/// instead of megabytes of zeros. `tools/fuzz` encodes the seeds.
pub fn expand_sparse(data: &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let mut img = vec![0u8; len.min(SPARSE_MAX)];
    let mut rest = &data[4..];
    while rest.len() >= 6 {
        let off = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
        let n = u16::from_le_bytes(rest[4..6].try_into().ok()?) as usize;
        let chunk = &rest[6..(6 + n).min(rest.len())];
        if let Some(dst) = img.get_mut(off..) {
            let k = dst.len().min(chunk.len());
            dst[..k].copy_from_slice(&chunk[..k]);
        }
        rest = &rest[(6 + n).min(rest.len())..];
    }
    Some(img)
}

/// [`exercise`] on a sparse-encoded input (see [`expand_sparse`]).
pub fn exercise_sparse(format: Option<Format>, data: &[u8]) {
    if let Some(img) = expand_sparse(data) {
        exercise_owned(format, img);
    }
}
