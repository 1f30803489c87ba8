//! The cases of issue 10, each a passing guest with one change, built at
//! test time: `family_tree` (tools/fixtures/families.sh) lays out the
//! distribution, the test changes one thing, `family_ext4_gpt` makes the
//! disk with sgdisk and mkfs.ext4 -d, and the verdicts come from inspecting
//! it and running the profiles. Expected verdicts and codes follow the
//! provider rules (docs/check-json.md) and systemd's and cloud-init's
//! documented behaviour. bash, sgdisk and mkfs.ext4 are required.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgcheck_disk::Format;
use imgcheck_rules::{CheckInput, ImageFacts, ImageFormat, Provider, Verdict, check};
use imgcheck_source::{ByteSource, FileSource};

fn families_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/fixtures/families.sh")
}

fn sh(script: &str, args: &[&Path]) {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(args)
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap_or_else(|e| panic!("bash is required: {e}"));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A guest of `family` changed by `change`, judged by `provider`.
fn case(family: &str, change: impl FnOnce(&Path), provider: Provider) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let img = dir.path().join("disk.img");
    let lib = families_sh();
    sh(
        &format!("source \"$1\"; family_tree {family} \"$2\""),
        &[&lib, &tree],
    );
    change(&tree);
    sh(
        "source \"$1\"; family_ext4_gpt \"$2\" \"$3\"",
        &[&lib, &tree, &img],
    );
    let src: Arc<dyn ByteSource> = Arc::new(FileSource::open(&img).unwrap());
    let report = imgcheck_guest::inspect(src.clone());
    let image = ImageFacts {
        path: "disk.img".into(),
        format: Some(ImageFormat::Disk(Format::Raw)),
        virtual_size: Some(src.len()),
        file_size: src.len(),
        ..Default::default()
    };
    check(
        provider,
        &CheckInput {
            image: &image,
            guest: Some(&report),
        },
    )
}

