//! raw: guest byte N is file byte N.
//!
//! Holes of a sparse file map as [`MapKind::Zero`] (the source answers
//! `SEEK_DATA`/`SEEK_HOLE`, see [`ByteSource::sparse_run`]), the way
//! `qemu-img map` reports them (`"zero": true, "data": false`), so reads
//! fill them without touching the file and conversion skips them.
//!
//! The last run the source reported is remembered: conversion asks about
//! every chunk of a data run (and again for each read inside it), and a
//! run of hundreds of MiB is then one or two `lseek`s instead of thousands.

use std::sync::{Arc, Mutex};

use imgcheck_source::{ByteSource, SparseRun};

use crate::context::OpenContext;
use crate::disk::{DiskImage, DiskInfo, MapKind, Mapping};
use crate::error::DiskError;
use crate::format::Format;

/// A raw image.
#[derive(Debug)]
pub struct RawImage {
    source: Arc<dyn ByteSource>,
    info: DiskInfo,
    /// The last run reported: it holds from the offset asked to its end.
    last: Mutex<Option<(u64, SparseRun)>>,
}

/// Opens `ctx.source` as raw. Never fails: every byte string is a raw disk.
pub fn open(ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>, DiskError> {
    let info = DiskInfo::new(Format::Raw, ctx.source.len());
    Ok(Arc::new(RawImage {
        source: ctx.source.clone(),
        info,
        last: Mutex::new(None),
    }))
}

impl RawImage {
    /// The source's run at `offset`, from the remembered one when it
    /// covers `offset`.
    fn sparse_run(&self, offset: u64) -> Option<SparseRun> {
        let remembered = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((from, run)) = remembered
            && (from..run.end).contains(&offset)
        {
            return Some(run);
        }
        // Not under the lock: other threads keep using the old run.
        let run = self.source.sparse_run(offset)?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((offset, run));
        Some(run)
    }
}

impl DiskImage for RawImage {
    fn info(&self) -> &DiskInfo {
        &self.info
    }

    fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let data = MapKind::Data {
            file: 0,
            host_offset: guest_offset,
        };
        let Some(run) = self.sparse_run(guest_offset) else {
            return Ok(Mapping {
                kind: data,
                len: max_len,
            });
        };
        // `sparse_run` keeps `end` in offset+1..=len.
        let len = run.end.saturating_sub(guest_offset).clamp(1, max_len);
        Ok(Mapping {
            kind: if run.data { data } else { MapKind::Zero },
            len,
        })
    }

    fn host_file(&self, index: usize) -> Option<&dyn ByteSource> {
        (index == 0).then_some(self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    use imgcheck_source::FileSource;

    use crate::{MapKind, OpenOptions, VirtualDisk};

    /// (start, length, data) runs from `qemu-img map --output=json`,
    /// neighbours with the same `data` flag merged.
    fn qemu_map(path: &std::path::Path) -> Vec<(u64, u64, bool)> {
        let out = Command::new("qemu-img")
            .args(["map", "--output=json", "-f", "raw"])
            .arg(path)
            .output()
            .expect("qemu-img (tools/install-deps)");
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        for e in v.as_array().unwrap() {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            let d = e["data"].as_bool().unwrap();
            match runs.last_mut() {
                Some(r) if r.2 == d && r.0 + r.1 == s => r.1 += l,
                _ => runs.push((s, l, d)),
            }
        }
        runs
    }

    fn our_map(disk: &VirtualDisk) -> Vec<(u64, u64, bool)> {
        disk.extents(0, disk.virtual_size())
            .map(|e| {
                let e = e.unwrap();
                assert!(matches!(e.kind, MapKind::Data { .. } | MapKind::Zero));
                (
                    e.guest_offset,
                    e.len,
                    matches!(e.kind, MapKind::Data { .. }),
                )
            })
            .collect()
    }

    #[test]
    fn holes_map_as_qemu_img_map_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.raw");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        let block = vec![0xa5u8; 1 << 20];
        // Data at the start, in the middle (two touching writes), and at
        // the very end; holes between.
        for off in [0u64, 10 << 20, 11 << 20, 40 << 20, (64 << 20) - (1 << 20)] {
            f.write_all_at(&block, off).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        let disk = crate::open(
            std::sync::Arc::new(FileSource::open(&path).unwrap()),
            &OpenOptions::default(),
        )
        .unwrap();
        let ours = our_map(&disk);
        assert_eq!(ours, qemu_map(&path));
        assert!(ours.iter().any(|r| !r.2), "no hole found: {ours:?}");
        // Holes read as zeros, data as written, without reading the holes.
        let mut buf = vec![1u8; 12 << 20];
        let before = disk.bytes_fetched();
        disk.read_at(0, &mut buf).unwrap();
        assert!(buf[..1 << 20].iter().all(|&b| b == 0xa5));
        assert!(buf[1 << 20..10 << 20].iter().all(|&b| b == 0));
        assert!(buf[10 << 20..].iter().all(|&b| b == 0xa5));
        assert_eq!(disk.bytes_fetched() - before, 3 << 20);
    }
}
