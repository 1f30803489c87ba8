//! Flatcar and Fedora CoreOS as their builders lay them out
//! (tools/fixtures/76-coreos.sh): the guest tree each one's boot assembles.
//! Expected values are the fixture script's (partition numbers, the
//! deployment checksums, the BLS entry names), not imgcheck's output.
//! Files read from the FCOS XFS root are compared with the tree it was
//! built from; reads from ext filesystems are compared with debugfs by
//! tests/guests.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod support;

use imgcheck_guest::{FileRead, FsKind, inspect, inspect_traced};
use imgcheck_source::{ByteSource, FileSource};
use support::run_tool;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"),
    }
}

fn open(p: &Path) -> Arc<dyn ByteSource> {
    Arc::new(FileSource::open(p).unwrap_or_else(|e| panic!("{e}: run tools/gen-fixtures")))
}

const DEPLOY_A: &str = "/ostree/deploy/fedora-coreos/deploy/8b1f4c3e2d9a7f6e5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a19087f6e.0";
const BOOT_A: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";

#[test]
fn fcos_boots_the_default_deployment() {
    let dir = fixtures_dir();
    let (r, reads) = inspect_traced(open(&dir.join("guests/family-fcos.img")));
    let g = &r.guest;
    let notes = r.notes.join("\n");
    assert_eq!(g.os.id.as_deref(), Some("fedora"), "{notes}");
    // 40 is the deployment of the entry with the highest version; the
    // rollback (39) has no sshd link.
    assert_eq!(g.os.version_id.as_deref(), Some("40"), "{notes}");
    assert_eq!(g.os.variant_id.as_deref(), Some("coreos"));
    assert!(
        notes.contains(&format!(
            "ostree: / is {DEPLOY_A}, chosen by boot entry ostree-2-fedora-coreos.conf"
        )),
        "{notes}"
    );
    assert!(
        notes.contains("/var is /ostree/deploy/fedora-coreos/var"),
        "{notes}"
    );
    let root = r.root.and_then(|i| r.filesystems.get(i)).expect("a root");
    assert_eq!((root.kind, root.partition), (FsKind::Xfs, Some(4)));
    assert_eq!(g.sshd.enabled, Some(true), "{:?}", g.sshd);
    assert!(
        g.sshd
            .evidence
            .iter()
            .any(|e| e.contains("/etc/systemd/system/multi-user.target.wants/sshd.service")),
        "{:?}",
        g.sshd.evidence
    );
    assert_eq!(g.cloud_init.alternatives, ["ignition"]);
    assert!(!g.cloud_init.installed);
    assert_eq!(g.kakaocloud.admin_user.as_deref(), Some("core"));
    assert!(
        g.boot.kernels.contains(&format!(
            "ostree/fedora-coreos-{BOOT_A}/vmlinuz-6.8.11-300.fc40.x86_64"
        )),
        "{:?}",
        g.boot.kernels
    );
    // Differential: what was read from the XFS root equals the source tree.
    let tree = dir.join("guests/family-fcos.tree");
    compare_with_tree(&reads, root.offset, &tree, DEPLOY_A);
}

#[test]
fn flatcar_mounts_usr_a_from_its_partition() {
    let dir = fixtures_dir();
    let (r, reads) = inspect_traced(open(&dir.join("guests/family-flatcar.img")));
    let g = &r.guest;
    let notes = r.notes.join("\n");
    assert!(
        notes.contains("/etc is an overlay of ROOT's /etc over /usr/share/flatcar/etc"),
        "{notes}"
    );
    assert_eq!(g.os.id.as_deref(), Some("flatcar"), "{notes}");
    assert_eq!(g.os.version_id.as_deref(), Some("3975.2.0"));
    assert!(
        notes.contains("/usr is USR-A (partition 3; highest GPT priority (1)"),
        "{notes}"
    );
    let root = r.root.and_then(|i| r.filesystems.get(i)).expect("a root");
    assert_eq!((root.kind, root.partition), (FsKind::Ext4, Some(9)));
    assert_eq!(root.label.as_deref(), Some("ROOT"));
    // USR-A: ext2 shorter than its partition (the verity hash tree follows).
    let usr = r
        .filesystems
        .iter()
        .find(|f| f.partition == Some(3))
        .unwrap();
    assert_eq!(usr.kind, FsKind::Ext2);
    assert!(usr.error.is_none(), "{:?}", usr.error);
    // /etc/os-release: the overlay's lower layer links to /usr/lib/os-release,
    // read from USR-A's /lib/os-release.
    let os_release = reads
        .iter()
        .find(|f| f.guest_path == "/etc/os-release")
        .expect("/etc/os-release read");
    assert_eq!(
        (os_release.fs_offset, os_release.fs_path.as_str()),
        (usr.offset, "/lib/os-release")
    );
    assert_eq!(g.sshd.enabled, Some(true), "{:?}", g.sshd);
    assert!(
        g.sshd
            .evidence
            .iter()
            .any(|e| e.contains("sockets.target.wants/sshd.socket")),
        "{:?}",
        g.sshd.evidence
    );
    assert_eq!(g.cloud_init.alternatives, ["coreos-cloudinit", "ignition"]);
    assert_eq!(g.kakaocloud.admin_user.as_deref(), Some("core"));
    assert!(!g.boot.kernels.is_empty());
}

