//! Compressed qcow2 clusters: raw deflate (compression type 0, zlib) and
//! zstd (type 1).
//!
//! A compressed L2 entry gives a host *byte* offset and a count of 512-byte
//! sectors; the data ends somewhere in the last sector (the next compressed
//! cluster may start in the same sector), so decoding stops as soon as one
//! cluster has been produced, exactly like qemu (`qcow2-threads.c`): for
//! deflate, `Z_BUF_ERROR` with a full output counts as success; for zstd,
//! frames are decoded one after another until the cluster is full. Data
//! that ends before the cluster is full is corrupt.
//!
//! Decoding a whole cluster to return a few bytes is wasteful when a reader
//! walks a cluster in small pieces, so the last few decoded clusters are
//! kept (behind a mutex: conversion reads from many threads). Whole-cluster
//! reads decode straight into the caller's buffer and skip the cache.

use std::sync::Arc;

use flate2::{Decompress, FlushDecompress, Status};
use imgcheck_source::read_vec;

use super::header::Compression;
use super::{L2_COMPRESSED, Qcow2Image, STRUCT_L2};
use crate::error::{DiskError, corrupt};

/// A decoded cluster.
pub(super) type Decoded = Arc<Vec<u8>>;

const STRUCT: &str = "qcow2 compressed cluster";

/// Largest zstd window accepted: qemu compresses one cluster (≤ 2 MiB) per
/// frame, so its frames never need more; a hostile frame asking for more
/// would only make the decoder allocate.
const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// Fills `buf` with guest bytes from `guest_offset`, all in compressed
/// clusters.
pub(super) fn read(img: &Qcow2Image, guest_offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
    let cs = img.cluster_size();
    let mut done = 0usize;
    while done < buf.len() {
        let pos = guest_offset.saturating_add(done as u64);
        let cluster = pos >> img.cluster_bits;
        let within = pos & (cs - 1);
        // within < cs <= 2 MiB.
        let n = usize::try_from(cs - within)
            .unwrap_or(usize::MAX)
            .min(buf.len() - done);
        let Some(dst) = buf.get_mut(done..done + n) else {
            break;
        };
        if within == 0 && n as u64 == cs {
            decode_cluster(img, pos, dst)?;
        } else {
            let hit = img
                .decoded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(cluster);
            let data = match hit {
                Some(d) => d,
                None => {
                    let mut v = vec![0u8; usize::try_from(cs).unwrap_or(n)];
                    decode_cluster(img, pos - within, &mut v)?;
                    let d: Decoded = Arc::new(v);
                    img.decoded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .put(cluster, d.clone());
                    d
                }
            };
            let w = usize_of(within);
            match data.get(w..w + n) {
                Some(s) => dst.copy_from_slice(s),
                None => {
                    return Err(corrupt(
                        img.name(),
                        STRUCT,
                        pos,
                        "decoded cluster is shorter than asked",
                    ));
                }
            }
        }
        done += n;
    }
    Ok(())
}

/// Decodes the compressed cluster starting at guest offset `cluster_pos`
/// into `out` (one cluster long).
fn decode_cluster(img: &Qcow2Image, cluster_pos: u64, out: &mut [u8]) -> Result<(), DiskError> {
    let (idx, e) = img.entry_at(cluster_pos)?;
    if e & L2_COMPRESSED == 0 {
        return Err(corrupt(
            img.name(),
            STRUCT_L2,
            cluster_pos,
            format!("entry {idx} for guest offset {cluster_pos} is not compressed any more"),
        ));
    }
    let (off, len) = img
        .compressed_extent(e)
        .map_err(|why| corrupt(img.name(), STRUCT, cluster_pos, why))?;
    // len <= 2 * cluster size (sector count is cluster_bits - 8 bits wide).
    let input = read_vec(img.source.as_ref(), off, len, 2 * img.cluster_size() + 512)?;
    let bad = |why: String| {
        corrupt(
            img.name(),
            STRUCT,
            off,
            format!("cluster at guest offset {cluster_pos}: {why}"),
        )
    };
    match img.compression {
        Compression::Zlib => inflate(&input, out).map_err(bad),
        Compression::Zstd => unzstd(&input, out).map_err(bad),
    }
}

/// A byte count that is bounded by a buffer length, as usize.
fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Raw deflate until `out` is full.
fn inflate(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut d = Decompress::new(false);
    loop {
        let (i, o) = (usize_of(d.total_in()), usize_of(d.total_out()));
        let (Some(src), Some(dst)) = (input.get(i..), out.get_mut(o..)) else {
            return Err("deflate decoder overran its buffers".into());
        };
        let st = d
            .decompress(src, dst, FlushDecompress::Finish)
            .map_err(|e| format!("deflate data is invalid: {e}"))?;
        let produced = usize_of(d.total_out());
        if produced >= out.len() {
            return Ok(());
        }
        let progressed = usize_of(d.total_in()) != i || produced != o;
        match st {
            Status::StreamEnd => {
                return Err(format!(
                    "deflate data ends after {produced} of {} bytes",
                    out.len()
                ));
            }
            _ if !progressed => {
                return Err(format!(
                    "deflate data runs out after {produced} of {} bytes",
                    out.len()
                ));
            }
            _ => {}
        }
    }
}

/// zstd frames until `out` is full.
fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use ruzstd::decoding::FrameDecoder;
    use std::cell::RefCell;

    thread_local! {
        // One decoder per thread, reused: setting one up allocates its
        // buffers, which costs as much as decoding a small cluster.
        static DECODER: RefCell<FrameDecoder> = RefCell::new({
            let mut d = FrameDecoder::new();
            d.set_max_window_size(MAX_ZSTD_WINDOW);
            d
        });
    }
    DECODER.with(|d| match d.try_borrow_mut() {
        Ok(mut d) => unzstd_with(&mut d, input, out),
        Err(_) => unzstd_with(&mut FrameDecoder::new(), input, out),
    })
}

fn unzstd_with(
    decoder: &mut ruzstd::decoding::FrameDecoder,
    mut input: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    use ruzstd::decoding::StreamingDecoder;
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    use std::io::Read;

    decoder.set_max_window_size(MAX_ZSTD_WINDOW);
    let mut filled = 0usize;
    while filled < out.len() {
        if input.is_empty() {
            return Err(format!(
                "zstd data ends after {filled} of {} bytes",
                out.len()
            ));
        }
        let mut dec = match StreamingDecoder::new_with_decoder(&mut input, &mut *decoder) {
            Ok(d) => d,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                input = input.get(length as usize..).unwrap_or(&[]);
                continue;
            }
            Err(e) => return Err(format!("zstd frame header is invalid: {e}")),
        };
        while let Some(dst) = out.get_mut(filled..) {
            if dst.is_empty() {
                break;
            }
            let n = dec
                .read(dst)
                .map_err(|e| format!("zstd data is invalid: {e}"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
    }
    Ok(())
}
