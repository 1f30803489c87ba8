//! Real Packer, offline: a `file` builder produces a disk image, the
//! `manifest` post-processor records it, and a `shell-local` post-processor
//! runs `imgcheck packer`. The build must fail on a bad image and pass on a
//! good one.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixtures_dir;

fn packer_build(dir: &Path, image: &Path) -> (bool, String) {
    let src = dir.join("source.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let hook = format!(
        "{} packer --manifest packer-manifest.json --provider digitalocean",
        env!("CARGO_BIN_EXE_imgcheck")
    );
    let template = serde_json::json!({
        "builders": [{"type": "file", "source": "source.img", "target": "output/disk.img"}],
        "post-processors": [[
            {"type": "manifest", "output": "packer-manifest.json"},
            {"type": "shell-local", "inline": [hook]}
        ]]
    });
    std::fs::write(dir.join("template.json"), template.to_string()).unwrap();
    let out = Command::new("packer")
        .args(["build", "-machine-readable", "template.json"])
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", dir.join("cache"))
        .env("HOME", dir)
        .output()
        .expect(
            "packer is required for this test (apt-get install packer; tools/install-deps does)",
        );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn fixture(name: &str) -> std::path::PathBuf {
    let p = fixtures_dir().join(name);
    assert!(
        p.exists(),
        "{}: missing; run tools/gen-fixtures first",
        p.display()
    );
    p
}

#[test]
fn packer_build_passes_on_a_good_image() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = packer_build(dir.path(), &fixture("guests/good.img"));
    assert!(ok, "packer build should pass:\n{log}");
    assert!(log.contains("PASS"), "{log}");
}

#[test]
fn packer_build_fails_on_a_bad_image() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = packer_build(dir.path(), &fixture("guests/no-sshd.img"));
    assert!(!ok, "packer build should fail:\n{log}");
    assert!(
        log.contains("sshd.missing"),
        "the failing finding is shown:\n{log}"
    );
}
