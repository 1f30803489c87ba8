//! The XFS reader against the fixtures of tools/fixtures/70-xfs.sh: a
//! Rocky-like root built by mkfs.xfs (v5 and v4) from a source tree that
//! the script keeps next to the images (guests/xfs-rocky.tree).
//!
//! Expected values come from that tree (std::fs on the host) and from the
//! manifest notes, never from the reader: every regular file, symlink and
//! directory listing of the tree is compared with what the reader returns,
//! every file `inspect_traced` reads is compared with the tree's copy, and
//! mutated images (bytes flipped in the metadata the reader touched) must
//! give errors or reports, never a panic, a hang or a runaway read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use imgcheck_guest::fs::{self, GuestFs, Kind};
use imgcheck_guest::{FsKind, inspect, inspect_traced};
use imgcheck_source::{ByteSource, FileSource, SliceSource, SourceError};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"),
    }
}

/// (image path, notes) of the XFS guest fixtures; there must be v4 and v5.
fn xfs_fixtures() -> Vec<(PathBuf, BTreeMap<String, String>)> {
    let dir = fixtures_dir();
    let text = std::fs::read_to_string(dir.join("manifest.tsv"))
        .expect("manifest.tsv: run tools/gen-fixtures first");
    let out: Vec<_> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let notes: BTreeMap<String, String> = f
                .get(4)?
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            (f.first() == Some(&"guest") && notes.contains_key("xfs"))
                .then(|| (dir.join(f[1]), notes))
        })
        .collect();
    let versions: Vec<&str> = out.iter().map(|(_, n)| n["xfs"].as_str()).collect();
    assert!(
        versions.contains(&"v4") && versions.contains(&"v5"),
        "manifest lacks the XFS fixtures of tools/fixtures/70-xfs.sh: {versions:?}"
    );
    out
}

fn tree() -> PathBuf {
    let t = fixtures_dir().join("guests/xfs-rocky.tree");
    assert!(t.is_dir(), "{}: missing (70-xfs.sh keeps it)", t.display());
    t
}

/// The XFS partition of `disk` (found by inspect's probe) as a source.
fn xfs_part(disk: Arc<dyn ByteSource>) -> Arc<dyn ByteSource> {
    let r = inspect(disk.clone());
    let f = r
        .filesystems
        .iter()
        .find(|f| f.kind == FsKind::Xfs)
        .expect("no XFS filesystem found");
    Arc::new(SliceSource::new(disk, f.offset, f.size, "xfs"))
}

fn open_xfs(src: Arc<dyn ByteSource>) -> Rc<dyn GuestFs> {
    fs::open(FsKind::Xfs, src)
        .expect("fs::open has an XFS arm")
        .unwrap_or_else(|e| panic!("open: {e}"))
}

/// Every path under `root` (relative, with a leading "/"), sorted.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Differential: every file, link and directory of the tree equals what
/// the reader returns, on v5 and v4.
#[test]
fn every_file_equals_the_source_tree() {
    let t = tree();
    let paths = walk(&t);
    assert!(paths.len() > 4000, "tree has only {} paths", paths.len());
    for (img, notes) in xfs_fixtures() {
        let v = &notes["xfs"];
        let fs = open_xfs(xfs_part(Arc::new(FileSource::open(&img).unwrap())));
        let (mut files, mut links, mut dirs) = (0, 0, 0);
        for rel in &paths {
            let host = t.join(&rel[1..]);
            let md = std::fs::symlink_metadata(&host).unwrap();
            let kind = fs.lstat(rel).unwrap_or_else(|e| panic!("{v} {rel}: {e}"));
            if md.is_symlink() {
                assert_eq!(kind, Some(Kind::Symlink), "{v} {rel}");
                let want = std::fs::read_link(&host).unwrap();
                let got = fs.read_link(rel).unwrap();
                assert_eq!(got, want.as_os_str().as_encoded_bytes(), "{v} {rel}");
                links += 1;
            } else if md.is_dir() {
                assert_eq!(kind, Some(Kind::Dir), "{v} {rel}");
                let mut want: Vec<String> = std::fs::read_dir(&host)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                want.sort();
                let mut got = fs.read_dir(rel, 100_000).unwrap();
                got.sort();
                assert_eq!(got, want, "{v} {rel}");
                dirs += 1;
            } else {
                assert_eq!(kind, Some(Kind::File(md.len())), "{v} {rel}");
                let got = fs.read(rel, u64::MAX).unwrap();
                assert!(
                    got == std::fs::read(&host).unwrap(),
                    "{v} {rel}: content differs"
                );
                files += 1;
            }
        }
        eprintln!("{v}: {files} files, {links} links, {dirs} directories equal the tree");
        assert!(fs.lstat("/etc/nonexistent").unwrap().is_none());
        assert!(fs.lstat("/etc/os-release/below-a-file").unwrap().is_none());
    }
}

