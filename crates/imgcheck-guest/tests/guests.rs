//! Inspection of the guest-tree fixtures built by tools/fixtures/50-guests.sh.
//!
//! Expectations come from the manifest's notes column (`key=value;...`,
//! documented at the top of 50-guests.sh), so the generator and the test
//! cannot drift apart silently. Every file the walk reads is compared with
//! the same file extracted by `debugfs -R "cat PATH" IMAGE?offset=N`, and
//! each inspection reports how many bytes it fetched and how long it took.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use imgcheck_guest::{FsKind, GuestReport, TableKind, inspect_traced};
use imgcheck_source::{ByteSource, FileSource};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"),
    }
}

/// (path relative to the fixture dir, notes as key -> value).
fn guest_fixtures() -> Vec<(String, BTreeMap<String, String>)> {
    let dir = fixtures_dir();
    let manifest = dir.join("manifest.tsv");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run tools/gen-fixtures first (or set IMGCHECK_FIXTURES)",
            manifest.display()
        )
    });
    let out: Vec<_> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            // Raw disks only: the walk here reads the file as guest bytes
            // (qcow2 copies are checked through imgcheck-disk by the
            // imgcheck-rules family test and the CLI tests).
            (f.first() == Some(&"guest") && f.get(2) == Some(&"raw")).then(|| {
                let notes = f
                    .get(4)
                    .unwrap_or(&"")
                    .split(';')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                (f[1].to_owned(), notes)
            })
        })
        .collect();
    assert!(
        !out.is_empty(),
        "{}: no guest fixtures: run tools/gen-fixtures first (50-guests.sh)",
        manifest.display()
    );
    out
}

fn fs_kind(k: FsKind) -> String {
    serde_json_like(&format!("{k:?}"))
}

/// "Ext4" -> "ext4", "LvmPv" -> "lvmpv": the manifest's spelling.
fn serde_json_like(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".to_owned())
}

