//! Every disk fixture, every reader, against qemu-img.
//!
//! For each `kind=disk` line of the fixture manifest: `imgcheck info`
//! reports qemu-img's format and virtual size; the guest bytes read through
//! the virtual disk and the output of `imgcheck convert -O raw` both have the
//! SHA-256 of `qemu-img convert -O raw`; random reads equal the same range of
//! the reference; truncated and bit-flipped views of the image give Ok or Err,
//! never a panic.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Fixture, fixtures, imgcheck, sha256_file};
use imgcheck::source::{ByteSource, FileSource, SourceError};
use proptest::prelude::*;

/// Opens a fixture once per test process: a compressed fixture's open is a
/// full decoding pass, which the many random-read cases should not repeat.
fn open(f: &Fixture) -> imgcheck::Input {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPENED: OnceLock<Mutex<HashMap<std::path::PathBuf, imgcheck::Input>>> = OnceLock::new();
    let cache = OPENED.get_or_init(Default::default);
    if let Some(i) = cache.lock().unwrap().get(&f.path) {
        return i.clone();
    }
    let input = imgcheck::open(f.path.to_str().unwrap(), &Default::default())
        .unwrap_or_else(|e| panic!("{}: open failed: {e}", f.name()));
    cache.lock().unwrap().insert(f.path.clone(), input.clone());
    input
}