/// The big directories list exactly the tree's names, also when truncated,
/// and the fragmented file reads whole, holes as zeros, and in prefixes.
#[test]
fn big_directories_and_fragmented_file() {
    let t = tree();
    for (img, notes) in xfs_fixtures() {
        let v = &notes["xfs"];
        let fs = open_xfs(xfs_part(Arc::new(FileSource::open(&img).unwrap())));
        for d in [
            "/usr/share/bigdir",
            "/usr/share/nodedir",
            "/usr/share/leafdir",
            "/etc/blockdir",
        ] {
            let mut want: Vec<String> = std::fs::read_dir(t.join(&d[1..]))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            want.sort();
            let mut got = fs.read_dir(d, usize::MAX).unwrap();
            got.sort();
            assert_eq!(got, want, "{v} {d}");
            let some = fs.read_dir(d, 7).unwrap();
            assert_eq!(some.len(), 7, "{v} {d} truncated");
            assert!(some.iter().all(|n| want.contains(n)));
        }
        let want = std::fs::read(t.join("var/lib/frag.bin")).unwrap();
        assert_eq!(fs.read("/var/lib/frag.bin", u64::MAX).unwrap(), want, "{v}");
        for n in [1u64, 4095, 4096, 4097, 100_000, 3 << 20] {
            let got = fs.read("/var/lib/frag.bin", n).unwrap();
            assert_eq!(got, want[..usize::try_from(n).unwrap()], "{v} prefix {n}");
        }
        assert!(want[4096..8192].iter().all(|b| *b == 0));
    }
}

/// The facts: root, OS, cloud-init and sshd found as in the tree, and
/// every file inspection read equals the tree's (a prefix for header
/// reads); also through the qcow2 copy of the v5 disk.
#[test]
fn inspect_finds_the_rocky_root() {
    let t = tree();
    for (img, notes) in xfs_fixtures() {
        let v = &notes["xfs"];
        let src = Arc::new(FileSource::open(&img).unwrap());
        let (r, reads) = inspect_traced(src);
        let root = r
            .root
            .and_then(|i| r.filesystems.get(i))
            .expect("root found");
        assert_eq!(root.kind, FsKind::Xfs, "{v}");
        let g = &r.guest;
        assert_eq!(g.os.id.as_deref(), Some(notes["os"].as_str()), "{v}");
        assert_eq!(
            g.cloud_init.version.as_deref(),
            Some(notes["ci"].as_str()),
            "{v}"
        );
        assert_eq!(
            g.cloud_init.default_user.as_deref(),
            Some(notes["user"].as_str()),
            "{v}"
        );
        assert_eq!(g.sshd.enabled, Some(true), "{v}: {:?}", g.sshd);
        assert!(reads.len() >= 3, "{v}: only {} files read", reads.len());
        for f in &reads {
            let want = std::fs::read(t.join(&f.fs_path[1..]))
                .unwrap_or_else(|e| panic!("{v} {}: {e}", f.fs_path));
            assert!(
                want.starts_with(&f.data) && (f.data.len() == want.len() || f.data.len() == 64),
                "{v} {} ({}): {} bytes read, tree has {}",
                f.guest_path,
                f.fs_path,
                f.data.len(),
                want.len()
            );
        }
    }
    let q = fixtures_dir().join("qcow2/xfs-rocky-v5.qcow2");
    let file: Arc<dyn ByteSource> = Arc::new(FileSource::open(&q).unwrap());
    let disk = imgcheck_disk::open(file, &imgcheck_disk::OpenOptions::default()).unwrap();
    let r = inspect(Arc::new(disk));
    assert!(r.root.is_some(), "qcow2: {:?}", r.notes);
    assert_eq!(r.guest.os.id.as_deref(), Some("rocky"));
    assert_eq!(r.guest.cloud_init.version.as_deref(), Some("23.4"));
}

