//! Every guest-tree fixture in every container format: the raw image, and
//! the same disk converted by qemu-img to qcow2, VHDX, VDI and VMDK and
//! compressed by gzip.
//!
//! Expected values are independent of imgcheck:
//! * DigitalOcean: exactly the codes the fixture's manifest line expects
//!   (`expected=`, hand-written in tools/fixtures/50-guests.sh), except
//!   that `partition_table.missing` is a rule for raw images only (DO's
//!   "Raw (.img) with an MBR or GPT partition table"), so it is not
//!   expected of qcow2/VHDX/VDI/VMDK;
//! * Linode, the container codes typed from its upload guide: raw + gzip
//!   only, so qcow2/VHDX/VDI/VMDK give `format.unsupported` and
//!   `compression.unsupported`, raw gives `compression.unsupported`, and the
//!   `.img.gz` neither; and `partition_table.present` exactly when the
//!   manifest says the disk has a table (`table=`).
//!
//! The remaining guest-derived codes of Linode and KakaoCloud are compared
//! with the raw image's (the container must not change what is inside).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Fixture, fixtures, imgcheck};
use serde_json::Value;

/// provider → the set of codes, and whether it passes.
fn verdicts(path: &Path) -> Vec<(String, bool, BTreeSet<String>)> {
    let out = imgcheck(&["--json", path.to_str().unwrap()]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    v["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .map(|verdict| {
            let codes = verdict["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["code"].as_str().unwrap().to_owned())
                .collect();
            (
                verdict["provider"].as_str().unwrap().to_owned(),
                verdict["pass"] == true,
                codes,
            )
        })
        .collect()
}

fn of<'a>(v: &'a [(String, bool, BTreeSet<String>)], p: &str) -> &'a BTreeSet<String> {
    &v.iter()
        .find(|(name, _, _)| name == p)
        .unwrap_or_else(|| panic!("no {p} verdict"))
        .2
}

/// The `key=value` of a fixture's ';'-separated notes.
fn note<'a>(f: &'a Fixture, key: &str) -> Option<&'a str> {
    f.notes
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Container codes, not about the guest.
fn container_code(c: &str) -> bool {
    c.starts_with("format.")
        || c.starts_with("compression.")
        || c == "size.compressed_unknown"
        || c == "partition_table.missing"
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tools/install-deps installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Container {
    Raw,
    Converted,
    Gzip,
}

fn assert_expected(
    f: &Fixture,
    path: &Path,
    what: &str,
    kind: Container,
    raw: &[(String, bool, BTreeSet<String>)],
) {
    let got = verdicts(path);
    let expected = note(f, "expected").unwrap_or_else(|| panic!("{}: no expected= note", f.name()));
    let mut want_do: BTreeSet<String> = expected
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    if kind == Container::Converted {
        want_do.remove("partition_table.missing");
    }
    assert_eq!(
        of(&got, "digitalocean"),
        &want_do,
        "{} as {what}: DigitalOcean",
        f.name()
    );

    let linode = of(&got, "linode");
    let want_container = match kind {
        Container::Raw => set(&["compression.unsupported"]),
        Container::Converted => set(&["format.unsupported", "compression.unsupported"]),
        Container::Gzip => set(&[]),
    };
    let got_container: BTreeSet<String> = linode
        .iter()
        .filter(|c| c.starts_with("format.") || c.starts_with("compression."))
        .cloned()
        .collect();
    assert_eq!(
        got_container,
        want_container,
        "{} as {what}: Linode container codes",
        f.name()
    );
    let table = note(f, "table").unwrap_or_else(|| panic!("{}: no table= note", f.name()));
    assert_eq!(
        linode.contains("partition_table.present"),
        table != "none",
        "{} as {what}: table={table} but Linode said {linode:?}",
        f.name()
    );

    // Inside the container: the same as the raw image.
    for p in ["linode", "kakaocloud"] {
        let inner = |v: &BTreeSet<String>| -> BTreeSet<String> {
            v.iter().filter(|c| !container_code(c)).cloned().collect()
        };
        assert_eq!(
            inner(of(&got, p)),
            inner(of(raw, p)),
            "{} as {what}: {p}",
            f.name()
        );
    }
}

#[test]
fn guest_fixtures_in_every_container_get_the_expected_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for f in fixtures("guest") {
        let raw = verdicts(&f.path);
        assert_expected(&f, &f.path, "raw", Container::Raw, &raw);
        for (fmt, ext) in [
            ("qcow2", "qcow2"),
            ("vhdx", "vhdx"),
            ("vdi", "vdi"),
            ("vmdk", "vmdk"),
        ] {
            let out = dir.path().join(format!("g.{ext}"));
            let _ = std::fs::remove_file(&out);
            // qemu-img skips the holes of a sparse raw input: the 101 GiB
            // fixture converts in well under a second.
            run(Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", fmt])
                .arg(&f.path)
                .arg(&out));
            assert_expected(&f, &out, fmt, Container::Converted, &raw);
        }
        // gzip reads every byte: for the 101 GiB sparse fixture that is
        // minutes of compressing zeros, so it gets the four formats above
        // and not this one (its gzip path is the same code as the others').
        let size = std::fs::metadata(&f.path).unwrap().len();
        if size <= 1 << 30 {
            let gz = dir.path().join("g.img.gz");
            let file = std::fs::File::create(&gz).unwrap();
            run(Command::new("gzip").arg("-c").arg(&f.path).stdout(file));
            assert_expected(&f, &gz, ".img.gz", Container::Gzip, &raw);
        } else {
            assert_eq!(
                note(&f, "expected"),
                Some("size.too_large"),
                "{}: only the size fixture is this large",
                f.name()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} guest fixtures checked");
}