#[test]
fn info_matches_qemu_img() {
    let mut failures = Vec::new();
    for f in fixtures("disk") {
        let out = imgcheck(&["info", "--json", f.path.to_str().unwrap()]);
        if !out.status.success() {
            failures.push(format!(
                "{}: exit {:?}: {}",
                f.name(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let ours: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("info --json is JSON");
        let qemu = f
            .qemu_info()
            .unwrap_or_else(|| panic!("{}: qemu-info.json missing", f.name()));
        if ours["format"] != serde_json::json!(f.format) {
            failures.push(format!(
                "{}: format {} != {}",
                f.name(),
                ours["format"],
                f.format
            ));
        }
        if ours["virtual-size"] != qemu["virtual-size"] {
            failures.push(format!(
                "{}: virtual-size {} != qemu {}",
                f.name(),
                ours["virtual-size"],
                qemu["virtual-size"]
            ));
        }
        for key in ["cluster-size", "backing-filename"] {
            if qemu.get(key).is_some() && ours.get(key) != qemu.get(key) {
                failures.push(format!(
                    "{}: {key} {:?} != qemu {:?}",
                    f.name(),
                    ours.get(key),
                    qemu.get(key)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn guest_bytes_equal_qemu_img_convert() {
    let mut failures = Vec::new();
    for f in fixtures("disk") {
        let Some(reference) = &f.reference else {
            continue;
        };
        let input = match imgcheck::open(f.path.to_str().unwrap(), &Default::default()) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: open: {e}", f.name()));
                continue;
            }
        };
        let want = sha256_file(reference);
        // Read through the library, 1 MiB at a time.
        let got = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            let size = input.disk.virtual_size();
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            let mut err = None;
            while off < size {
                let n = (size - off).min(buf.len() as u64) as usize;
                if let Err(e) = input.disk.read_at(off, &mut buf[..n]) {
                    err = Some(e.to_string());
                    break;
                }
                h.update(&buf[..n]);
                off += n as u64;
            }
            match err {
                Some(e) => format!("read error: {e}"),
                None => format!("{:x}", h.finalize()),
            }
        };
        if got != want {
            failures.push(format!(
                "{}: library read sha256 {got} != qemu-img {want}",
                f.name()
            ));
            continue;
        }
        // And through `imgcheck convert -O raw`.
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out.raw");
        let out = imgcheck(&[
            "convert",
            "-O",
            "raw",
            f.path.to_str().unwrap(),
            out_path.to_str().unwrap(),
        ]);
        if !out.status.success() {
            failures.push(format!(
                "{}: convert failed: {}",
                f.name(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let got = sha256_file(&out_path);
        if got != want {
            failures.push(format!(
                "{}: convert -O raw sha256 {got} != qemu-img {want}",
                f.name()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random reads through the virtual disk equal the same range of the
    /// reference raw.
    #[test]
    fn random_reads_equal_reference(pick in any::<prop::sample::Index>(), at in 0.0f64..1.0, len in 1usize..300_000) {
        let all: Vec<Fixture> = fixtures("disk").into_iter().filter(|f| f.reference.is_some()).collect();
        let f = pick.get(&all);
        let input = open(f);
        let size = input.disk.virtual_size();
        prop_assume!(size > 0);
        let off = ((size as f64) * at) as u64 % size;
        let n = len.min((size - off) as usize);
        let mut ours = vec![0u8; n];
        input.disk.read_at(off, &mut ours).map_err(|e| TestCaseError::fail(format!("{}: {e}", f.name())))?;
        let mut theirs = vec![0u8; n];
        std::fs::File::open(f.reference.as_ref().unwrap()).unwrap().read_exact_at(&mut theirs, off).unwrap();
        prop_assert!(ours == theirs, "{}: bytes differ at {off}+{n}", f.name());
    }

    /// Truncated and bit-flipped views of every fixture: Ok or Err, never a
    /// panic (a panic fails the test), and reads stay bounded: opening,
    /// walking up to 10,000 extents and eight 64 KiB reads fetch at most
    /// four times the file plus 64 MiB (eight reads that each decode one
    /// compressed cluster of at most 2 MiB, the largest qcow2 cluster, fit
    /// easily). A damaged table that made a reader loop or fetch without
    /// limit would exceed it.
    #[test]
    fn damaged_images_never_panic(pick in any::<prop::sample::Index>(), cut in 0.0f64..1.0, flip_at in 0.0f64..1.0, bit in 0u8..8, head in any::<bool>(), truncate in any::<bool>()) {
        let all = fixtures("disk");
        let f = pick.get(&all);
        let file = Arc::new(FileSource::open(&f.path).unwrap());
        let len = file.len();
        // Flip mostly in the metadata-dense first 64 KiB.
        let span = if head { len.min(64 << 10) } else { len };
        let flip = ((span as f64) * flip_at) as u64;
        let new_len = if truncate { ((len as f64) * cut) as u64 } else { len };
        let fetched = Arc::new(AtomicU64::new(0));
        let damaged: Arc<dyn ByteSource> = Arc::new(Damaged { inner: file, len: new_len, flip, bit, fetched: fetched.clone() });
        if let Ok(disk) = imgcheck::disk::open(damaged, &Default::default()) {
            let size = disk.virtual_size();
            for e in disk.extents(0, size).take(10_000) {
                if e.is_err() { break; }
            }
            let mut buf = vec![0u8; 65536];
            for i in 0..8u64 {
                let off = size / 8 * i;
                let n = (size - off).min(buf.len() as u64) as usize;
                if n > 0 { let _ = disk.read_at(off, &mut buf[..n]); }
            }
        }
        let bound = len.saturating_mul(4).saturating_add(64 << 20);
        let got = fetched.load(Ordering::Relaxed);
        prop_assert!(got <= bound, "{}: fetched {got} bytes of a {len}-byte file (bound {bound})", f.name());
    }
}

/// A view of a file that is shorter than it and has one bit flipped.
#[derive(Debug)]
struct Damaged {
    inner: Arc<FileSource>,
    len: u64,
    flip: u64,
    bit: u8,
    /// Bytes read through this view (sibling files not counted).
    fetched: Arc<AtomicU64>,
}

impl ByteSource for Damaged {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        imgcheck::source::check_range(self.name(), offset, buf.len(), self.len)?;
        self.fetched.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_exact_at(offset, buf)?;
        if self.flip >= offset && self.flip < offset + buf.len() as u64 {
            buf[(self.flip - offset) as usize] ^= 1 << self.bit;
        }
        Ok(())
    }
    fn open_sibling(&self, name: &str) -> Result<Arc<dyn ByteSource>, SourceError> {
        self.inner.open_sibling(name)
    }
}