/// GRUB's gptprio.next would boot USR-B once it has the higher priority;
/// USR-B is empty on this image, which must be said, not papered over
/// with USR-A.
#[test]
fn flatcar_follows_the_gpt_priority() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("flatcar.img");
    std::fs::copy(fixtures_dir().join("guests/family-flatcar.img"), &img).unwrap();
    run_tool(
        "sgdisk (gdisk)",
        "sgdisk",
        &[
            "-A",
            "3:clear:48",
            "-A",
            "4:set:49",
            "-A",
            "4:set:56",
            img.to_str().unwrap(),
        ],
    );
    let r = inspect(open(&img));
    let notes = r.notes.join("\n");
    assert!(
        notes.contains("/usr would be USR-B (partition 4, highest GPT priority (2)"),
        "{notes}"
    );
    // Without the layout nothing on the disk holds an OS root marker (ROOT
    // is empty): no OS is identified, and the image would not boot.
    assert_eq!(r.guest.os.id, None, "{notes}");
}

/// Runs debugfs (e2fsprogs) with `args`, failing loudly when it is missing.
fn debugfs(args: &[&str]) {
    run_tool("debugfs (e2fsprogs)", "debugfs", args);
}

/// With the default entry gone, the next one in boot order (version 1,
/// the 39.x rollback, which has no sshd link) is what boots; with no
/// entry at all, two deployments cannot be told apart and none is chosen.
#[test]
fn fcos_follows_the_boot_entries() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fcos.img");
    std::fs::copy(fixtures_dir().join("guests/family-fcos.img"), &img).unwrap();
    let boot = inspect(open(&img))
        .filesystems
        .iter()
        .find(|f| f.partition == Some(3))
        .map(|f| f.offset)
        .unwrap();
    let spec = format!("{}?offset={boot}", img.display());
    debugfs(&[
        "-w",
        "-R",
        "rm /loader.1/entries/ostree-2-fedora-coreos.conf",
        &spec,
    ]);
    let r = inspect(open(&img));
    let notes = r.notes.join("\n");
    assert_eq!(r.guest.os.version_id.as_deref(), Some("39"), "{notes}");
    assert!(
        notes.contains("chosen by boot entry ostree-1-fedora-coreos.conf"),
        "{notes}"
    );
    assert_eq!(r.guest.sshd.enabled, Some(false), "{:?}", r.guest.sshd);

    debugfs(&[
        "-w",
        "-R",
        "rm /loader.1/entries/ostree-1-fedora-coreos.conf",
        &spec,
    ]);
    let r = inspect(open(&img));
    let notes = r.notes.join("\n");
    assert!(
        notes.contains("ostree: 2 deployments and no boot entry naming one"),
        "{notes}"
    );
    assert_eq!(r.root, None, "{notes}");
    // Not "no OS": the layout is there, which tree boots is not known.
    assert!(
        r.root_undetermined
            .as_deref()
            .is_some_and(|w| w.contains("2 deployments")),
        "{:?}",
        r.root_undetermined
    );
    assert!(!notes.contains("no root filesystem found"), "{notes}");
}

/// Current Flatcar's USR-A is btrfs (zstd), not ext2: the same guest, and
/// every file read from it equals the /usr tree it was built from.
#[test]
fn flatcar_with_a_btrfs_usr() {
    let dir = fixtures_dir();
    let (r, reads) = inspect_traced(open(&dir.join("guests/flatcar-btrfs-usr.img")));
    let notes = r.notes.join("\n");
    assert_eq!(r.guest.os.id.as_deref(), Some("flatcar"), "{notes}");
    assert_eq!(r.guest.sshd.enabled, Some(true));
    let usr = r
        .filesystems
        .iter()
        .find(|f| f.partition == Some(3))
        .unwrap();
    assert_eq!(usr.kind, FsKind::Btrfs);
    let tree = dir.join("guests/flatcar-usr.tree");
    compare_with_tree(&reads, usr.offset, &tree, "/");
}

/// Differential: every file read from the filesystem at `fs_offset` lies
/// under `within` and equals the file of the source `tree` it was built
/// from (or its first 64 bytes, for a magic sniff); at least three are.
fn compare_with_tree(reads: &[FileRead], fs_offset: u64, tree: &Path, within: &str) {
    let mut compared = 0;
    for f in reads.iter().filter(|f| f.fs_offset == fs_offset) {
        assert!(
            f.fs_path.starts_with(within),
            "{} read outside {within}",
            f.fs_path
        );
        let theirs = std::fs::read(tree.join(f.fs_path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{}: {e}", f.fs_path));
        assert!(
            theirs.starts_with(&f.data) && (f.data.len() == theirs.len() || f.data.len() == 64),
            "{}: {} bytes read, the tree has {}",
            f.fs_path,
            f.data.len(),
            theirs.len()
        );
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} files compared");
}