/// A source that records the ranges read and XORs chosen bytes.
#[derive(Debug)]
struct Mutated {
    inner: Arc<dyn ByteSource>,
    flips: Vec<(u64, u8)>,
    fetched: AtomicU64,
    ranges: Mutex<Vec<(u64, usize)>>,
}

impl Mutated {
    fn new(inner: Arc<dyn ByteSource>, flips: Vec<(u64, u8)>) -> Self {
        Self {
            inner,
            flips,
            fetched: AtomicU64::new(0),
            ranges: Mutex::new(Vec::new()),
        }
    }
}

impl ByteSource for Mutated {
    fn name(&self) -> &str {
        "mutated"
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.inner.read_exact_at(offset, buf)?;
        self.fetched.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.ranges.lock().unwrap().push((offset, buf.len()));
        for &(at, x) in &self.flips {
            let i = at.checked_sub(offset).and_then(|i| usize::try_from(i).ok());
            if let Some(b) = i.and_then(|i| buf.get_mut(i)) {
                *b ^= x;
            }
        }
        Ok(())
    }
}

/// Flips bytes in the metadata the reader reads (every read of at most
/// 64 KiB on a clean run: superblock, inodes, btree and directory
/// blocks), then inspects and walks: no panic, bounded time and bytes.
#[test]
fn mutations_never_panic_and_stay_bounded() {
    let iterations: u64 = std::env::var("XFS_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for (img, notes) in xfs_fixtures() {
        let v = &notes["xfs"];
        let disk: Arc<dyn ByteSource> = Arc::new(FileSource::open(&img).unwrap());
        let part = xfs_part(disk);
        let clean = Arc::new(Mutated::new(part.clone(), Vec::new()));
        exercise(clean.clone());
        let meta: Vec<(u64, usize)> = clean
            .ranges
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|r| r.1 <= 65536)
            .collect();
        assert!(meta.len() > 20, "{v}: only {} metadata reads", meta.len());
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut worst = (Duration::ZERO, 0u64);
        for _ in 0..iterations {
            let n = 1 + next() % 4;
            let flips = (0..n)
                .map(|_| {
                    let (off, len) = meta[usize::try_from(next() % meta.len() as u64).unwrap()];
                    {
                        // Half single-bit flips, half whole-byte changes
                        // (large counts and levels, not just off-by-a-bit).
                        let x = if next() % 2 == 0 {
                            1u8 << (next() % 8)
                        } else {
                            u8::try_from(next() % 255 + 1).unwrap()
                        };
                        (off + next() % len as u64, x)
                    }
                })
                .collect();
            let m = Arc::new(Mutated::new(part.clone(), flips));
            let t = Instant::now();
            exercise(m.clone());
            let took = t.elapsed();
            let bytes = m.fetched.load(Ordering::Relaxed);
            worst = (worst.0.max(took), worst.1.max(bytes));
            assert!(
                took < Duration::from_secs(10),
                "{v}: {took:?} for {:?}",
                m.flips
            );
            assert!(bytes < 512 << 20, "{v}: {bytes} bytes for {:?}", m.flips);
        }
        eprintln!(
            "{v}: {iterations} mutations, worst {:?} and {} KiB",
            worst.0,
            worst.1 >> 10
        );
    }
}

/// Opens the filesystem and does what the root finder does, and more.
fn exercise(src: Arc<dyn ByteSource>) {
    let Some(Ok(fs)) = fs::open(FsKind::Xfs, src) else {
        return;
    };
    for p in [
        "/etc/os-release",
        "/etc/cloud/cloud.cfg",
        "/var/lib/frag.bin",
        "/usr/lib/python3.9/site-packages/cloudinit/version.py",
    ] {
        let _ = fs.lstat(p);
        let _ = fs.read(p, 1 << 20);
    }
    for d in [
        "/",
        "/etc",
        "/usr/share/bigdir",
        "/usr/share/nodedir",
        "/usr/share/leafdir",
        "/etc/blockdir",
        "/etc/systemd/system/multi-user.target.wants",
    ] {
        let _ = fs.read_dir(d, 10_000);
    }
    for l in ["/etc/alternatives/longlink", "/lib", "/etc/redhat-release"] {
        let _ = fs.read_link(l);
    }
    let _ = fs.lstat("/usr/share/bigdir/python3-module-entry-number-2999.py");
}
