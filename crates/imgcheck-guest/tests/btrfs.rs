//! The btrfs reader against the fixtures of tools/fixtures/71-btrfs.sh,
//! which mkfs.btrfs and the kernel's btrfs driver built (Fedora's
//! root/home layout, openSUSE's @ + snapshot default, zlib/lzo/zstd
//! compressed, inline, sparse and preallocated files, a long symlink).
//!
//! Expected values never come from the reader: file contents from the
//! source trees the fixture script copied out of the mounted filesystem
//! ($OUT/btrfs/NAME.src/SUBVOLUME/), subvolume names and ids from
//! `btrfs subvolume list`, the default subvolume from `set-default`.

// Offsets and lengths here are of the fixture images (well under 4 GiB).
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use imgcheck_guest::fs::{self, GuestFs, Kind};
use imgcheck_guest::{FsKind, GuestReport, inspect, inspect_traced};
use imgcheck_source::{ByteSource, FileSource, SliceSource, SourceError};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"),
    }
}

fn image(name: &str) -> (PathBuf, Arc<FileSource>) {
    let p = fixtures_dir().join(format!("guests/{name}.img"));
    let src = FileSource::open(&p)
        .unwrap_or_else(|e| panic!("{}: {e}: run tools/gen-fixtures (71-btrfs.sh)", p.display()));
    (p, Arc::new(src))
}

fn side_file(name: &str, ext: &str) -> String {
    let p = fixtures_dir().join(format!("btrfs/{name}.{ext}"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (path, id) per subvolume, as `btrfs subvolume list` gave them.
fn subvolumes(name: &str) -> Vec<(String, u64)> {
    side_file(name, "subvolumes")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, id)| (p.to_owned(), id.parse().unwrap()))
        .collect()
}

fn src_dir(name: &str) -> PathBuf {
    fixtures_dir().join(format!("btrfs/{name}.src"))
}

/// The btrfs filesystem of a fixture disk, at its default subvolume.
fn open_fs(r: &GuestReport, disk: &Arc<FileSource>) -> Rc<dyn GuestFs> {
    let f = r
        .filesystems
        .iter()
        .find(|f| f.kind == FsKind::Btrfs)
        .expect("a btrfs filesystem");
    let d: Arc<dyn ByteSource> = disk.clone();
    let slice = Arc::new(SliceSource::new(d, f.offset, f.size, "btrfs"));
    fs::open(FsKind::Btrfs, slice)
        .expect("btrfs is read")
        .expect("opens")
}

/// Every file, symlink and directory under `dir` (the source tree of one
/// subvolume) equals what the reader gives for the same path in `view`.
/// Returns how many entries were compared.
fn compare_tree(view: &dyn GuestFs, dir: &Path, rel: &str, bad: &mut Vec<String>) -> usize {
    let mut n = 0;
    let mut want_names = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let path = format!("{rel}/{name}");
        let ft = e.file_type().unwrap();
        want_names.insert(name);
        n += 1;
        let got = view.lstat(&path);
        if ft.is_symlink() {
            let want = std::fs::read_link(e.path()).unwrap();
            let got_t = view.read_link(&path).map(|t| String::from_utf8(t).unwrap());
            if got.ok().flatten() != Some(Kind::Symlink) || got_t.as_deref().ok() != want.to_str() {
                bad.push(format!("{path}: symlink {want:?}, got {got_t:?}"));
            }
        } else if ft.is_dir() {
            if got.ok().flatten() != Some(Kind::Dir) {
                bad.push(format!("{path}: not a directory"));
                continue;
            }
            n += compare_tree(view, &e.path(), &path, bad);
        } else {
            let want = std::fs::read(e.path()).unwrap();
            let got_k = got.ok().flatten();
            let got_d = view.read(&path, u64::MAX);
            if got_k != Some(Kind::File(want.len() as u64))
                || got_d.as_deref().ok() != Some(&want[..])
            {
                bad.push(format!(
                    "{path}: {} bytes in the source, reader: {got_k:?}, {:?}",
                    want.len(),
                    got_d.map(|d| d.len())
                ));
            }
        }
    }
    let listed: BTreeSet<String> = view
        .read_dir(if rel.is_empty() { "/" } else { rel }, 100_000)
        .unwrap_or_default()
        .into_iter()
        .collect();
    // Subvolumes nested in this one show up as directories in both.
    if listed != want_names {
        bad.push(format!(
            "{rel}/: lists {listed:?}, source has {want_names:?}"
        ));
    }
    n
}