fn put(root: &Path, p: &str, data: &str) {
    let p = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn rm(root: &Path, p: &str) {
    std::fs::remove_file(root.join(p.trim_start_matches('/'))).unwrap();
}

fn link(root: &Path, p: &str, target: &str) {
    let p = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

const DO: Provider = Provider::DigitalOcean;

fn hint(v: &Verdict, code: &str) -> String {
    v.findings
        .iter()
        .find(|f| f.code == code)
        .and_then(|f| f.hint.clone())
        .unwrap_or_default()
}

#[test]
fn baselines_pass() {
    for f in ["debian", "rocky"] {
        let v = case(f, |_| {}, DO);
        assert!(v.pass && v.codes().is_empty(), "{f}: {:?}", v.findings);
    }
}

#[test]
fn cloud_init_disabled_fails() {
    let v = case(
        "debian",
        |t| put(t, "/etc/cloud/cloud-init.disabled", ""),
        DO,
    );
    assert_eq!(v.codes(), ["cloud_init.disabled"]);
    assert!(!v.pass);
    let v = case(
        "debian",
        |t| {
            put(
                t,
                "/boot/grub/grub.cfg",
                "menuentry 'Debian' {\n\tlinux /boot/vmlinuz-6.1.0-18-amd64 root=LABEL=root ro cloud-init=disabled\n}\n",
            )
        },
        DO,
    );
    assert_eq!(v.codes(), ["cloud_init.disabled"]);
    assert!(hint(&v, "cloud_init.disabled").contains("GRUB_CMDLINE_LINUX"));
    let v = case(
        "debian",
        |t| {
            put(
                t,
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX=\"console=ttyS0 cloud-init=disabled\"\n",
            )
        },
        DO,
    );
    assert_eq!(v.codes(), ["cloud_init.disabled"]);
    // RHEL-family: a BLS entry's options line.
    let v = case(
        "rocky",
        |t| {
            let dir = t.join("boot/loader/entries");
            let e = std::fs::read_dir(&dir)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            let s = std::fs::read_to_string(&e).unwrap();
            std::fs::write(
                &e,
                s.replace("no_timer_check", "no_timer_check cloud-init=disabled"),
            )
            .unwrap();
        },
        DO,
    );
    assert_eq!(v.codes(), ["cloud_init.disabled"]);
    assert!(!v.pass);
}

#[test]
fn sshd_masked_by_empty_unit_file() {
    // systemd.unit(5): an empty unit file masks the unit.
    let v = case(
        "debian",
        |t| put(t, "/etc/systemd/system/ssh.service", ""),
        DO,
    );
    assert_eq!(v.codes(), ["sshd.not_enabled"]);
    assert!(!v.pass);
    let h = hint(&v, "sshd.not_enabled");
    assert!(h.contains("systemctl unmask ssh.service"), "{h}");
}

#[test]
fn sshd_masked_by_dev_null_link() {
    let v = case(
        "rocky",
        |t| link(t, "/etc/systemd/system/sshd.service", "/dev/null"),
        DO,
    );
    assert_eq!(v.codes(), ["sshd.not_enabled"]);
    assert!(hint(&v, "sshd.not_enabled").contains("systemctl unmask sshd.service"));
}

#[test]
fn sshd_wants_link_without_unit_file() {
    let v = case(
        "rocky",
        |t| rm(t, "/usr/lib/systemd/system/sshd.service"),
        DO,
    );
    assert_eq!(v.codes(), ["sshd.not_enabled"]);
    assert!(!v.pass);
}

#[test]
fn sshd_only_under_rescue_target() {
    let v = case(
        "rocky",
        |t| {
            rm(
                t,
                "/etc/systemd/system/multi-user.target.wants/sshd.service",
            );
            link(
                t,
                "/etc/systemd/system/rescue.target.wants/sshd.service",
                "/usr/lib/systemd/system/sshd.service",
            );
        },
        DO,
    );
    assert_eq!(v.codes(), ["sshd.not_enabled"]);
}

#[test]
fn sshd_socket_activation_counts() {
    // Ubuntu 22.10+: ssh.socket in sockets.target.wants, the service not
    // enabled.
    let v = case(
        "ubuntu",
        |t| {
            rm(t, "/etc/systemd/system/multi-user.target.wants/ssh.service");
            put(
                t,
                "/usr/lib/systemd/system/ssh.socket",
                "[Socket]\nListenStream=22\nAccept=no\n\n[Install]\nWantedBy=sockets.target\n",
            );
            link(
                t,
                "/etc/systemd/system/sockets.target.wants/ssh.socket",
                "/usr/lib/systemd/system/ssh.socket",
            );
            rm(t, "/etc/cloud/cloud.cfg.d/90_dpkg.cfg");
        },
        DO,
    );
    assert!(v.pass && v.codes().is_empty(), "{:?}", v.findings);
}

#[test]
fn openrc_and_default_target_changes() {
    let v = case(
        "alpine-openrc",
        |t| rm(t, "/etc/runlevels/default/sshd"),
        DO,
    );
    assert!(v.codes().contains(&"sshd.not_enabled"), "{:?}", v.codes());
    // default.target moved to rescue.target: multi-user.target's wants are
    // never reached.
    let v = case(
        "debian",
        |t| {
            link(
                t,
                "/etc/systemd/system/default.target",
                "/usr/lib/systemd/system/rescue.target",
            )
        },
        DO,
    );
    assert_eq!(v.codes(), ["sshd.not_enabled"]);
}

#[test]
fn cloud_init_prerelease_versions_are_too_old() {
    for v in ["0.7.7rc1", "0.7.6"] {
        let got = case(
            "debian",
            |t| {
                put(
                    t,
                    "/usr/lib/python3/dist-packages/cloudinit/version.py",
                    &format!("__VERSION__ = \"{v}\"\n"),
                )
            },
            DO,
        );
        assert_eq!(got.codes(), ["cloud_init.too_old"], "{v}");
    }
    // Only the dpkg database knows: a bzr snapshot of 0.7.7.
    let got = case(
        "debian",
        |t| {
            std::fs::remove_dir_all(t.join("usr/lib/python3/dist-packages/cloudinit")).unwrap();
            std::fs::remove_dir_all(
                t.join("usr/lib/python3/dist-packages/cloud_init-22.4.2.egg-info"),
            )
            .unwrap();
            put(
                t,
                "/var/lib/dpkg/status",
                "Package: cloud-init\nStatus: install ok installed\nVersion: 0.7.7~bzr1160-0ubuntu1\n",
            );
        },
        DO,
    );
    assert_eq!(got.codes(), ["cloud_init.too_old"]);
}

/// Each YAML form issue 10 found hiding NoCloud-before-ConfigDrive, judged
/// twice. Without ds-identify cloud-init's own reading (PyYAML's, see
/// crates/imgcheck-guest/tests/yaml_differential.rs) governs: every form
/// shows NoCloud first. With ds-identify (the debian family runs it from
/// cloud-init's generator) its line-by-line reading governs at boot (see
/// crates/imgcheck-guest/tests/ds_identify_differential.rs, which runs the
/// real script on these forms): where it does not see the list, the
/// NoCloud-first configuration is a warning; where it reads NoCloud first
/// (`] in quotes`, the first line of a multi-line flow), an error.
#[test]
fn yaml_forms_that_hid_nocloud_first() {
    const OVERRIDDEN: &str = "cloud_init.nocloud_first_overridden";
    const FIRST: &str = "cloud_init.nocloud_before_configdrive";
    for (name, text, with_ds_identify) in [
        (
            "quoted key",
            "\"datasource_list\": [NoCloud, ConfigDrive, None]\n",
            &[OVERRIDDEN][..],
        ),
        (
            "alias",
            "x: &ds [NoCloud, ConfigDrive, None]\ndatasource_list: *ds\n",
            // ds-identify searches for a datasource named `*ds`.
            &[OVERRIDDEN, "cloud_init.datasource_missing"][..],
        ),
        (
            "BOM",
            "\u{FEFF}datasource_list: [NoCloud, ConfigDrive, None]\n",
            &[OVERRIDDEN][..],
        ),
        (
            "!!seq",
            "datasource_list: !!seq [NoCloud, ConfigDrive, None]\n",
            // ds-identify reads `[NoCloud` as a name.
            &[OVERRIDDEN][..],
        ),
        (
            "] in quotes",
            "datasource_list: ['x]y', NoCloud, ConfigDrive]\n",
            &[FIRST][..],
        ),
        (
            "multi-line flow map",
            "{\n  datasource_list: [NoCloud,\n    ConfigDrive],\n  x: 1\n}\n",
            &[FIRST][..],
        ),
    ] {
        let put_it = |t: &Path| put(t, "/etc/cloud/cloud.cfg.d/99-x.cfg", text);
        let v = case("debian", put_it, DO);
        assert_eq!(v.codes(), with_ds_identify, "{name}, with ds-identify");
        let v = case(
            "debian",
            |t| {
                put_it(t);
                rm(t, "/usr/lib/systemd/system-generators/cloud-init-generator");
            },
            DO,
        );
        assert_eq!(v.codes(), [FIRST], "{name}, without ds-identify");
    }
    // A trailing `---` makes a second document: safe_load refuses the file
    // and cloud-init ignores it, but ds-identify reads its one-line list
    // and binds cloud-init to it at boot.
    let trailing = |t: &Path| {
        put(
            t,
            "/etc/cloud/cloud.cfg.d/99-x.cfg",
            "datasource_list: [NoCloud, ConfigDrive]\n---\n",
        )
    };
    let v = case("debian", trailing, DO);
    assert_eq!(v.codes(), [FIRST, "cloud_init.config_ignored"]);
    let v = case(
        "debian",
        |t| {
            trailing(t);
            rm(t, "/usr/lib/systemd/system-generators/cloud-init-generator");
        },
        DO,
    );
    // Without ds-identify the ignored file's list never applies; the
    // built-in default (NoCloud first) does.
    assert_eq!(v.codes(), [FIRST, "cloud_init.config_ignored"]);
    assert!(v.findings[0].message.contains("built-in default"));
    // A folded scalar is one string, not a list: no datasource named.
    let v = case(
        "debian",
        |t| {
            put(
                t,
                "/etc/cloud/cloud.cfg.d/99-x.cfg",
                "datasource_list: >\n  NoCloud\n  ConfigDrive\n",
            )
        },
        DO,
    );
    assert_eq!(v.codes(), ["cloud_init.datasource_missing"]);
}

#[test]
fn effective_list_when_nothing_is_configured() {
    // systemd + ds-identify: ds-identify's order (ConfigDrive first) governs.
    let v = case("debian", |_| {}, DO);
    assert!(v.codes().is_empty());
    // No generator: cloud-init's built-in list, NoCloud first.
    let v = case(
        "debian",
        |t| rm(t, "/usr/lib/systemd/system-generators/cloud-init-generator"),
        DO,
    );
    assert_eq!(v.codes(), ["cloud_init.nocloud_before_configdrive"]);
    let f = &v.findings[0];
    assert!(f.message.contains("built-in default"), "{}", f.message);
    assert!(
        f.hint
            .as_deref()
            .unwrap()
            .contains("/etc/cloud/cloud.cfg.d/")
    );
}

/// cloud-init 24.1+ on Alpine runs ds-identify from OpenRC
/// (sysvinit/openrc/cloud-init-ds-identify): then its order governs.
#[test]
fn openrc_ds_identify_service() {
    let v = case(
        "alpine-openrc",
        |t| {
            put(t, "/usr/lib/cloud-init/ds-identify", "#!/bin/sh\n");
            put(
                t,
                "/etc/init.d/cloud-init-ds-identify",
                "#!/sbin/openrc-run\n",
            );
            link(
                t,
                "/etc/runlevels/boot/cloud-init-ds-identify",
                "/etc/init.d/cloud-init-ds-identify",
            );
        },
        DO,
    );
    assert!(v.pass && v.codes().is_empty(), "{:?}", v.findings);
}

#[test]
fn nocloud_on_the_kernel_command_line_hint() {
    let v = case(
        "debian",
        |t| {
            put(
                t,
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX=\"ds=nocloud;s=http://10.0.0.1/\"\n",
            )
        },
        DO,
    );
    assert_eq!(v.codes(), ["cloud_init.nocloud_before_configdrive"]);
    let h = hint(&v, "cloud_init.nocloud_before_configdrive");
    assert!(
        h.contains("GRUB_CMDLINE_LINUX") && h.contains("update-grub"),
        "{h}"
    );
}

#[test]
fn kakaocloud_os_info_and_root_volume_hint() {
    let v = case("alpine-openrc", |_| {}, Provider::KakaoCloud);
    assert_eq!(
        v.codes(),
        ["kakaocloud.volume_import", "kakaocloud.os_info"]
    );
    let info = &v.findings[1].message;
    assert!(
        info.contains("type=linux, distro=alpine, architecture=x86_64, admin_user=alpine"),
        "{info}"
    );
    assert!(hint(&v, "kakaocloud.volume_import").contains("root (bootable) volume"));
}
