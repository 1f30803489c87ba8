//! LVM2 guests built by tools/fixtures/72-lvm.sh with lvm2's own tools
//! (pvcreate + vgcfgrestore write the label and metadata; the ext4 root is
//! placed where `lvs --segments` says the LV's extents are).
//!
//! Expected values come from the source tree the filesystem was built from
//! and from the manifest, never from the reader.

use std::path::PathBuf;
use std::sync::Arc;

use imgcheck_guest::{FsKind, inspect_traced};
use imgcheck_source::{ByteSource, FileSource, SourceError};
use proptest::prelude::*;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"),
    }
}

/// (image, tree, notes) of every kind=lvm line.
fn fixtures() -> Vec<(PathBuf, Option<PathBuf>, String)> {
    let dir = fixtures_dir();
    let text = std::fs::read_to_string(dir.join("manifest.tsv"))
        .expect("manifest.tsv: run tools/gen-fixtures first");
    let out: Vec<_> = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&"lvm"))
        .map(|f| {
            let tree = (f[3] != "-").then(|| dir.join(f[3]));
            (dir.join(f[1]), tree, f.get(4).unwrap_or(&"").to_string())
        })
        .collect();
    assert!(
        out.len() >= 2,
        "no LVM fixtures: tools/fixtures/72-lvm.sh did not run"
    );
    out
}

fn open(p: &std::path::Path) -> Arc<dyn ByteSource> {
    Arc::new(FileSource::open(p).unwrap())
}

#[test]
fn root_on_a_logical_volume_is_found_and_read_like_a_partition() {
    let (img, tree, notes) = fixtures()
        .into_iter()
        .find(|f| f.2.contains("lv="))
        .unwrap();
    let tree = tree.unwrap();
    let (r, reads) = inspect_traced(open(&img));
    let ri = r.root.unwrap_or_else(|| panic!("no root: {:?}", r.notes));
    let root = &r.filesystems[ri];
    assert!(
        notes.contains(&format!("lv={}", root.lv.as_deref().unwrap_or("-"))),
        "{root:?}"
    );
    assert_eq!(root.kind, FsKind::Ext4);
    assert_eq!(r.guest.os.id.as_deref(), Some("debian"));
    assert!(r.guest.sshd.installed);
    // Every file the walk read is the file in the source tree (a prefix
    // for head reads of large binaries).
    assert!(reads.len() >= 5, "{} reads", reads.len());
    for f in &reads {
        let src = tree.join(f.fs_path.trim_start_matches('/'));
        let want = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(
            want.starts_with(&f.data),
            "{} differs from the tree",
            f.fs_path
        );
        assert!(!f.data.is_empty() || want.is_empty(), "{}", f.fs_path);
    }
}

#[test]
fn a_volume_group_missing_a_physical_volume_is_reported_not_guessed() {
    let (img, _, notes) = fixtures()
        .into_iter()
        .find(|f| f.2.contains("missing="))
        .unwrap();
    let pv = notes.trim_start_matches("missing=");
    let (r, _) = inspect_traced(open(&img));
    assert!(r.root.is_none());
    assert!(
        r.notes.iter().any(|n| n.contains(&format!("physical volume {pv}")) && n.contains("not on this disk")),
        "{:?}",
        r.notes
    );
    assert!(
        r.filesystems.iter().all(|f| f.lv.is_none()),
        "no LV may be guessed"
    );
}

/// A file with some bytes replaced, for mutation runs without copying it.
#[derive(Debug)]
struct Patched {
    inner: Arc<dyn ByteSource>,
    patches: Vec<(u64, u8)>,
}

impl ByteSource for Patched {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.inner.read_exact_at(offset, buf)?;
        for &(at, v) in &self.patches {
            if at >= offset && at - offset < buf.len() as u64 {
                buf[usize::try_from(at - offset).unwrap()] = v;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Mutations of the PV label sector and the metadata area (partition 2
    /// starts at 2 MiB; label in its sector 1, metadata area at +4 KiB)
    /// never panic and never make inspection read more than the image.
    #[test]
    fn mutated_lvm_metadata_never_panics(
        patches in prop::collection::vec((0u64..8192, any::<u8>()), 1..24)
    ) {
        let (img, _, _) = fixtures().into_iter().find(|f| f.2.contains("lv=")).unwrap();
        let base = open(&img);
        let patches = patches.into_iter().map(|(o, v)| (2 * 1024 * 1024 + 512 + o, v)).collect();
        let disk: Arc<dyn ByteSource> = Arc::new(Patched { inner: base, patches });
        let (r, _) = inspect_traced(disk);
        // Whatever was damaged, a report comes back; an LV, if any, has
        // its bytes inside the PV.
        for f in r.filesystems.iter().filter(|f| f.lv.is_some()) {
            prop_assert!(f.size <= 64 * 1024 * 1024);
        }
    }
}
