//! Shared helpers for the integration tests: the fixture manifest written by
//! tools/gen-fixtures, and running the built binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One line of testdata/generated/manifest.tsv.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// kind column (disk, guest, ...).
    pub kind: String,
    /// Absolute path of the image.
    pub path: PathBuf,
    /// Format imgcheck must report.
    pub format: String,
    /// Absolute path of qemu-img's raw conversion (empty if none).
    pub reference: Option<PathBuf>,
    /// Free-form notes.
    pub notes: String,
}

impl Fixture {
    /// Short name for messages.
    pub fn name(&self) -> String {
        self.path
            .strip_prefix(fixtures_dir())
            .unwrap_or(&self.path)
            .display()
            .to_string()
    }

    /// qemu-img's `info --output=json` recorded next to the image.
    pub fn qemu_info(&self) -> Option<serde_json::Value> {
        let p = PathBuf::from(format!("{}.qemu-info.json", self.path.display()));
        let text = std::fs::read_to_string(p).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The fixture directory (IMGCHECK_FIXTURES overrides).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("IMGCHECK_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"))
}

/// Every manifest line; panics (fails the test) when fixtures were not built.
pub fn manifest() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let text = std::fs::read_to_string(dir.join("manifest.tsv")).unwrap_or_else(|e| {
        panic!(
            "{}/manifest.tsv: {e}: run tools/gen-fixtures first (tools/test does)",
            dir.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let col = |i: usize| cols.get(i).copied().unwrap_or("").to_owned();
            let reference = col(3);
            Fixture {
                kind: col(0),
                path: dir.join(col(1)),
                format: col(2),
                reference: (!reference.is_empty()).then(|| dir.join(reference)),
                notes: col(4),
            }
        })
        .collect()
}

/// Manifest lines of one kind.
pub fn fixtures(kind: &str) -> Vec<Fixture> {
    let v: Vec<Fixture> = manifest().into_iter().filter(|f| f.kind == kind).collect();
    assert!(!v.is_empty(), "manifest has no {kind} fixtures");
    v
}

/// Runs the imgcheck binary.
pub fn imgcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .args(args)
        .output()
        .expect("run imgcheck")
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}
