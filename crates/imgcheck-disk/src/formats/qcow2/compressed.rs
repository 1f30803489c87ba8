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

/// Raw deflate until `out` is full, with this thread's decoder (setting
/// one up allocates its state and window, a noticeable part of decoding one
/// 64 KiB cluster).
fn inflate(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use std::cell::RefCell;
    thread_local! {
        static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    }
    INFLATER.with(|d| match d.try_borrow_mut() {
        Ok(mut d) => {
            d.reset(false);
            inflate_with(&mut d, input, out)
        }
        Err(_) => inflate_with(&mut Decompress::new(false), input, out),
    })
}

fn inflate_with(d: &mut Decompress, input: &[u8], out: &mut [u8]) -> Result<(), String> {
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

/// zstd frames until `out` is full, with this thread's libzstd context.
///
/// libzstd rather than the pure-Rust ruzstd: profiling a zstd qcow2
/// conversion showed ruzstd spending about 70% of the time, roughly three
/// times what libzstd (qemu's decoder) needs; a compressed image is
/// decoded cluster by cluster on every core, so the decoder's speed is the
/// conversion's speed.
fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use std::cell::RefCell;
    use zstd_safe::DCtx;

    thread_local! {
        // One context per thread, reused: creating one allocates its
        // buffers, which costs as much as decoding a small cluster.
        static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
    }
    DCTX.with(|slot| match slot.try_borrow_mut() {
        Ok(mut slot) => {
            if slot.is_none() {
                *slot = Some(new_dctx()?);
            }
            match slot.as_mut() {
                Some(d) => unzstd_with(d, input, out),
                None => Err("zstd decoder could not be created".into()),
            }
        }
        Err(_) => unzstd_with(&mut new_dctx()?, input, out),
    })
}

/// A decoding context whose window is bounded by [`MAX_ZSTD_WINDOW`].
fn new_dctx() -> Result<zstd_safe::DCtx<'static>, String> {
    let mut d = zstd_safe::DCtx::try_create().ok_or("zstd decoder could not be created")?;
    d.set_parameter(zstd_safe::DParameter::WindowLogMax(
        MAX_ZSTD_WINDOW.trailing_zeros(),
    ))
    .map_err(|c| format!("zstd decoder setup: {}", zstd_safe::get_error_name(c)))?;
    Ok(d)
}

/// Streams `input` through `d` until `out` is full. libzstd moves from one
/// frame to the next (and over skippable frames) by itself; what follows
/// the last needed frame is padding up to the sector and never looked at.
fn unzstd_with(
    d: &mut zstd_safe::DCtx<'static>,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    use zstd_safe::{InBuffer, OutBuffer, ResetDirective};

    let total = out.len();
    // A new session (also clears an error left by a bad cluster); the
    // window bound is a parameter and stays.
    d.reset(ResetDirective::SessionOnly)
        .map_err(|c| format!("zstd decoder reset: {}", zstd_safe::get_error_name(c)))?;
    let mut src = InBuffer::around(input);
    let mut dst = OutBuffer::around(out);
    loop {
        let (i, o) = (src.pos(), dst.pos());
        d.decompress_stream(&mut dst, &mut src)
            .map_err(|c| format!("zstd data is invalid: {}", zstd_safe::get_error_name(c)))?;
        if dst.pos() >= total {
            return Ok(());
        }
        if src.pos() == i && dst.pos() == o {
            return Err(format!(
                "zstd data ends after {} of {total} bytes",
                dst.pos()
            ));
        }
    }
}
