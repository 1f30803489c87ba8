//! Small guest trees built at test time with `mkfs.ext4 -d` (whole-disk
//! ext4, no table) for init systems and link shapes the fixture set does
//! not cover. mkfs.ext4 is required: a missing tool fails the test.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use imgcheck_guest::{GuestReport, inspect};
use imgcheck_source::FileSource;

const ELF_X86_64: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0";

fn build(fill: impl FnOnce(&Path)) -> GuestReport {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    fill(&root);
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let out = Command::new("mkfs.ext4")
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("mkfs.ext4 (e2fsprogs) is required for this test: {e}"));
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    inspect(Arc::new(FileSource::open(&img).unwrap()))
}

fn write(root: &Path, p: &str, data: &[u8]) {
    let p = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn link(root: &Path, p: &str, target: &str) {
    let p = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

#[test]
fn sysvinit_rc_links() {
    let r = build(|t| {
        write(t, "/etc/os-release", b"ID=devuan\nVERSION_ID=5\n");
        write(t, "/etc/inittab", b"id:2:initdefault:\n");
        write(t, "/usr/sbin/sshd", ELF_X86_64);
        write(t, "/etc/init.d/ssh", b"#!/bin/sh\n");
        link(t, "/etc/rc2.d/S02ssh", "../init.d/ssh");
        link(t, "/etc/rc0.d/K01ssh", "../init.d/ssh");
    });
    let s = &r.guest.sshd;
    assert_eq!(s.init_system.as_deref(), Some("sysvinit"));
    assert_eq!(s.enabled, Some(true), "{s:?}");
    assert_eq!(s.evidence, ["/etc/rc2.d/S02ssh"]);
    assert_eq!(r.guest.os.id.as_deref(), Some("devuan"));
}

#[test]
fn no_init_system_means_unknown() {
    let r = build(|t| {
        write(t, "/etc/os-release", b"ID=weird\n");
        write(t, "/usr/sbin/sshd", ELF_X86_64);
    });
    assert!(r.guest.sshd.installed);
    assert_eq!(r.guest.sshd.enabled, None);
    assert_eq!(r.guest.sshd.init_system, None);
}

#[test]
fn bsd_rc_conf() {
    let r = build(|t| {
        write(
            t,
            "/bin/freebsd-version",
            b"#!/bin/sh\nUSERLAND_VERSION=\"14.1-RELEASE\"\n",
        );
        write(t, "/etc/rc.conf", b"hostname=\"x\"\nsshd_enable=\"YES\"\n");
        std::fs::create_dir_all(t.join("etc/rc.d")).unwrap();
        write(t, "/usr/sbin/sshd", ELF_X86_64);
    });
    let g = &r.guest;
    assert_eq!(g.os.kind, "freebsd");
    assert_eq!(g.os.id.as_deref(), Some("freebsd"));
    assert_eq!(g.os.version_id.as_deref(), Some("14.1-RELEASE"));
    assert_eq!(g.sshd.init_system.as_deref(), Some("rc.d"));
    assert_eq!(g.sshd.enabled, Some(true));
}

/// Links that loop, dangle or climb above the root stay inside the guest
/// and end as "unknown", never as a host path or a hang.
#[test]
fn hostile_links_stay_inside() {
    let r = build(|t| {
        link(
            t,
            "/etc/os-release",
            "../../../../../../etc/real-os-release",
        );
        write(t, "/etc/real-os-release", b"ID=inside\n");
        link(t, "/sbin/init", "/sbin/init2");
        link(t, "/sbin/init2", "init");
        link(t, "/bin/sh", "/nonexistent/sh");
        link(t, "/etc/cloud/cloud.cfg", "/etc/cloud/cloud.cfg");
        link(t, "/usr/sbin/sshd", "/etc/passwd");
    });
    let g = &r.guest;
    // "../" above the root stays at the guest root.
    assert_eq!(g.os.id.as_deref(), Some("inside"));
    assert_eq!(g.os.architecture, None);
    assert_eq!(g.cloud_init.datasource_list, None);
    assert!(!g.sshd.installed);
    assert!(
        r.notes.iter().any(|n| n.contains("symlinks")),
        "{:?}",
        r.notes
    );
}

/// Files over the size cap are not read whole.
#[test]
fn oversized_config_is_skipped() {
    let r = build(|t| {
        write(t, "/etc/os-release", b"ID=big\n");
        let mut big = b"datasource_list: [NoCloud]\n".to_vec();
        big.resize(2 << 20, b'#');
        write(t, "/etc/cloud/cloud.cfg", &big);
    });
    assert_eq!(r.guest.cloud_init.datasource_list, None);
    assert_eq!(r.guest.os.id.as_deref(), Some("big"));
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("/etc/cloud/cloud.cfg") && n.contains("limit")),
        "{:?}",
        r.notes
    );
}