/// A file read by the walk must equal the same file in the one source
/// subvolume tree that holds its filesystem path (a prefix for the walk's
/// 64-byte header reads).
fn check_trace(name: &str, reads: &[imgcheck_guest::FileRead], bad: &mut Vec<String>) {
    let subs: Vec<PathBuf> = subvolumes(name)
        .into_iter()
        .map(|(p, _)| src_dir(name).join(p))
        .filter(|p| p.is_dir())
        .collect();
    assert!(!reads.is_empty(), "{name}: the walk read no file");
    for f in reads {
        let holders: Vec<&PathBuf> = subs
            .iter()
            .filter(|s| s.join(f.fs_path.trim_start_matches('/')).is_file())
            .collect();
        let [holder] = holders[..] else {
            bad.push(format!(
                "{name}: {} is in {} source subvolumes",
                f.fs_path,
                holders.len()
            ));
            continue;
        };
        let theirs = std::fs::read(holder.join(f.fs_path.trim_start_matches('/'))).unwrap();
        let ok = theirs.starts_with(&f.data)
            && (f.data.len() == theirs.len() || f.data.len() == 64.min(theirs.len()));
        if !ok {
            bad.push(format!(
                "{name}: {} ({}): {} bytes read, source has {}",
                f.guest_path,
                f.fs_path,
                f.data.len(),
                theirs.len()
            ));
        }
    }
}

fn timed_inspect(name: &str) -> (GuestReport, Vec<imgcheck_guest::FileRead>, Arc<FileSource>) {
    let (_, src) = image(name);
    let t = Instant::now();
    let (r, reads) = inspect_traced(src.clone());
    eprintln!(
        "{name}: {} KiB fetched, {:.1} ms, {} files read",
        src.bytes_fetched() / 1024,
        t.elapsed().as_secs_f64() * 1e3,
        reads.len()
    );
    (r, reads, src)
}

#[test]
fn fedora_root_is_found_in_the_root_subvolume() {
    let (r, reads, disk) = timed_inspect("fedora-btrfs");
    let root = r
        .root
        .and_then(|i| r.filesystems.get(i))
        .expect("root found");
    assert_eq!(root.kind, FsKind::Btrfs);
    assert!(
        r.notes.iter().any(|n| n.contains("subvol=root")),
        "{:?}",
        r.notes
    );
    let g = &r.guest;
    assert_eq!(g.os.id.as_deref(), Some("fedora"));
    assert_eq!(g.cloud_init.version.as_deref(), Some("24.1.4"));
    assert_eq!(
        g.cloud_init.version_source.as_deref(),
        Some("/usr/lib/python3.12/site-packages/cloudinit/version.py")
    );
    assert!(
        g.sshd.installed && g.sshd.enabled == Some(true),
        "{:?}",
        g.sshd
    );
    let mut bad = Vec::new();
    check_trace("fedora-btrfs", &reads, &mut bad);
    assert!(bad.is_empty(), "{}", bad.join("\n"));

    // The default view is the top level; its alternates are exactly what
    // `btrfs subvolume list` lists.
    let top = open_fs(&r, &disk);
    let alt: Vec<String> = top.alternate_roots().into_iter().map(|(n, _)| n).collect();
    let want: Vec<String> = subvolumes("fedora-btrfs")
        .into_iter()
        .map(|(p, _)| format!("subvol={p}"))
        .collect();
    assert_eq!(alt, want);
    let mut names = top.read_dir("/", 100).unwrap();
    names.sort();
    assert_eq!(names, ["home", "root"]);
}

#[test]
fn opensuse_root_is_the_default_subvolume_and_boot_its_fstab_subvol() {
    let (r, reads, disk) = timed_inspect("opensuse-btrfs");
    assert!(r.root.is_some(), "{:?}", r.notes);
    assert!(
        !r.notes.iter().any(|n| n.contains("root is subvol")),
        "the default subvolume is the root: {:?}",
        r.notes
    );
    let g = &r.guest;
    assert_eq!(g.os.id.as_deref(), Some("opensuse-leap"));
    assert_eq!(g.cloud_init.version.as_deref(), Some("24.1.4"));
    assert!(
        g.sshd.installed && g.sshd.enabled == Some(true),
        "{:?}",
        g.sshd
    );
    // The kernels live in @/boot, mounted at /boot by fstab's subvol=.
    assert!(
        g.boot.kernels.iter().any(|k| k.contains("6.8.5-301")),
        "{:?}",
        g.boot
    );
    let mut bad = Vec::new();
    check_trace("opensuse-btrfs", &reads, &mut bad);
    assert!(bad.is_empty(), "{}", bad.join("\n"));

    let view = open_fs(&r, &disk);
    let default_id: u64 = side_file("opensuse-btrfs", "default-id")
        .trim()
        .parse()
        .unwrap();
    // Options that name the default subvolume select this very view.
    for o in [
        format!("subvolid={default_id}"),
        "subvol=@/.snapshots/1/snapshot".to_owned(),
        "subvol=/@/.snapshots/1/snapshot,compress=zstd".to_owned(),
        "defaults".to_owned(),
    ] {
        assert!(view.with_mount_options(&o).unwrap().is_none(), "{o}");
    }
    for o in [
        "subvol=@/nope",
        "subvol=@/.snapshots/1",
        "subvolid=999",
        "subvolid=x",
    ] {
        assert!(view.with_mount_options(o).is_err(), "{o}");
    }
}