/// Checks one report against the notes; returns the mismatches.
fn check(r: &GuestReport, want: &BTreeMap<String, String>, disk_len: u64) -> Vec<String> {
    let mut bad = Vec::new();
    let g = &r.guest;
    let ci = &g.cloud_init;
    for (k, w) in want {
        let got: String = match k.as_str() {
            "xfs" => continue, // XFS version: asserted by tests/xfs.rs
            // Finding codes: asserted by imgcheck-rules' family test and
            // the CLI tests.
            "expected" | "linode" | "kakaocloud" => continue,
            "ds_by" => opt(&ci.datasource_decided_by),
            "sector" => r.partitions.sector_size.to_string(),
            "table" => match r.partitions.kind {
                TableKind::None => "none",
                TableKind::Mbr => "mbr",
                TableKind::Gpt => "gpt",
                TableKind::HybridMbr => "hybrid",
            }
            .to_owned(),
            "rootfs" => r
                .root
                .and_then(|i| r.filesystems.get(i))
                .map_or("-".to_owned(), |f| fs_kind(f.kind)),
            k if k.starts_with("fs") && k[2..].parse::<u32>().is_ok() => {
                let n: u32 = k[2..].parse().unwrap_or(0);
                r.filesystems
                    .iter()
                    .find(|f| f.partition == Some(n))
                    .map_or("-".to_owned(), |f| fs_kind(f.kind))
            }
            "fserror" => {
                let errs: Vec<&str> = r
                    .filesystems
                    .iter()
                    .filter_map(|f| f.error.as_deref())
                    .collect();
                if errs.iter().any(|e| e.contains(w.as_str())) {
                    w.clone()
                } else {
                    format!("{errs:?}")
                }
            }
            "os" => opt(&g.os.id),
            "arch" => opt(&g.os.architecture),
            "ci" => match (&ci.version, ci.installed) {
                (Some(v), _) => v.clone(),
                (None, true) => "installed".into(),
                (None, false) => "none".into(),
            },
            "ci_src" => opt(&ci.version_source),
            "alt" => {
                if ci.alternatives.is_empty() {
                    "-".into()
                } else {
                    ci.alternatives.join(",")
                }
            }
            "ds" => ci
                .datasource_list
                .as_ref()
                .map_or("-".to_owned(), |l| l.join(",")),
            "ds_src" => opt(&ci.datasource_source),
            "user" => opt(&ci.default_user),
            "sshd" => {
                let s = &g.sshd;
                if r.root.is_none() {
                    "unknown".into()
                } else if !s.installed {
                    "missing".into()
                } else if s.evidence.iter().any(|e| e.contains("masked"))
                    && s.enabled == Some(false)
                {
                    "masked".into()
                } else {
                    match s.enabled {
                        Some(true) => "enabled".into(),
                        Some(false) => "disabled".into(),
                        None => "unknown".into(),
                    }
                }
            }
            "init" => opt(&g.sshd.init_system),
            "boot" => match (g.boot.bios, g.boot.uefi) {
                (true, true) => "bios+uefi",
                (true, false) => "bios",
                (false, true) => "uefi",
                (false, false) => "none",
            }
            .to_owned(),
            "min_disk_gb" => g.kakaocloud.min_disk_gb.to_string(),
            other => {
                bad.push(format!("unknown note key {other:?}"));
                continue;
            }
        };
        if &got != w {
            bad.push(format!("{k}: want {w:?}, got {got:?}"));
        }
    }
    // min_disk: where the manifest does not give it (min_disk_gb=, the
    // 101 GiB fixture), the fixture is a few tens of MiB, and a disk under
    // one GB needs a 1 GB volume (KakaoCloud's min_disk is whole GB).
    if !want.contains_key("min_disk_gb") {
        if disk_len >= 1_000_000_000 {
            bad.push(format!(
                "a {disk_len}-byte fixture needs a min_disk_gb= note in its manifest line"
            ));
        } else if g.kakaocloud.min_disk_gb != 1 {
            bad.push(format!(
                "kakaocloud.min_disk_gb: want 1 for a {disk_len}-byte disk, got {}",
                g.kakaocloud.min_disk_gb
            ));
        }
    }
    if r.root.is_some() && g.os.kind != "linux" {
        bad.push(format!("os.kind {:?}", g.os.kind));
    }
    if r.root.is_some() && g.boot.kernels.is_empty() {
        bad.push("no kernels listed".into());
    }
    bad
}

