//! ext reads through the patched ext4-view (third_party/README.md): files
//! opened by a cached directory entry and by path give the bytes
//! `mkfs.ext4 -d` was given, and the hardware CRC32C still rejects a
//! directory block whose bytes changed under its checksum.
//!
//! Expected contents are the files this test wrote into the tree; the
//! directory block to damage is located by `debugfs -R "blocks /d"`, not
//! by imgcheck.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use imgcheck_guest::ext;
use imgcheck_source::FileSource;
use support::run_tool;

/// Files in the test directory: enough names to fill several 1 KiB
/// directory blocks, so a lookup has blocks to scan past.
const FILES: usize = 300;

fn content(i: usize) -> Vec<u8> {
    format!("file {i:03}\n").repeat(i + 1).into_bytes()
}

/// A 16 MiB ext4 image (metadata_csum on, 1 KiB blocks) of /d with
/// [`FILES`] files, a symlink and a subdirectory.
fn build(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    let d = tree.join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    for i in 0..FILES {
        std::fs::write(d.join(format!("f{i:03}")), content(i)).unwrap();
    }
    std::os::unix::fs::symlink("f007", d.join("link")).unwrap();
    let img = dir.join("ext.img");
    let (t, i) = (tree.to_str().unwrap(), img.to_str().unwrap());
    run_tool(
        "e2fsprogs",
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "1024",
            "-O",
            "metadata_csum",
            "-d",
            t,
            i,
            "16M",
        ],
    );
    img
}

/// The filesystem blocks of `path`, from debugfs.
fn debugfs_blocks(img: &Path, path: &str) -> Vec<u64> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("blocks {path}")])
        .arg(img)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("debugfs (e2fsprogs) is required for this test: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect()
}

fn open(img: &Path) -> std::rc::Rc<dyn imgcheck_guest::fs::GuestFs> {
    ext::open(Arc::new(FileSource::open(img).unwrap())).unwrap()
}

#[test]
fn files_read_by_entry_and_by_path_match_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let img = build(tmp.path());
    let fs = open(&img);
    // Each file twice: the first read of a directory resolves by path, a
    // later one goes through the directory's cached listing.
    for round in 0..2 {
        for i in (0..FILES).rev() {
            let got = fs.read(&format!("/d/f{i:03}"), u64::MAX).unwrap();
            assert_eq!(got, content(i), "round {round}, f{i:03}");
        }
    }
    // A symlink is followed, a directory is not a file, a missing name is
    // an error: the same answers by entry as by path.
    assert_eq!(fs.read("/d/link", u64::MAX).unwrap(), content(7));
    assert!(fs.read("/d/sub", u64::MAX).is_err());
    assert!(fs.read("/d/missing", u64::MAX).is_err());
    // A size cap is honoured.
    assert_eq!(fs.read("/d/f100", 5).unwrap(), content(100)[..5].to_vec());
}

#[test]
fn a_changed_directory_block_fails_its_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let img = build(tmp.path());
    let blocks = debugfs_blocks(&img, "/d");
    assert!(
        blocks.len() >= 2,
        "want a multi-block directory: {blocks:?}"
    );
    // Rename f050 to g050 in place: the block stays well-formed, so only
    // the checksum can tell.
    let mut bytes = std::fs::read(&img).unwrap();
    let mut hit = None;
    for &b in &blocks {
        let at = usize::try_from(b * 1024).unwrap();
        let block = &mut bytes[at..at + 1024];
        if let Some(p) = block.windows(4).position(|w| w == b"f050") {
            block[p] = b'g';
            hit = Some(b);
            break;
        }
    }
    assert!(hit.is_some(), "f050 not found in the blocks of /d");
    std::fs::write(&img, &bytes).unwrap();

    let fs = open(&img);
    let err = fs.read_dir("/d", usize::MAX).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("checksum"), "{err}");
    // A lookup of a name that is not there scans every block: it must
    // stop at the damaged one with an error, not answer "no such file"
    // (twice: by path, then after the listing was tried).
    for _ in 0..2 {
        let err = fs.lstat("/d/nothere").unwrap_err().to_string();
        assert!(err.to_lowercase().contains("checksum"), "{err}");
    }
}