/// Every subvolume of both fixtures, selected by fstab's `subvol=` and by
/// `subvolid=`, reads exactly like its source tree: all files (each
/// compressed one whole), symlinks (the 2994-byte one too), directories.
#[test]
fn every_subvolume_equals_its_source_tree() {
    for name in ["fedora-btrfs", "opensuse-btrfs"] {
        let (_, disk) = image(name);
        let r = inspect(disk.clone());
        let top = open_fs(&r, &disk);
        let mut compared = 0;
        for (path, id) in subvolumes(name) {
            let dir = src_dir(name).join(&path);
            if !dir.is_dir() {
                continue;
            }
            for opt in [format!("subvol={path}"), format!("subvolid={id}")] {
                let view = top
                    .with_mount_options(&opt)
                    .unwrap_or_else(|e| panic!("{name} {opt}: {e}"))
                    .unwrap_or_else(|| top.clone());
                let mut bad = Vec::new();
                compared += compare_tree(view.as_ref(), &dir, "", &mut bad);
                assert!(bad.is_empty(), "{name} {opt}:\n{}", bad.join("\n"));
            }
        }
        assert!(compared > 100, "{name}: only {compared} entries compared");
        // The compressed files really are among them, read whole.
        let list = side_file(name, "compressed");
        let algos: BTreeSet<&str> = list.lines().filter_map(|l| l.split('\t').nth(2)).collect();
        assert_eq!(algos, BTreeSet::from(["lzo", "zlib", "zstd"]));
        for l in list.lines() {
            let mut f = l.split('\t');
            let (sub, path) = (f.next().unwrap(), f.next().unwrap());
            let view = top
                .with_mount_options(&format!("subvol={sub}"))
                .unwrap()
                .unwrap_or_else(|| top.clone());
            let want = std::fs::read(src_dir(name).join(sub).join(&path[1..])).unwrap();
            assert_eq!(view.read(path, u64::MAX).unwrap(), want, "{name} {path}");
            // A bounded read reads a prefix.
            assert_eq!(view.read(path, 1000).unwrap(), want[..1000.min(want.len())]);
        }
    }
}

/// Bytes read and time of a whole inspection, beside the ext4 guest: a
/// btrfs check must read about as little.
#[test]
fn reads_about_as_little_as_ext4() {
    let (_, ext) = image("good");
    let t = Instant::now();
    let r = inspect(ext.clone());
    let ext_time = t.elapsed();
    assert!(r.root.is_some());
    let ext_bytes = ext.bytes_fetched();
    for name in ["fedora-btrfs", "opensuse-btrfs"] {
        let (_, src) = image(name);
        let t = Instant::now();
        let r = inspect(src.clone());
        let took = t.elapsed();
        assert!(r.root.is_some());
        let bytes = src.bytes_fetched();
        eprintln!(
            "{name}: {} KiB in {:.1} ms; ext4 good.img: {} KiB in {:.1} ms",
            bytes / 1024,
            took.as_secs_f64() * 1e3,
            ext_bytes / 1024,
            ext_time.as_secs_f64() * 1e3
        );
        assert!(
            bytes <= 2 * ext_bytes + (1 << 20),
            "{name}: {bytes} bytes read, ext4 reads {ext_bytes}"
        );
    }
}

/// A source that serves a base image with some bytes replaced, counting
/// what it serves (and, when asked, logging where it read).
#[derive(Debug)]
struct Patched {
    base: Arc<dyn ByteSource>,
    patches: Vec<(u64, Vec<u8>)>,
    served: AtomicU64,
    reads: Option<std::sync::Mutex<Vec<u64>>>,
}

impl ByteSource for Patched {
    fn name(&self) -> &str {
        "patched"
    }
    fn len(&self) -> u64 {
        self.base.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.base.read_exact_at(offset, buf)?;
        self.served.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Some(r) = &self.reads {
            r.lock().unwrap().push(offset);
        }
        let end = offset + buf.len() as u64;
        for (at, bytes) in &self.patches {
            let pend = at + bytes.len() as u64;
            if *at < end && pend > offset {
                let lo = (*at).max(offset);
                let hi = pend.min(end);
                let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
                dst.copy_from_slice(&bytes[(lo - at) as usize..(hi - at) as usize]);
            }
        }
        Ok(())
    }
}

