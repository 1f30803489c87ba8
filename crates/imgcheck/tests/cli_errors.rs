//! Bad input at the command line: one readable line (plus a hint), exit 2,
//! never a panic or a backtrace.

mod common;

use std::path::Path;
use std::process::Command;

use common::imgcheck;

fn qemu_img(args: &[&str]) {
    let st = Command::new("qemu-img")
        .args(args)
        .status()
        .expect("qemu-img is required (install qemu-utils; tools/install-deps does)");
    assert!(st.success(), "qemu-img {args:?} failed");
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Asserts the run failed with exit 2 and printed one error line (plus at
/// most a hint line) naming the file.
fn assert_one_line_error(args: &[&str], file: &Path, must_contain: &str) {
    let out = imgcheck(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: expected exit 2, stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "{args:?}: expected one error line and a hint, got:\n{stderr}"
    );
    assert!(lines[0].starts_with("imgcheck: error: "), "{stderr}");
    assert!(
        lines[0].contains(file.file_name().unwrap().to_str().unwrap()),
        "error must name the file: {stderr}"
    );
    assert!(
        lines[0]
            .to_lowercase()
            .contains(&must_contain.to_lowercase()),
        "{args:?}: error should mention {must_contain:?}: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

fn make_qcow2(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", p.to_str().unwrap(), "64M"]);
    qemu_img(&["resize", "-q", p.to_str().unwrap(), "64M"]);
    p
}

#[test]
fn truncated_qcow2_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_qcow2(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(50).unwrap();
    assert_one_line_error(&["info", p.to_str().unwrap()], &p, "qcow2");
}

#[test]
fn truncated_qcow2_tables() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_qcow2(dir.path());
    // Keep the header cluster only: the L1 and refcount tables are gone.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(65536).unwrap();
    assert_one_line_error(&["info", p.to_str().unwrap()], &p, "offset");
}

#[test]
fn qcow2_with_flipped_version_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_qcow2(dir.path());
    patch(&p, 7, &[0x07]); // version 3 -> 7
    assert_one_line_error(&["info", p.to_str().unwrap()], &p, "version");
}

#[test]
fn qcow2_with_absurd_l1_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_qcow2(dir.path());
    patch(&p, 36, &0xffff_fff0u32.to_be_bytes());
    assert_one_line_error(&["info", p.to_str().unwrap()], &p, "L1");
}

#[test]
fn missing_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.img");
    assert_one_line_error(&["info", p.to_str().unwrap()], &p, "cannot open");
    assert_one_line_error(
        &["info", dir.path().to_str().unwrap()],
        dir.path(),
        "directory",
    );
}

#[test]
fn unknown_format_name_is_a_usage_error() {
    let out = imgcheck(&["info", "--format", "floppy", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("floppy"));
}
