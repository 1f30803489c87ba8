//! The family matrix (tools/fixtures/55-families.sh): each distribution
//! family's guest, raw and qcow2, opened through imgcheck-disk, inspected,
//! and judged by all three profiles. The expected codes are in the
//! manifest notes (`expected=` DigitalOcean, `linode=`, `kakaocloud=`),
//! typed from the provider rules in 55-families.sh, and must match exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use imgcheck_disk::{Format, OpenOptions};
use imgcheck_rules::{CheckInput, ImageFacts, ImageFormat, Provider, check};
use imgcheck_source::{ByteSource, FileSource};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"),
    }
}

fn codes(s: &str) -> BTreeSet<String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn family_matrix_gives_the_exact_codes_for_every_provider() {
    let dir = fixtures_dir();
    let manifest = dir.join("manifest.tsv");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}: run tools/gen-fixtures first", manifest.display()));
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let kind_ok = matches!(f.first(), Some(&"guest" | &"guest-qcow2"));
        if !kind_ok || !f.get(1).is_some_and(|p| p.contains("/family-")) {
            continue;
        }
        let (rel, fmt) = (f[1], f[2]);
        let notes: BTreeMap<&str, &str> = f
            .get(4)
            .unwrap_or(&"")
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let path = dir.join(rel);
        let src: Arc<dyn ByteSource> = Arc::new(FileSource::open(&path).unwrap());
        let file_size = src.len();
        let disk = imgcheck_disk::open(src, &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        let format = disk.info().format;
        assert_eq!(format.as_str(), fmt, "{rel}");
        let virtual_size = disk.len();
        let report = imgcheck_guest::inspect(Arc::new(disk));
        let image = ImageFacts {
            path: rel.to_owned(),
            format: Some(ImageFormat::Disk(format)),
            virtual_size: Some(virtual_size),
            file_size,
            ..Default::default()
        };
        let input = CheckInput {
            image: &image,
            guest: Some(&report),
        };
        for (p, key) in [
            (Provider::DigitalOcean, "expected"),
            (Provider::Linode, "linode"),
            (Provider::KakaoCloud, "kakaocloud"),
        ] {
            let want = codes(
                notes
                    .get(key)
                    .unwrap_or_else(|| panic!("{rel}: no {key}= in the notes")),
            );
            let v = check(p, &input);
            let got: BTreeSet<String> = v.codes().iter().map(|c| (*c).to_owned()).collect();
            if got != want {
                failures.push(format!("{rel} {p}: want {want:?}, got {got:?}"));
            }
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let name = name.split('.').next().unwrap_or(name).to_owned();
        seen.insert((name, format.as_str()));
    }
    let families: BTreeSet<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    // 8 families on ext4 (55-families.sh), 4 on XFS/btrfs/LVM
    // (74-family-fs.sh), Rocky and CentOS 7 with cloud-init's version only
    // in the rpmdb (76-rpmdb.sh), Flatcar and Fedora CoreOS (76-coreos.sh).
    assert_eq!(families.len(), 16, "families found: {families:?}");
    assert_eq!(seen.len(), 32, "raw and qcow2 of each: {seen:?}");
    assert!(seen.iter().any(|(_, f)| *f == Format::Qcow2.as_str()));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
