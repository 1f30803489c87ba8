//! Decoding compressed extents: zlib (miniz_oxide), zstd (ruzstd) and LZO
//! (lzokay for the LZO1X blocks, the btrfs framing here).
//!
//! The kernel compresses at most 128 KiB of file data into one extent
//! (BTRFS_MAX_UNCOMPRESSED), so every decoder is given exactly the room the
//! item claims, and a claim over [`MAX_DECODED`] is refused before
//! anything is allocated: a hostile extent cannot make us inflate more.
//!
//! btrfs's LZO framing (fs/btrfs/lzo.c): a 4-byte little-endian total
//! length (itself included), then per sector of input a 4-byte segment
//! length and the LZO1X-compressed sector; a segment header never straddles
//! a sector boundary (the rest of the sector is padding then). Each segment
//! decodes to at most one sector.

use std::io::Read;

use super::superblock::{FS, corrupt, u32_at};
use crate::fs::FsError;

/// Most bytes one compressed extent may decode to (BTRFS_MAX_UNCOMPRESSED).
pub(super) const MAX_DECODED: u64 = 128 * 1024;
/// Most stored bytes of one compressed extent (never more than it decodes
/// to; the kernel keeps an extent uncompressed when it does not shrink).
pub(super) const MAX_STORED: u64 = 128 * 1024;

/// Decodes `data` (compressed with `algo`: 1 zlib, 2 lzo, 3 zstd) into
/// exactly `ram_bytes` bytes; output the stream does not fill reads as
/// zeros, as the kernel does. `at` locates the extent in errors.
pub(super) fn decode(
    algo: u8,
    data: &[u8],
    ram_bytes: u64,
    sectorsize: u32,
    at: u64,
) -> Result<Vec<u8>, FsError> {
    if ram_bytes > MAX_DECODED {
        return Err(FsError::LimitExceeded {
            fs: FS,
            what: format!("decoded size {ram_bytes} of the compressed extent at {at}"),
            limit: MAX_DECODED,
        });
    }
    let want = usize::try_from(ram_bytes).unwrap_or(0);
    let bad = |what: &str, why: String| corrupt(format!("{what} extent"), at, why);
    let mut out = match algo {
        1 => miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, want)
            .map_err(|e| bad("zlib", format!("{:?}", e.status)))?,
        2 => lzo(data, want, sectorsize).map_err(|why| bad("lzo", why))?,
        3 => zstd(data, want).map_err(|why| bad("zstd", why))?,
        n => {
            return Err(FsError::Unsupported {
                fs: FS,
                what: format!("compression type {n} (extent at {at})"),
            });
        }
    };
    out.resize(want, 0);
    Ok(out)
}

