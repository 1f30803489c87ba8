//! The datasource list ds-identify reads, imgcheck against ds-identify.
//!
//! ds-identify is the shell script from Debian's cloud-init package,
//! extracted by tools/fixtures/56-ds-identify.sh (a missing one fails the
//! test). For every file of the cloud.cfg corpus (testdata/cloud-cfg), alone
//! as /etc/cloud/cloud.cfg and as a drop-in behind a one-line list, and for
//! a few multi-file trees, the script is sourced with `DI_MAIN=noop` and
//! `PATH_ROOT` pointing at the tree, and its `read_datasource_list` result
//! is compared with [`config_list`]: the same words, or, where imgcheck
//! finds no list, ds-identify's own `DI_DSLIST_DEFAULT`.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgcheck_guest::facts::ds_identify::config_list;

fn script() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/generated/ds-identify/ds-identify");
    assert!(
        p.is_file(),
        "{} is missing: run tools/gen-fixtures (tools/fixtures/56-ds-identify.sh)",
        p.display()
    );
    p
}

/// ds-identify's (list, default list) for the tree at `root`.
fn ds_identify(root: &Path) -> (Vec<String>, Vec<String>) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#". "$1"; read_datasource_list; printf '%s\n%s\n' "$DI_DSLIST" "$DI_DSLIST_DEFAULT""#)
        .arg("sh")
        .arg(script())
        .env("PATH_ROOT", root)
        .env("DI_MAIN", "noop")
        .env("LC_ALL", "C")
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "ds-identify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let words = |l: Option<&str>| -> Vec<String> {
        l.unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    (words(lines.next()), words(lines.next()))
}

/// Writes `files` (path under /etc/cloud, contents) into a fresh tree and
/// compares both readings.
fn compare(name: &str, files: &[(&str, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/cloud");
    std::fs::create_dir_all(etc.join("cloud.cfg.d")).unwrap();
    for (p, t) in files {
        std::fs::write(etc.join(p), t).unwrap();
    }
    // imgcheck's order: cloud.cfg, then the drop-ins by name.
    let mut ours: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(p, _)| *p == "cloud.cfg")
        .map(|(p, t)| (format!("/etc/cloud/{p}"), t.clone()))
        .collect();
    let mut dropins: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.starts_with("cloud.cfg.d/") && p.ends_with(".cfg"))
        .map(|(p, t)| (format!("/etc/cloud/{p}"), t.clone()))
        .collect();
    dropins.sort();
    ours.extend(dropins);
    let (theirs, default) = ds_identify(dir.path());
    let mine = match config_list(&ours) {
        Some((l, _)) if !l.is_empty() => l,
        _ => default,
    };
    assert_eq!(mine, theirs, "{name}: imgcheck vs ds-identify");
}

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/cloud-cfg");
    let mut out = Vec::new();
    for sub in ["distro", "probes"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "cfg") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "corpus too small: {}", out.len());
    out
}

#[test]
fn corpus_files_read_like_ds_identify() {
    for p in corpus() {
        let text = std::fs::read(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        compare(
            &format!("{name} as cloud.cfg"),
            &[("cloud.cfg", text.clone())],
        );
        compare(
            &format!("{name} as a drop-in"),
            &[
                (
                    "cloud.cfg",
                    b"datasource_list: [ ConfigDrive, None ]\n".to_vec(),
                ),
                ("cloud.cfg.d/50-probe.cfg", text),
            ],
        );
    }
}

/// Files of one tree: (path under /etc/cloud, contents).
type Tree<'a> = &'a [(&'a str, Vec<u8>)];

#[test]
fn trees_read_like_ds_identify() {
    let t = |s: &str| s.as_bytes().to_vec();
    let cases: &[(&str, Tree)] = &[
        (
            "block list in a drop-in hides cloud.cfg's one-line list",
            &[
                (
                    "cloud.cfg",
                    t("datasource_list: [ NoCloud, ConfigDrive ]\n"),
                ),
                (
                    "cloud.cfg.d/90.cfg",
                    t("datasource_list:\n  - ConfigDrive\n"),
                ),
            ],
        ),
        (
            "the lexically last drop-in wins",
            &[
                ("cloud.cfg.d/10-a.cfg", t("datasource_list: [ A ]\n")),
                ("cloud.cfg.d/9-b.cfg", t("datasource_list: [ B ]\n")),
                ("cloud.cfg.d/99.txt", t("datasource_list: [ C ]\n")),
                ("cloud.cfg.d/.hidden.cfg", t("datasource_list: [ D ]\n")),
            ],
        ),
        (
            "escapes, comments, quotes, tabs",
            &[(
                "cloud.cfg",
                t("\tdatasource_list: [ 'No\\Cloud', \"Config Drive\" ] # x\nother: 1\n"),
            )],
        ),
        (
            "continuation line and no final newline",
            &[
                ("cloud.cfg", t("datasource_list: [ A, \\\n B ]\n")),
                ("cloud.cfg.d/1.cfg", t("datasource_list: [ Z ]")),
            ],
        ),
        (
            "CRLF",
            &[(
                "cloud.cfg",
                t("datasource_list: [ NoCloud, ConfigDrive ]\r\n"),
            )],
        ),
    ];
    for (name, files) in cases {
        compare(name, files);
    }
}