/// xorshift64*: a fixed-seed generator so every run mutates the same way.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Mutates the metadata of both fixtures — bytes of the superblock and of
/// live tree nodes, with their crc32c fixed up so the mutation gets past
/// the checksum into the parsers — and inspects each mutant: never a
/// panic, each inspection bounded in time and in bytes read.
#[test]
fn mutated_metadata_never_panics_and_stays_bounded() {
    for name in ["fedora-btrfs", "opensuse-btrfs"] {
        mutate(name, 1000);
    }
}

fn mutate(name: &str, iterations: usize) {
    let (_, disk) = image(name);
    let part_start = 4096 * 512u64;
    let read = |off: u64, n: usize| {
        let mut b = vec![0u8; n];
        disk.read_exact_at(off, &mut b).unwrap();
        b
    };
    let sb_at = part_start + 0x1_0000;
    let sb = read(sb_at, 4096);
    let nodesize = u32::from_le_bytes(sb[0x94..0x98].try_into().unwrap()) as u64;
    let fsid = sb[0x20..0x30].to_vec();
    // Live tree nodes: nodesize-aligned blocks with this fsid and a valid
    // checksum (independent of the reader: found by scanning the disk).
    let part_len = disk.len() - part_start;
    let mut nodes = Vec::new();
    let mut off = 0;
    while off + nodesize <= part_len {
        let b = read(part_start + off, nodesize as usize);
        let crc = u32::from_le_bytes(b[0..4].try_into().unwrap());
        if b[0x20..0x30] == fsid[..] && crc32c::crc32c(&b[0x20..]) == crc {
            nodes.push((part_start + off, b));
        }
        off += nodesize;
    }
    assert!(
        nodes.len() > 10,
        "{name}: only {} tree nodes found",
        nodes.len()
    );
    let base: Arc<dyn ByteSource> = disk.clone();
    // Most mutations go to the nodes a clean inspection reads (the rest
    // are stale copies, DUP mirrors and trees a check never opens).
    let log = Arc::new(Patched {
        base: base.clone(),
        patches: Vec::new(),
        served: AtomicU64::new(0),
        reads: Some(std::sync::Mutex::new(Vec::new())),
    });
    inspect(log.clone());
    let read_at: BTreeSet<u64> = log
        .reads
        .as_ref()
        .unwrap()
        .lock()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let hot: Vec<usize> = (0..nodes.len())
        .filter(|&k| read_at.contains(&nodes[k].0))
        .collect();
    assert!(
        hot.len() >= 5,
        "{name}: inspection read only {} tree nodes",
        hot.len()
    );
    let mut rng = Rng(0x5eed_b7f5);
    let (mut worst, mut rooted) = ((Duration::ZERO, 0u64), 0);
    for i in 0..iterations {
        let (at, mut block) = if i % 8 == 0 {
            (sb_at, sb.clone())
        } else {
            let k = if rng.below(4) == 0 {
                rng.below(nodes.len() as u64) as usize
            } else {
                hot[rng.below(hot.len() as u64) as usize]
            };
            nodes[k].clone()
        };
        // 1-4 bytes: in the header and item headers (offsets, sizes,
        // levels, keys), in the item data packed at the node's end (inode,
        // dir, extent, root items), or anywhere.
        let len = block.len() as u64;
        let (lo, hi) = match rng.below(5) {
            0 | 1 => (0x20, 0x400.min(len)),
            2 | 3 => (len.saturating_sub(0x1000).max(0x20), len),
            _ => (0x20, len),
        };
        for _ in 0..=rng.below(4) {
            let p = (lo + rng.below(hi - lo)) as usize;
            block[p] = match rng.below(3) {
                0 => rng.next() as u8,
                1 => 0xff,
                _ => block[p] ^ (1 << rng.below(8)),
            };
        }
        let crc = crc32c::crc32c(&block[0x20..]);
        block[0..4].copy_from_slice(&crc.to_le_bytes());
        let src = Arc::new(Patched {
            base: base.clone(),
            patches: vec![(at, block)],
            served: AtomicU64::new(0),
            reads: None,
        });
        let t = Instant::now();
        let r = inspect(src.clone());
        let took = t.elapsed();
        rooted += usize::from(r.root.is_some());
        let served = src.served.load(Ordering::Relaxed);
        worst = (worst.0.max(took), worst.1.max(served));
        assert!(took < Duration::from_secs(5), "{name} mutant {i}: {took:?}");
        assert!(served < 256 << 20, "{name} mutant {i}: {served} bytes read");
    }
    eprintln!(
        "{name}: {iterations} mutants of {} nodes ({} read by a check) + the superblock: {rooted} still found the root; slowest {:.1} ms, most read {} KiB",
        nodes.len(),
        hot.len(),
        worst.0.as_secs_f64() * 1e3,
        worst.1 / 1024
    );
}
