//! Every guest-tree fixture gets the same finding codes and verdicts in
//! every container format: the raw image, and the same disk converted by
//! qemu-img to qcow2, VHDX, VDI and VMDK and compressed by gzip. Only the
//! codes about the container itself may differ (Linode takes only gzip'd
//! raw, so `format.*`, `compression.*` and `size.compressed_unknown` are
//! left out of the comparison; so is DigitalOcean's
//! `partition_table.missing`, a rule for raw images only). A verdict
//! "passes" here when none of the compared findings is an error.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fixtures, imgcheck};

type Codes = Vec<(String, bool, Vec<String>)>;

fn codes(path: &Path) -> Codes {
    let out = imgcheck(&["--json", path.to_str().unwrap()]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    v["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .map(|verdict| {
            let provider = verdict["provider"].as_str().unwrap().to_owned();
            // Findings not about the container; pass = none of them is an
            // error.
            let kept: Vec<(String, String)> = verdict["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["code"].as_str().unwrap().to_owned(),
                        f["severity"].as_str().unwrap().to_owned(),
                    )
                })
                .filter(|(c, _)| {
                    !c.starts_with("format.")
                        && !c.starts_with("compression.")
                        && c != "size.compressed_unknown"
                        && c != "partition_table.missing"
                })
                .collect();
            let pass = !kept.iter().any(|(_, sev)| sev == "error");
            let mut c: Vec<String> = kept.into_iter().map(|(c, _)| c).collect();
            c.sort();
            (provider, pass, c)
        })
        .collect()
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

#[test]
fn guest_fixtures_get_the_same_codes_in_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for f in fixtures("guest") {
        // The 101 GiB sparse fixture would make qemu-img write 101 GiB of
        // metadata-free zeros into VDI/VHDX; its size rule is covered by
        // check_cli on the raw file.
        if std::fs::metadata(&f.path).unwrap().len() > 1 << 30 {
            continue;
        }
        let want = codes(&f.path);
        for (fmt, ext) in [
            ("qcow2", "qcow2"),
            ("vhdx", "vhdx"),
            ("vdi", "vdi"),
            ("vmdk", "vmdk"),
        ] {
            let out = dir.path().join(format!("g.{ext}"));
            let _ = std::fs::remove_file(&out);
            run(Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", fmt])
                .arg(&f.path)
                .arg(&out));
            assert_eq!(codes(&out), want, "{} as {fmt}", f.name());
        }
        let gz = dir.path().join("g.img.gz");
        let file = std::fs::File::create(&gz).unwrap();
        run(Command::new("gzip").arg("-c").arg(&f.path).stdout(file));
        assert_eq!(codes(&gz), want, "{} as .img.gz", f.name());
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} guest fixtures checked");
}