/// One zstd frame, at most `want` bytes, with a window no larger than an
/// extent (btrfs writes windows of at most 128 KiB).
fn zstd(data: &[u8], want: usize) -> Result<Vec<u8>, String> {
    let mut src = data;
    let dec = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(&mut src, 1 << 20)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(want);
    // A stream longer than the extent claims is cut at the claim.
    dec.take(want as u64)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// btrfs-framed LZO (see the module doc), at most `want` bytes.
fn lzo(data: &[u8], want: usize, sectorsize: u32) -> Result<Vec<u8>, String> {
    let sector = usize::try_from(sectorsize).map_err(|_| "sector size".to_owned())?;
    let total = usize::try_from(u32_at(data, 0).ok_or("no LZO header")?).unwrap_or(usize::MAX);
    if total > data.len() || total < 4 {
        return Err(format!(
            "LZO length {total} for {} stored bytes",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(want);
    let mut seg = vec![0u8; sector];
    let mut p = 4usize;
    while p < total && out.len() < want {
        // A header that would straddle a sector boundary starts the next
        // sector instead.
        let left_in_sector = sector - p % sector;
        if left_in_sector < 4 {
            p += left_in_sector;
            if p >= total {
                break;
            }
        }
        let len = usize::try_from(u32_at(data, p).ok_or("truncated LZO segment header")?)
            .unwrap_or(usize::MAX);
        p += 4;
        let end = p.checked_add(len).filter(|&e| e <= total).ok_or_else(|| {
            format!("LZO segment of {len} bytes at {p} runs past the {total}-byte extent")
        })?;
        let src = data.get(p..end).ok_or("LZO segment out of bounds")?;
        let n = lzokay::decompress::decompress(src, &mut seg)
            .map_err(|e| format!("LZO segment at {p}: {e:?}"))?;
        let take = n.min(want - out.len());
        out.extend_from_slice(seg.get(..take).unwrap_or_default());
        p = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_and_zstd_roundtrip_and_claims_are_bounded() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let z = miniz_oxide::deflate::compress_to_vec_zlib(&text, 6);
        let got = decode(1, &z, text.len() as u64, 4096, 0).unwrap();
        assert_eq!(got, text);
        // Claims shorter than the stream: cut (zlib errors, which is fine).
        assert!(
            decode(1, &z, 100, 4096, 0).is_err()
                || decode(1, &z, 100, 4096, 0).unwrap().len() == 100
        );
        // Claims longer than the stream: zero-filled.
        let got = decode(1, &z, text.len() as u64 + 10, 4096, 0).unwrap();
        assert_eq!(&got[text.len()..], &[0u8; 10]);
        assert!(matches!(
            decode(1, &z, MAX_DECODED + 1, 4096, 0),
            Err(FsError::LimitExceeded { .. })
        ));
        assert!(decode(3, b"not zstd", 10, 4096, 0).is_err());
        assert!(decode(1, b"not zlib", 10, 4096, 0).is_err());
        assert!(decode(9, b"", 10, 4096, 0).is_err());
    }

    /// Random byte changes in real zlib and zstd streams and in LZO
    /// segments: errors or bounded output, never a panic.
    #[test]
    fn mutated_streams_never_panic() {
        let text: Vec<u8> = (0..30_000u32)
            .flat_map(|i| format!("line {i} of a file\n").into_bytes())
            .take(100_000)
            .collect();
        let z = miniz_oxide::deflate::compress_to_vec_zlib(&text, 6);
        let zs = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(decode(3, &zs, text.len() as u64, 4096, 0).unwrap(), text);
        // An LZO frame of two segments holding LZO1X bytes that are mostly
        // garbage (the decoder must refuse or stop, not overrun).
        let mut lzo = vec![0u8; 4];
        for seg in [&text[..300], &text[300..900]] {
            lzo.extend_from_slice(&u32::try_from(seg.len()).unwrap().to_le_bytes());
            lzo.extend_from_slice(seg);
        }
        let total = u32::try_from(lzo.len()).unwrap();
        lzo[0..4].copy_from_slice(&total.to_le_bytes());
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (algo, base) = match i % 3 {
                0 => (1, &z),
                1 => (3, &zs),
                _ => (2, &lzo),
            };
            let mut m = base.clone();
            for k in 0..=(x % 4) {
                let p = usize::try_from((x >> (8 * k)) % m.len() as u64).unwrap();
                m[p] ^= u8::try_from((x >> 32) & 0xff).unwrap() | 1;
            }
            if let Ok(out) = decode(algo, &m, text.len() as u64, 4096, 0) {
                assert_eq!(out.len(), text.len());
            }
        }
    }

    #[test]
    fn lzo_framing_is_checked() {
        // Total length past the data, a segment past the total.
        assert!(decode(2, &[200, 0, 0, 0, 1], 10, 4096, 0).is_err());
        assert!(decode(2, &[9, 0, 0, 0, 100, 0, 0, 0, 1], 10, 4096, 0).is_err());
        assert!(decode(2, &[1, 0], 10, 4096, 0).is_err());
        // An empty frame decodes to zeros.
        assert_eq!(decode(2, &[4, 0, 0, 0], 3, 4096, 0).unwrap(), [0, 0, 0]);
    }
}