/// `debugfs -R "cat PATH" IMAGE?offset=N`, failing loudly when debugfs is
/// missing.
fn debugfs_cat(image: &std::path::Path, offset: u64, path: &str) -> Vec<u8> {
    let spec = format!("{}?offset={offset}", image.display());
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat \"{path}\""))
        .arg(&spec)
        .output()
        .or_else(|_| {
            Command::new("/usr/sbin/debugfs")
                .arg("-R")
                .arg(format!("cat \"{path}\""))
                .arg(&spec)
                .output()
        })
        .unwrap_or_else(|e| panic!("debugfs (e2fsprogs) is required for this test: {e}"));
    assert!(
        out.status.success(),
        "debugfs failed on {spec} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn guest_fixtures_report_expected_facts() {
    let dir = fixtures_dir();
    let mut failures = Vec::new();
    let mut compared = 0usize;
    for (rel, want) in guest_fixtures() {
        let path = dir.join(&rel);
        let src = Arc::new(FileSource::open(&path).unwrap_or_else(|e| panic!("{e}")));
        let len = src.len();
        let t = Instant::now();
        let (r, reads) = inspect_traced(src.clone());
        let took = t.elapsed();
        let fetched = src.bytes_fetched();
        eprintln!(
            "{rel}: {} KiB fetched of {} MiB, {:.1} ms, {} files read",
            fetched / 1024,
            len >> 20,
            took.as_secs_f64() * 1e3,
            reads.len()
        );
        // Metadata only: far less than the data in the filesystem.
        if fetched > 8 * 1024 * 1024 {
            failures.push(format!(
                "{rel}: fetched {fetched} bytes (more than metadata)"
            ));
        }
        for m in check(&r, &want, len) {
            failures.push(format!("{rel}: {m}"));
        }
        // Differential: each file read equals debugfs's copy (a prefix
        // for header-only reads).
        for f in &reads {
            // debugfs reads ext only; other filesystems have their own
            // differential test against their source tree (tests/xfs.rs).
            let on_ext = r.filesystems.iter().any(|x| {
                // An ext filesystem in an LVM volume is not contiguous at
                // its offset: tests/lvm.rs compares it with its tree.
                x.offset == f.fs_offset
                    && x.lv.is_none()
                    && matches!(x.kind, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)
            });
            if !on_ext {
                continue;
            }
            let theirs = debugfs_cat(&path, f.fs_offset, &f.fs_path);
            compared += 1;
            if !theirs.starts_with(&f.data)
                || (f.data.len() != theirs.len() && f.data.len() != 64.min(theirs.len()))
            {
                failures.push(format!(
                    "{rel}: {} ({} at offset {}): {} bytes read, debugfs gives {}",
                    f.guest_path,
                    f.fs_path,
                    f.fs_offset,
                    f.data.len(),
                    theirs.len()
                ));
            }
        }
        if failures.iter().any(|f| f.starts_with(&rel)) {
            eprintln!(
                "{rel}: {}",
                serde_json::to_string_pretty(&r).unwrap_or_default()
            );
        }
    }
    assert!(compared > 50, "only {compared} files compared with debugfs");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs a tool of dosfstools or mtools.
fn tool(cmd: &str, args: &[&str]) {
    support::run_tool("dosfstools/mtools", cmd, args);
}

/// The FAT walker finds EFI loaders on FAT12, FAT16 and FAT32 volumes made
/// by mkfs.vfat and filled by mtools, including a long-named file whose
/// 8.3 alias is what we list.
#[test]
fn fat_walker_on_real_volumes() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, size_k) in [("12", "2048"), ("16", "20480"), ("32", "40960")] {
        let img = dir.path().join(format!("fat{bits}.img"));
        let img_s = img.to_str().unwrap();
        tool("mkfs.vfat", &["-C", "-F", bits, img_s, size_k]);
        let loader = dir.path().join("l.efi");
        std::fs::write(&loader, b"MZ fake loader").unwrap();
        tool(
            "mmd",
            &[
                "-i",
                img_s,
                "::/EFI",
                "::/EFI/BOOT",
                "::/EFI/fedora",
                "::/other",
            ],
        );
        tool(
            "mcopy",
            &[
                "-i",
                img_s,
                loader.to_str().unwrap(),
                "::/EFI/BOOT/BOOTAA64.EFI",
            ],
        );
        tool(
            "mcopy",
            &[
                "-i",
                img_s,
                loader.to_str().unwrap(),
                "::/EFI/fedora/shimx64.efi",
            ],
        );
        tool(
            "mcopy",
            &[
                "-i",
                img_s,
                loader.to_str().unwrap(),
                "::/EFI/fedora/readme.txt",
            ],
        );
        let src = FileSource::open(&img).unwrap();
        let fat = imgcheck_guest::fat::Fat::open(&src)
            .unwrap_or_else(|| panic!("FAT{bits} not recognised"));
        let mut l = fat.efi_loaders();
        l.sort();
        assert_eq!(
            l,
            ["EFI/BOOT/BOOTAA64.EFI", "EFI/FEDORA/SHIMX64.EFI"],
            "FAT{bits}"
        );
        assert!(fat.list("/OTHER").is_empty());
        assert!(fat.list("/nope").is_empty());
    }
}