/// A pip-style install: no version.py found, the version comes from the
/// package metadata under /usr/local/lib/python3.X.
#[test]
fn dist_info_version() {
    let r = build(|t| {
        write(t, "/etc/os-release", b"ID=ubuntu\n");
        write(
            t,
            "/usr/local/lib/python3.11/dist-packages/cloud_init-23.4.1.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: cloud-init\nVersion: 23.4.1\n\nSummary text\n",
        );
    });
    let ci = &r.guest.cloud_init;
    assert!(ci.installed);
    assert_eq!(ci.version.as_deref(), Some("23.4.1"));
    assert_eq!(
        ci.version_source.as_deref(),
        Some("/usr/local/lib/python3.11/dist-packages/cloud_init-23.4.1.dist-info/METADATA")
    );
}

/// Fedora CoreOS and Flatcar are provisioned by Ignition: the alternative
/// is found and KakaoCloud's admin_user is `core`.
#[test]
fn ignition_families() {
    let r = build(|t| {
        write(
            t,
            "/usr/lib/os-release",
            b"NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\nVARIANT_ID=coreos\n",
        );
        link(t, "/etc/os-release", "../usr/lib/os-release");
        write(
            t,
            "/usr/lib/dracut/modules.d/35ignition/module-setup.sh",
            b"#!/bin/bash\n",
        );
        write(t, "/usr/lib/systemd/systemd", ELF_X86_64);
        write(t, "/usr/sbin/sshd", ELF_X86_64);
    });
    let g = &r.guest;
    assert_eq!(g.os.id.as_deref(), Some("fedora"));
    assert_eq!(g.os.variant_id.as_deref(), Some("coreos"));
    assert_eq!(g.cloud_init.alternatives, ["ignition"]);
    assert!(!g.cloud_init.installed);
    assert_eq!(g.kakaocloud.admin_user.as_deref(), Some("core"));
    let r = build(|t| {
        write(
            t,
            "/usr/lib/os-release",
            b"NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION_ID=3815.2.2\n",
        );
        link(t, "/etc/os-release", "../usr/lib/os-release");
        write(t, "/usr/bin/coreos-cloudinit", ELF_X86_64);
        write(t, "/usr/bin/ignition", ELF_X86_64);
    });
    let g = &r.guest;
    assert_eq!(g.os.id.as_deref(), Some("flatcar"));
    assert_eq!(g.cloud_init.alternatives, ["coreos-cloudinit", "ignition"]);
    assert_eq!(g.kakaocloud.distro.as_deref(), Some("flatcar"));
    assert_eq!(g.kakaocloud.admin_user.as_deref(), Some("core"));
}

/// CentOS 7's layout with only the egg-info file (a distutils install)
/// still gives the version.
#[test]
fn python2_egg_info_file() {
    let r = build(|t| {
        write(t, "/etc/os-release", b"ID=\"centos\"\nVERSION_ID=\"7\"\n");
        write(
            t,
            "/usr/lib/python2.7/site-packages/cloud_init-0.7.5-py2.7.egg-info",
            b"Metadata-Version: 1.0\nName: cloud-init\nVersion: 0.7.5\n",
        );
    });
    let ci = &r.guest.cloud_init;
    assert!(ci.installed);
    assert_eq!(ci.version.as_deref(), Some("0.7.5"));
    assert_eq!(
        ci.version_source.as_deref(),
        Some("/usr/lib/python2.7/site-packages/cloud_init-0.7.5-py2.7.egg-info")
    );
}

/// A drop-in cloud-init ignores is reported with the reason, and the
/// weaker files' list applies.
#[test]
fn ignored_dropin_is_reported() {
    let r = build(|t| {
        write(t, "/etc/os-release", b"ID=debian\n");
        write(t, "/usr/bin/cloud-init", b"#!/usr/bin/python3\n");
        write(
            t,
            "/etc/cloud/cloud.cfg",
            b"datasource_list: [ConfigDrive, NoCloud]\n",
        );
        write(
            t,
            "/etc/cloud/cloud.cfg.d/99-bad.cfg",
            b"datasource_list: [NoCloud]\nx: !!python/name:os.system\n",
        );
        write(
            t,
            "/etc/cloud/cloud.cfg.d/50-notcfg.txt",
            b"datasource_list: [NoCloud]\n",
        );
    });
    let ci = &r.guest.cloud_init;
    assert_eq!(
        ci.datasource_list.as_deref(),
        Some(&["ConfigDrive".to_owned(), "NoCloud".to_owned()][..])
    );
    assert_eq!(
        ci.datasource_source.as_deref(),
        Some("/etc/cloud/cloud.cfg")
    );
    assert_eq!(ci.ignored_configs.len(), 1, "{:?}", ci.ignored_configs);
    assert!(
        ci.ignored_configs[0]
            .starts_with("/etc/cloud/cloud.cfg.d/99-bad.cfg: ignored by cloud-init")
    );
}
