//! DigitalOcean custom images.
//!
//! Requirements, from the "Image Requirements" list of the Custom Images
//! features page and the Limits page (providers.md §1.1):
//!
//! * raw `.img` with an MBR or GPT partition table, qcow2, VHDX, VDI, VMDK;
//! * optionally gzip or bzip2 compressed (xz is rejected);
//! * under 100 GB uncompressed (we treat 100 GB, decimal, as excluded);
//! * a Unix-like OS (no Windows) supporting ext3/ext4;
//! * cloud-init 0.7.7+ or cloudbase-init, coreos-cloudinit, ignition,
//!   bsd-cloudinit, with NoCloud not listed before ConfigDrive;
//! * sshd installed and enabled at boot;
//! * BIOS boot (UEFI is not supported).

use imgcheck_disk::{Container, Format};
use imgcheck_guest::GuestReport;

use crate::common::{self, Out, gb, os_kind, os_label};
use crate::facts::{CheckInput, ImageErrorKind, ImageFormat};
use crate::{Severity, codes, version};

/// The "Image Requirements" list.
pub(crate) const DOC_REQUIREMENTS: &str =
    "https://docs.digitalocean.com/products/custom-images/details/features/";
/// Limits and known issues (UEFI, Windows, ISO).
pub(crate) const DOC_LIMITS: &str =
    "https://docs.digitalocean.com/products/custom-images/details/limits/";
/// The user report of xz being rejected.
pub(crate) const DOC_XZ: &str = "https://github.com/coreos/fedora-coreos-tracker/issues/395";

/// "100 GB or less", "smaller than 100 GB", "less than 100 GB": the
/// strictest reading, in decimal bytes.
pub(crate) const MAX_UNCOMPRESSED: u64 = 100_000_000_000;

/// cloud-init's documented minimum.
const MIN_CLOUD_INIT: &str = "0.7.7";

/// The DigitalOcean profile.
pub(crate) fn profile(input: &CheckInput<'_>, out: &mut Out) {
    common::integrity(input, out, DOC_REQUIREMENTS, true);
    url(input, out);
    format(input, out);
    compression(input, out);
    size(input, out);
    let Some(guest) = input.guest else { return };
    partition_table(input, guest, out);
    filesystem(input, guest, out);
    if os(input, guest, out) {
        let before = out.findings.len();
        cloud_init(guest, out);
        sshd(guest, out);
        usr_unreadable(guest, out, before);
    }
    boot(guest, out);
    common::sector_size(guest, out, false, DOC_REQUIREMENTS);
    common::boot_warnings(input, guest, out, true, DOC_REQUIREMENTS);
}

/// The convert hint when imgcheck can read the image, else `None`.
fn convert_hint(input: &CheckInput<'_>) -> Option<String> {
    input.image.readable().then(|| {
        "`imgcheck convert --for digitalocean IMAGE` writes a qcow2 DigitalOcean takes".to_owned()
    })
}

/// `format.unsupported`: the five formats are taken; anything else
/// recognised (VHD, qcow1, QED) is not.
/// `url.head_unsupported`: "Import by URL fails if the image is served by a
/// CDN that doesn't support HEAD requests" (Limits page).
fn url(input: &CheckInput<'_>, out: &mut Out) {
    if input.image.head_supported == Some(false) {
        out.push(
            codes::URL_HEAD_UNSUPPORTED,
            Severity::Error,
            "the server refuses HEAD requests for this URL; DigitalOcean's importer sends HEAD first and the import fails",
            Some("serve the image from a host that answers HEAD for this URL, e.g. a public-read object in DigitalOcean Spaces (a URL presigned for GET is refused for HEAD)".into()),
            DOC_LIMITS,
        );
    }
}

fn format(input: &CheckInput<'_>, out: &mut Out) {
    if let Some(ImageFormat::Other(name)) = &input.image.format {
        out.push(
            codes::FORMAT_UNSUPPORTED,
            Severity::Error,
            format!(
                "the image is {name}; DigitalOcean takes raw (with an MBR or GPT partition table), qcow2, VHDX, VDI or VMDK"
            ),
            Some(format!(
                "convert it: `qemu-img convert -O qcow2 IMAGE OUT.qcow2`{}",
                if input.image.readable() {
                    " or `imgcheck convert --for digitalocean IMAGE`"
                } else {
                    ""
                }
            )),
            DOC_REQUIREMENTS,
        );
    }
}

/// `compression.unsupported`: gzip and bzip2 are taken; xz is rejected;
/// zstd and zip are not listed; a tar (OVA) holds a disk to extract.
fn compression(input: &CheckInput<'_>, out: &mut Out) {
    let Some(c) = input.image.compression else {
        return;
    };
    let (message, doc, fallback) = match c {
        Container::Gzip | Container::Bzip2 => return,
        Container::Xz => (
            "the image is xz-compressed; DigitalOcean rejects xz (it takes gzip or bzip2)".to_owned(),
            DOC_XZ,
            "decompress it (`xz -dk IMAGE`) and check the result; recompress with gzip or bzip2 if you like",
        ),
        Container::Tar => (
            "the image is a tar archive (an OVA?); DigitalOcean fetches a single disk image, not an archive".to_owned(),
            DOC_REQUIREMENTS,
            "extract the disk (`tar xf IMAGE`, usually a .vmdk) and check that file",
        ),
        other => (
            format!("the image is {other}-compressed; DigitalOcean takes only gzip or bzip2"),
            DOC_REQUIREMENTS,
            "decompress it and check the result; recompress with gzip or bzip2 if you like",
        ),
    };
    // A tar is never fixed by converting this file: the disk is inside.
    let hint = if c == Container::Tar {
        Some(fallback.to_owned())
    } else {
        convert_hint(input).or_else(|| Some(fallback.to_owned()))
    };
    out.push(
        codes::COMPRESSION_UNSUPPORTED,
        Severity::Error,
        message,
        hint,
        doc,
    );
}

/// `size.too_large`: under 100 GB uncompressed.
fn size(input: &CheckInput<'_>, out: &mut Out) {
    let img = input.image;
    let size = img.virtual_size.or_else(|| match &img.error {
        Some(e) if e.kind == ImageErrorKind::TooLarge => e.uncompressed_at_least,
        _ => None,
    });
    let Some(size) = size else { return };
    if size >= MAX_UNCOMPRESSED {
        out.push(
            codes::SIZE_TOO_LARGE,
            Severity::Error,
            format!(
                "the image is {} ({size} bytes) uncompressed; DigitalOcean takes images under 100 GB",
                gb(size)
            ),
            Some(
                "shrink the filesystem and the disk (resize2fs, then a smaller partition and `qemu-img resize --shrink`)"
                    .into(),
            ),
            DOC_REQUIREMENTS,
        );
    }
}

/// `partition_table.missing`: a raw image needs an MBR or GPT table.
fn partition_table(input: &CheckInput<'_>, guest: &GuestReport, out: &mut Out) {
    if input.image.disk_format() == Some(Format::Raw)
        && guest.partitions.kind == imgcheck_guest::TableKind::None
    {
        out.push(
            codes::PARTITION_TABLE_MISSING,
            Severity::Error,
            "the raw image has no partition table; DigitalOcean takes raw images with an MBR or GPT partition table",
            Some(
                "build the image on a partitioned disk (e.g. one MBR partition holding the root filesystem, with GRUB installed)"
                    .into(),
            ),
            DOC_REQUIREMENTS,
        );
    }
}

/// `filesystem.unsupported` (error) for a root that is not ext and not one
/// of the UNCONFIRMED kinds; `filesystem.unconfirmed` (warning) for a root
/// on XFS, btrfs or LVM, which DigitalOcean's "must support ext3 or ext4"
/// neither allows nor forbids (providers.md §1.1), and for those kinds when
/// imgcheck could not read them to find the root.
fn filesystem(input: &CheckInput<'_>, guest: &GuestReport, out: &mut Out) {
    use imgcheck_guest::FsKind;
    // The root's own volume decides; with no root found, any PV counts.
    let lvm = match input.root_fs() {
        Some(fs) => fs.lv.is_some(),
        None => guest.filesystems.iter().any(|f| f.kind == FsKind::LvmPv),
    };
    let unconfirmed = |k: FsKind| matches!(k, FsKind::Xfs | FsKind::Btrfs);
    let what = match input.root_fs() {
        Some(fs) if common::is_ext(fs.kind) && !lvm => return,
        Some(fs) if common::is_ext(fs.kind) || unconfirmed(fs.kind) => format!(
            "the root filesystem is {}{}",
            common::fs_name(fs.kind),
            if lvm { " on LVM" } else { "" }
        ),
        Some(_) => {
            common::ext_root(
                input,
                guest,
                out,
                Severity::Error,
                false,
                "DigitalOcean requires images to support ext3 or ext4",
                DOC_REQUIREMENTS,
            );
            return;
        }
        // No root: only a filesystem imgcheck could not read may hold it
        // (an XFS or btrfs that was read and holds no OS is just not a root).
        None if common::root_unreadable(input, guest).is_none() => return,
        None => {
            let found: Vec<String> = guest
                .filesystems
                .iter()
                .filter(|f| unconfirmed(f.kind) || f.kind == FsKind::LvmPv)
                .map(|f| {
                    let at = f
                        .partition
                        .map_or_else(|| "the whole disk".to_owned(), |n| format!("partition {n}"));
                    format!("{} on {at}", common::fs_name(f.kind))
                })
                .collect();
            if found.is_empty() {
                return;
            }
            format!("the root is likely on {}", found.join(", "))
        }
    };
    out.push(
        codes::FILESYSTEM_UNCONFIRMED,
        Severity::Warning,
        format!(
            "{what}; UNCONFIRMED: DigitalOcean documents only that images must support ext3 or ext4, and says nothing of XFS, btrfs or LVM roots"
        ),
        Some("if Droplets from it do not boot or resize, rebuild the image with an ext4 root on a plain partition".into()),
        DOC_REQUIREMENTS,
    );
}

/// `os.not_found` / `os.unsupported`. Returns true when a Unix-like OS was
/// found, so that the guest-configuration rules have something to judge.
fn os(input: &CheckInput<'_>, guest: &GuestReport, out: &mut Out) -> bool {
    match os_kind(guest) {
        Some("windows") => {
            out.push(
                codes::OS_UNSUPPORTED,
                Severity::Error,
                format!(
                    "the image holds {}; DigitalOcean custom images must be a Unix-like OS (Windows is not supported)",
                    os_label(guest)
                ),
                None,
                DOC_LIMITS,
            );
            false
        }
        Some(_) if input.root_fs().is_some() => true,
        _ if common::root_unreadable(input, guest).is_some() => {
            let why = common::root_unreadable(input, guest).unwrap_or_default();
            out.push(
                codes::GUEST_UNVERIFIED,
                Severity::Warning,
                format!(
                    "the root filesystem could not be read ({why}), so imgcheck could not verify {}; DigitalOcean requires all of them",
                    common::GUEST_CHECKS
                ),
                Some("check those by hand in the image, or convert its root to ext4 so imgcheck can read it".into()),
                DOC_REQUIREMENTS,
            );
            false
        }
        _ => {
            out.push(
                codes::OS_NOT_FOUND,
                Severity::Error,
                format!(
                    "no operating system was found: every filesystem on the disk was read and none holds /etc/os-release, /usr/lib/os-release or a known layout{}; DigitalOcean requires a Unix-like OS",
                    common::unread_filesystems(guest)
                ),
                Some("check that the image holds an installed system, not an installer or an empty disk".into()),
                DOC_REQUIREMENTS,
            );
            false
        }
    }
}

/// cloud-init ≥ 0.7.7 or an alternative; not disabled; datasource order.
fn cloud_init(guest: &GuestReport, out: &mut Out) {
    let ci = &guest.guest.cloud_init;
    if !ci.alternatives.is_empty() {
        // cloudbase-init, coreos-cloudinit, ignition and bsd-cloudinit are
        // accepted as they are; the cloud-init rules do not apply.
        return;
    }
    if !ci.installed {
        out.push(
            codes::CLOUD_INIT_MISSING,
            Severity::Error,
            "cloud-init is not installed (nor cloudbase-init, coreos-cloudinit, ignition or bsd-cloudinit); DigitalOcean needs one to set up networking and SSH keys",
            Some("install the distribution's cloud-init package".into()),
            DOC_REQUIREMENTS,
        );
        return;
    }
    cloud_init_version(ci, out);
    if !ci.disabled_by.is_empty() {
        out.push(
            codes::CLOUD_INIT_DISABLED,
            Severity::Error,
            format!(
                "cloud-init is installed but disabled ({}); the Droplet would get no SSH key and no network configuration",
                ci.disabled_by.join("; ")
            ),
            Some(disabled_hint(&ci.disabled_by)),
            DOC_REQUIREMENTS,
        );
    }
    for f in &ci.ignored_configs {
        out.push(
            codes::CLOUD_INIT_CONFIG_IGNORED,
            Severity::Warning,
            format!("{f}; whatever it sets (datasource_list included) does not apply"),
            Some("fix the file so `python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1])))' FILE` loads it as a mapping".into()),
            DOC_REQUIREMENTS,
        );
    }
    datasource_order(ci, out);
}

/// When fstab mounts /usr from a filesystem imgcheck could not read (or
/// that is not on the disk), "missing" cloud-init or sshd is not evidence:
/// those findings (pushed from `from` on) become one `guest.unverified`
/// warning naming what could not be read.
fn usr_unreadable(guest: &GuestReport, out: &mut Out, from: usize) {
    let Some(note) = guest
        .notes
        .iter()
        .find(|n| n.starts_with("fstab mounts /usr "))
    else {
        return;
    };
    let missing = [codes::CLOUD_INIT_MISSING, codes::SSHD_MISSING];
    let tail = out.findings.split_off(from.min(out.findings.len()));
    let (unsure, keep): (Vec<_>, Vec<_>) =
        tail.into_iter().partition(|f| missing.contains(&f.code));
    out.findings.extend(keep);
    if unsure.is_empty() {
        return;
    }
    let what: Vec<&str> = unsure.iter().map(|f| f.code).collect();
    out.push(
        codes::GUEST_UNVERIFIED,
        Severity::Warning,
        format!(
            "/usr could not be read ({note}), so what lives there could not be verified ({} not found on the root alone); DigitalOcean requires cloud-init and sshd",
            what.join(", ")
        ),
        Some("check /usr by hand in the image".into()),
        DOC_REQUIREMENTS,
    );
}

/// The fix for each disable marker.
fn disabled_hint(markers: &[String]) -> String {
    let mut h = Vec::new();
    if markers
        .iter()
        .any(|m| m.starts_with("/etc/cloud/cloud-init.disabled"))
    {
        h.push("delete /etc/cloud/cloud-init.disabled in the image".to_owned());
    }
    if markers.iter().any(|m| m.contains("kernel command line")) {
        h.push("remove `cloud-init=disabled` from GRUB_CMDLINE_LINUX in /etc/default/grub and regenerate grub.cfg (`update-grub`, or `grub2-mkconfig -o /boot/grub2/grub.cfg`; for BLS entries `grubby --update-kernel=ALL --remove-args=cloud-init=disabled`)".to_owned());
    }
    h.join("; ")
}

/// `cloud_init.too_old` / `cloud_init.version_unknown`.
fn cloud_init_version(ci: &imgcheck_guest::CloudInitFacts, out: &mut Out) {
    let from = ci
        .version_source
        .as_deref()
        .map(|s| format!(" (from {s})"))
        .unwrap_or_default();
    match ci.version.as_deref() {
        Some(v) => match version::at_least(v, MIN_CLOUD_INIT) {
            Some(true) => {}
            Some(false) => out.push(
                codes::CLOUD_INIT_TOO_OLD,
                Severity::Error,
                format!("cloud-init is {v}{from}; DigitalOcean needs 0.7.7 or later"),
                Some("update the cloud-init package".into()),
                DOC_REQUIREMENTS,
            ),
            None => out.push(
                codes::CLOUD_INIT_VERSION_UNKNOWN,
                Severity::Warning,
                format!("cloud-init is installed, but its version {v:?}{from} could not be read; DigitalOcean needs 0.7.7 or later"),
                None,
                DOC_REQUIREMENTS,
            ),
        },
        None => out.push(
            codes::CLOUD_INIT_VERSION_UNKNOWN,
            Severity::Warning,
            "cloud-init is installed, but its version could not be found; DigitalOcean needs 0.7.7 or later",
            None,
            DOC_REQUIREMENTS,
        ),
    }
}

/// NoCloud before ConfigDrive, judged on the list that governs at boot
/// (configured, from the kernel command line, or the default that applies).
fn datasource_order(ci: &imgcheck_guest::CloudInitFacts, out: &mut Out) {
    let Some(list) = &ci.datasource_list else {
        return;
    };
    let at = |name: &str| {
        list.iter()
            .position(|d| d.trim().eq_ignore_ascii_case(name))
    };
    let source = ci
        .datasource_source
        .as_deref()
        .unwrap_or("the cloud-init configuration");
    let shown = format!("[{}]", list.join(", "));
    const GOOD: &str = "datasource_list: [ ConfigDrive, DigitalOcean, NoCloud, None ]";
    let fix = match ci.datasource_decided_by.as_deref() {
        Some("kernel_cmdline") if source.contains("/boot/loader/entries") => "remove the `ds=`/`ci.ds=` argument from the kernel command line (`grubby --update-kernel=ALL --remove-args=ds`, and from GRUB_CMDLINE_LINUX in /etc/default/grub), then run `cloud-init clean` in the image".to_owned(),
        Some("kernel_cmdline") => "remove `ds=nocloud` (or `ci.ds=`) from GRUB_CMDLINE_LINUX in /etc/default/grub and run `update-grub` (`grub2-mkconfig -o /boot/grub2/grub.cfg` on RHEL-family images), then `cloud-init clean` in the image".to_owned(),
        Some("config") => format!(
            "edit {source} to read `{GOOD}`, then run `cloud-init clean` in the image"
        ),
        Some("ds_identify_config") if source.contains("ds-identify.cfg") => "remove the `datasource:` line from /etc/cloud/ds-identify.cfg (or name ConfigDrive there), then run `cloud-init clean` in the image".to_owned(),
        Some("ds_identify_config") => format!(
            "edit the `datasource_list:` line of {source} to read `{GOOD}` (on one line: ds-identify reads only single-line lists), then run `cloud-init clean` in the image"
        ),
        _ => format!(
            "add /etc/cloud/cloud.cfg.d/99-digitalocean.cfg containing `{GOOD}` (keep it on one line: ds-identify reads only single-line lists), then run `cloud-init clean` in the image"
        ),
    };
    // NoCloud with no ConfigDrive after it is the same trouble as NoCloud
    // first (e.g. `ds=nocloud` on the kernel command line): ConfigDrive is
    // never reached.
    let nocloud_first = |list: &[String]| {
        let at = |name: &str| {
            list.iter()
                .position(|d| d.trim().eq_ignore_ascii_case(name))
        };
        at("NoCloud").is_some_and(|nc| at("ConfigDrive").is_none_or(|cd| nc < cd))
    };
    if !nocloud_first(list)
        && let Some(cfg) = ci.config_datasource_list.as_deref()
        && nocloud_first(cfg)
    {
        // ds-identify's reading governs at boot and is fine; cloud-init's
        // own reading is not, and would apply wherever ds-identify does not
        // run (or its policy is changed to `enabled`).
        let file = ci
            .config_datasource_source
            .as_deref()
            .unwrap_or("the cloud-init configuration");
        out.push(
            codes::CLOUD_INIT_NOCLOUD_FIRST_OVERRIDDEN,
            Severity::Warning,
            format!(
                "{file} sets datasource_list [{}] (NoCloud before ConfigDrive) in a form ds-identify does not read; at boot ds-identify's list {shown} from {source} overrides it, so Droplets work only as long as ds-identify runs",
                cfg.join(", ")
            ),
            Some(format!(
                "write the list on one line in {file}: `{GOOD}`, then run `cloud-init clean` in the image"
            )),
            DOC_REQUIREMENTS,
        );
    }
    if let Some(nc) = at("NoCloud")
        && at("ConfigDrive").is_none_or(|cd| nc < cd)
    {
        let order = if at("ConfigDrive").is_some() {
            "lists NoCloud before ConfigDrive"
        } else {
            "lists NoCloud and no ConfigDrive"
        };
        out.push(
            codes::CLOUD_INIT_NOCLOUD_BEFORE_CONFIGDRIVE,
            Severity::Error,
            format!(
                "datasource_list {shown} from {source} {order}; Droplets from this image will not function properly"
            ),
            Some(fix),
            DOC_REQUIREMENTS,
        );
    } else if at("ConfigDrive").is_none() && at("DigitalOcean").is_none() {
        out.push(
            codes::CLOUD_INIT_DATASOURCE_MISSING,
            Severity::Warning,
            format!(
                "datasource_list {shown} from {source} names neither ConfigDrive nor DigitalOcean; cloud-init will not find the Droplet's metadata"
            ),
            Some(fix),
            DOC_REQUIREMENTS,
        );
    }
}

/// sshd installed and enabled at boot.
fn sshd(guest: &GuestReport, out: &mut Out) {
    let s = &guest.guest.sshd;
    if !s.installed {
        out.push(
            codes::SSHD_MISSING,
            Severity::Error,
            "no sshd was found; DigitalOcean requires sshd installed and running at boot (Droplets from custom images are reached with SSH keys only)",
            Some("install the openssh-server package".into()),
            DOC_REQUIREMENTS,
        );
        return;
    }
    let init = s.init_system.as_deref().unwrap_or("the init system");
    match s.enabled {
        Some(true) => {}
        Some(false) => out.push(
            codes::SSHD_NOT_ENABLED,
            Severity::Error,
            format!(
                "sshd is installed but not enabled at boot ({init}{}); DigitalOcean requires it to run on boot",
                evidence(&s.evidence)
            ),
            Some(match s.init_system.as_deref() {
                Some("systemd") if !s.masked_units.is_empty() => format!(
                    "the unit is masked: `systemctl unmask {0}` then `systemctl enable {0}` in the image (unmasking removes the /dev/null link or empty file)",
                    s.masked_units.join(" ")
                ),
                Some("systemd") => "enable it in the image: `systemctl enable ssh` (Debian/Ubuntu) or `systemctl enable sshd`".into(),
                Some("rc.d") => "add `sshd_enable=\"YES\"` to /etc/rc.conf".into(),
                Some("openrc") => "`rc-update add sshd default`".into(),
                _ => "enable the sshd service at boot".into(),
            }),
            DOC_REQUIREMENTS,
        ),
        None => out.push(
            codes::SSHD_ENABLED_UNKNOWN,
            Severity::Warning,
            format!(
                "sshd is installed, but imgcheck could not tell whether it starts at boot{}",
                evidence(&s.evidence)
            ),
            Some("make sure the sshd service is enabled at boot".into()),
            DOC_REQUIREMENTS,
        ),
    }
}

fn evidence(e: &[String]) -> String {
    if e.is_empty() {
        String::new()
    } else {
        format!("; evidence: {}", e.join(", "))
    }
}

/// `boot.uefi_only`: BIOS boot is required.
fn boot(guest: &GuestReport, out: &mut Out) {
    let b = &guest.guest.boot;
    if b.uefi && !b.bios {
        out.push(
            codes::BOOT_UEFI_ONLY,
            Severity::Error,
            "the image boots only with UEFI; DigitalOcean custom images must boot with BIOS (UEFI is not supported)",
            Some(
                "install GRUB for BIOS as well (`grub-install --target=i386-pc`; on GPT add a BIOS boot partition)"
                    .into(),
            ),
            DOC_LIMITS,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{Provider, check};
    use imgcheck_disk::ExternalRef;
    use imgcheck_guest::{FsKind, TableKind};

    /// DigitalOcean's verdict on the good raw image whose guest `f` changed.
    fn run(f: &dyn Fn(&mut GuestReport)) -> crate::Verdict {
        let mut g = good_guest();
        f(&mut g);
        check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &raw_image(),
                guest: Some(&g),
            },
        )
    }

    fn codes_of(image: &crate::ImageFacts, guest: Option<&GuestReport>) -> Vec<&'static str> {
        let v = check(Provider::DigitalOcean, &CheckInput { image, guest });
        assert_eq!(v.pass, v.count(Severity::Error) == 0);
        v.codes()
    }

    #[test]
    fn good_image_passes_with_no_findings() {
        assert_eq!(
            codes_of(&raw_image(), Some(&good_guest())),
            Vec::<&str>::new()
        );
        for f in [Format::Qcow2, Format::Vhdx, Format::Vdi, Format::Vmdk] {
            let mut img = raw_image();
            img.format = Some(ImageFormat::Disk(f));
            assert_eq!(
                codes_of(&img, Some(&good_guest())),
                Vec::<&str>::new(),
                "{f}"
            );
        }
    }

    #[test]
    fn corrupt_image_fails() {
        assert_eq!(codes_of(&corrupt_image(), None), [codes::IMAGE_CORRUPT]);
        let mut img = raw_image();
        img.read_error = Some("L2 table points past the end".into());
        assert_eq!(codes_of(&img, Some(&good_guest())), [codes::IMAGE_CORRUPT]);
    }

    #[test]
    fn external_references_fail() {
        let mut img = raw_image();
        img.format = Some(ImageFormat::Disk(Format::Qcow2));
        img.backing_file = Some("base.qcow2".into());
        assert_eq!(
            codes_of(&img, Some(&good_guest())),
            [codes::IMAGE_EXTERNAL_REFERENCE]
        );
        let mut img = raw_image();
        img.format = Some(ImageFormat::Disk(Format::Vmdk));
        img.external_refs.push(ExternalRef {
            kind: "VMDK extent".into(),
            name: "disk-flat.vmdk".into(),
            opened: true,
        });
        assert_eq!(
            codes_of(&img, Some(&good_guest())),
            [codes::IMAGE_EXTERNAL_REFERENCE]
        );
        let mut img = raw_image();
        img.error = Some(crate::ImageError {
            kind: ImageErrorKind::ExternalReference,
            message: "refers to VMDK extent \"/etc/x\"".into(),
            hint: None,
            uncompressed_at_least: None,
        });
        assert_eq!(codes_of(&img, None), [codes::IMAGE_EXTERNAL_REFERENCE]);
    }

    #[test]
    fn dirty_is_a_warning() {
        let mut img = raw_image();
        img.dirty = true;
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: Some(&good_guest()),
            },
        );
        assert!(v.pass);
        assert_eq!(v.codes(), [codes::IMAGE_DIRTY]);
    }

    #[test]
    fn other_formats_are_unsupported() {
        let mut img = unreadable_image("the vhd (vpc) format is not supported");
        img.format = Some(ImageFormat::Other("vhd (vpc)".into()));
        assert_eq!(
            codes_of(&img, None),
            [codes::IMAGE_UNREADABLE, codes::FORMAT_UNSUPPORTED]
        );
    }

    #[test]
    fn compression() {
        for (c, bad) in [
            (Container::Gzip, false),
            (Container::Bzip2, false),
            (Container::Xz, true),
            (Container::Zstd, true),
            (Container::Zip, true),
            (Container::Tar, true),
        ] {
            let mut img = raw_image();
            img.compression = Some(c);
            let got = codes_of(&img, Some(&good_guest()));
            let want: &[&str] = if bad {
                &[codes::COMPRESSION_UNSUPPORTED]
            } else {
                &[]
            };
            assert_eq!(got, want, "{c}");
        }
        // The hint names `imgcheck convert` only when imgcheck can read it.
        let mut img = raw_image();
        img.compression = Some(Container::Xz);
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: Some(&good_guest()),
            },
        );
        assert!(
            v.findings[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("imgcheck convert")
        );
        assert_eq!(v.findings[0].doc, DOC_XZ);
        let mut img = unreadable_image("xz is not read");
        img.compression = Some(Container::Xz);
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: None,
            },
        );
        let f = v
            .findings
            .iter()
            .find(|f| f.code == codes::COMPRESSION_UNSUPPORTED)
            .unwrap();
        assert!(f.hint.as_deref().unwrap().contains("xz -dk"));
        let mut img = unreadable_image("tar is not read");
        img.compression = Some(Container::Tar);
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: None,
            },
        );
        let f = v
            .findings
            .iter()
            .find(|f| f.code == codes::COMPRESSION_UNSUPPORTED)
            .unwrap();
        assert!(f.hint.as_deref().unwrap().contains("tar xf"));
    }

    /// DigitalOcean's "100 GB", typed from its requirements (decimal, and
    /// exclusive: "less than 100 GB"), not taken from the code.
    const HUNDRED_GB: u64 = 100_000_000_000;

    #[test]
    fn size_limit_is_exclusive_decimal() {
        let mut img = raw_image();
        img.virtual_size = Some(HUNDRED_GB - 512);
        assert_eq!(codes_of(&img, Some(&good_guest())), Vec::<&str>::new());
        img.virtual_size = Some(HUNDRED_GB);
        assert_eq!(codes_of(&img, Some(&good_guest())), [codes::SIZE_TOO_LARGE]);
        // A decompression bomb stopped at imgcheck's limit.
        let mut img = unreadable_image("gzip stream decompresses to more than the limit");
        img.error.as_mut().unwrap().kind = ImageErrorKind::TooLarge;
        img.error.as_mut().unwrap().uncompressed_at_least = Some(200_000_000_000);
        img.virtual_size = None;
        assert_eq!(
            codes_of(&img, None),
            [codes::IMAGE_UNREADABLE, codes::SIZE_TOO_LARGE]
        );
    }

    #[test]
    fn raw_needs_a_partition_table() {
        let mut g = good_guest();
        g.partitions.kind = TableKind::None;
        assert_eq!(
            codes_of(&raw_image(), Some(&g)),
            [codes::PARTITION_TABLE_MISSING]
        );
        // Not a rule for the other formats.
        let mut img = raw_image();
        img.format = Some(ImageFormat::Disk(Format::Qcow2));
        assert_eq!(codes_of(&img, Some(&g)), Vec::<&str>::new());
        g.partitions.kind = TableKind::Mbr;
        assert_eq!(codes_of(&raw_image(), Some(&g)), Vec::<&str>::new());
    }

    /// "Images must support the ext3 or ext4 filesystems": ext2 is accepted
    /// too (the same driver and tools; docs/check-json.md,
    /// `filesystem.unsupported`), anything else is not.
    #[test]
    fn root_must_be_of_the_ext_family() {
        // providers.md §1.1: ext3/ext4 required; XFS, btrfs and LVM
        // UNCONFIRMED (a warning); anything else fails.
        for (k, want) in [
            (FsKind::Ext4, None),
            (FsKind::Ext3, None),
            (FsKind::Ext2, None),
            (FsKind::Xfs, Some(codes::FILESYSTEM_UNCONFIRMED)),
            (FsKind::Btrfs, Some(codes::FILESYSTEM_UNCONFIRMED)),
            (FsKind::Ntfs, Some(codes::FILESYSTEM_UNSUPPORTED)),
        ] {
            let mut g = good_guest();
            g.filesystems[1].kind = k;
            let v = check(
                Provider::DigitalOcean,
                &CheckInput {
                    image: &raw_image(),
                    guest: Some(&g),
                },
            );
            assert_eq!(v.codes(), want.into_iter().collect::<Vec<_>>(), "{k:?}");
            assert_eq!(v.pass, want != Some(codes::FILESYSTEM_UNSUPPORTED), "{k:?}");
        }
        // ext4 on an LVM logical volume: UNCONFIRMED too.
        let mut g = good_guest();
        g.filesystems[1].lv = Some("vg/root".into());
        assert_eq!(
            codes_of(&raw_image(), Some(&g)),
            [codes::FILESYSTEM_UNCONFIRMED]
        );
        // A PV elsewhere on the disk with the root on a plain partition: the
        // root is what DigitalOcean boots, so no warning.
        let mut g = good_guest();
        g.filesystems.push(imgcheck_guest::Filesystem {
            kind: FsKind::LvmPv,
            partition: Some(3),
            ..Default::default()
        });
        assert_eq!(codes_of(&raw_image(), Some(&g)), Vec::<&str>::new());
    }

    /// Two ostree deployments and no boot entry: inspection read every
    /// filesystem (its note says so) but could not tell which tree boots.
    /// That is an unverified OS (a warning naming why), not os.not_found.
    #[test]
    fn undetermined_root_is_unverified_not_absent() {
        let mut g = good_guest();
        g.root = None;
        g.guest.os.kind = "unknown".into();
        g.filesystems[1].kind = FsKind::Xfs;
        let why = "ostree: 2 deployments and no boot entry naming one; cannot tell which boots";
        g.root_undetermined = Some(why.into());
        g.notes.push(why.into());
        let v = run(&|x| *x = g.clone());
        assert_eq!(
            v.codes(),
            [codes::FILESYSTEM_UNCONFIRMED, codes::GUEST_UNVERIFIED]
        );
        assert!(v.pass);
        let m = &v.findings[1].message;
        assert!(m.contains("2 deployments"), "{m}");
        assert!(!m.contains("is not read by imgcheck"), "{m}");
        // Without the field, the same disk is one with no OS.
        g.root_undetermined = None;
        g.notes
            .push("no root filesystem found (no readable filesystem holds os-release)".into());
        assert_eq!(run(&|x| *x = g.clone()).codes(), [codes::OS_NOT_FOUND]);
    }

    #[test]
    fn os_not_found_and_windows() {
        let mut g = good_guest();
        g.root = None;
        g.guest.os.kind = String::new();
        assert_eq!(codes_of(&raw_image(), Some(&g)), [codes::OS_NOT_FOUND]);
        // A root imgcheck cannot read (XFS) is a warning that says what
        // was not verified, never os.not_found: the verdict passes.
        let mut g = good_guest();
        g.root = None;
        g.filesystems[1].kind = FsKind::Xfs;
        g.guest.os.kind = "unknown".into();
        let img = raw_image();
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: Some(&g),
            },
        );
        assert_eq!(
            v.codes(),
            [codes::FILESYSTEM_UNCONFIRMED, codes::GUEST_UNVERIFIED]
        );
        assert!(v.pass);
        let m = &v.findings[1].message;
        assert!(m.contains("xfs on partition 2 is not read"), "{m}");
        assert!(m.contains("cloud-init") && m.contains("sshd"), "{m}");
        // The same disk once a reader opens the XFS and finds no OS in it:
        // inspection's note says every filesystem was read. An XFS that was
        // read and holds no OS is not a root, so there is no filesystem
        // warning, only os.not_found.
        g.notes
            .push("no root filesystem found (no readable filesystem holds os-release)".into());
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: Some(&g),
            },
        );
        assert_eq!(v.codes(), [codes::OS_NOT_FOUND]);
        // An ext4 imgcheck refused (unsupported feature): the same warning,
        // naming the reason.
        let mut g = good_guest();
        g.root = None;
        g.filesystems[1].error = Some("ext4: inline_data is not supported".into());
        g.guest.os.kind = "unknown".into();
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: Some(&g),
            },
        );
        assert_eq!(v.codes(), [codes::GUEST_UNVERIFIED]);
        assert!(v.findings[0].message.contains("inline_data"));
        // FreeBSD on UFS: bsd-cloudinit and rc.conf are out of reach, and
        // the warning says so.
        let mut g = good_guest();
        g.root = None;
        g.filesystems[1].kind = FsKind::Ufs;
        g.guest.os.kind = "unknown".into();
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: Some(&g),
            },
        );
        assert_eq!(v.codes(), [codes::GUEST_UNVERIFIED]);
        assert!(v.pass);
        let m = &v.findings[0].message;
        assert!(m.contains("FreeBSD") && m.contains("bsd-cloudinit"), "{m}");
        let mut g = good_guest();
        g.guest.os.kind = "windows".into();
        g.filesystems[1].kind = FsKind::Ntfs;
        assert_eq!(
            codes_of(&raw_image(), Some(&g)),
            [codes::FILESYSTEM_UNSUPPORTED, codes::OS_UNSUPPORTED]
        );
        let mut g = good_guest();
        g.guest.os.kind = "freebsd".into();
        g.guest.cloud_init.installed = false;
        g.guest.cloud_init.alternatives = vec!["bsd-cloudinit".into()];
        assert_eq!(codes_of(&raw_image(), Some(&g)), Vec::<&str>::new());
    }

    #[test]
    fn cloud_init_rules() {
        let run = |f: &dyn Fn(&mut GuestReport)| {
            let mut g = good_guest();
            f(&mut g);
            codes_of(&raw_image(), Some(&g))
        };
        assert_eq!(
            run(&|g| g.guest.cloud_init.installed = false),
            [codes::CLOUD_INIT_MISSING]
        );
        assert_eq!(
            run(&|g| {
                g.guest.cloud_init.installed = false;
                g.guest.cloud_init.alternatives = vec!["ignition".into()];
            }),
            Vec::<&str>::new()
        );
        for (v, want) in [
            ("0.7.7", None),
            ("22.4.2", None),
            ("23.1.1-0ubuntu1", None),
            ("0.7.5-10.el7", Some(codes::CLOUD_INIT_TOO_OLD)),
            ("0.7.6", Some(codes::CLOUD_INIT_TOO_OLD)),
            ("devel", Some(codes::CLOUD_INIT_VERSION_UNKNOWN)),
        ] {
            let got = run(&|g| g.guest.cloud_init.version = Some(v.into()));
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{v}");
        }
        assert_eq!(
            run(&|g| g.guest.cloud_init.version = None),
            [codes::CLOUD_INIT_VERSION_UNKNOWN]
        );
        let list = |l: &[&str]| Some(l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            run(&|g| g.guest.cloud_init.datasource_list = list(&["NoCloud", "ConfigDrive", "None"])),
            [codes::CLOUD_INIT_NOCLOUD_BEFORE_CONFIGDRIVE]
        );
        assert_eq!(
            run(&|g| g.guest.cloud_init.datasource_list =
                list(&["ConfigDrive", "DigitalOcean", "NoCloud", "None"])),
            Vec::<&str>::new()
        );
        assert_eq!(
            run(&|g| g.guest.cloud_init.datasource_list = list(&["NoCloud", "None"])),
            [codes::CLOUD_INIT_NOCLOUD_BEFORE_CONFIGDRIVE]
        );
        assert_eq!(
            run(&|g| g.guest.cloud_init.datasource_list = list(&["NoCloud"])),
            [codes::CLOUD_INIT_NOCLOUD_BEFORE_CONFIGDRIVE]
        );
        assert_eq!(
            run(&|g| g.guest.cloud_init.datasource_list = list(&["Ec2", "None"])),
            [codes::CLOUD_INIT_DATASOURCE_MISSING]
        );
        assert_eq!(
            run(&|g| g.guest.cloud_init.datasource_list = list(&["DigitalOcean", "None"])),
            Vec::<&str>::new()
        );
    }

    /// Issue 10: disabled markers fail; a file cloud-init ignores is a
    /// warning; the NoCloud hint fits where the list came from.
    #[test]
    fn cloud_init_disabled_ignored_and_hints() {
        let v = run(&|g| {
            g.guest.cloud_init.disabled_by = vec!["/etc/cloud/cloud-init.disabled exists".into()];
        });
        assert_eq!(v.codes(), [codes::CLOUD_INIT_DISABLED]);
        assert!(!v.pass);
        assert!(v.findings[0].hint.as_deref().unwrap().contains("delete"));
        let v = run(&|g| {
            g.guest.cloud_init.disabled_by = vec![
                "cloud-init=disabled on the kernel command line in /boot/grub/grub.cfg".into(),
            ];
        });
        assert!(
            v.findings[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("GRUB_CMDLINE_LINUX")
        );
        let v = run(&|g| {
            g.guest.cloud_init.ignored_configs = vec![
                "/etc/cloud/cloud.cfg.d/90.cfg: ignored by cloud-init: more than one YAML document"
                    .into(),
            ];
        });
        assert_eq!(v.codes(), [codes::CLOUD_INIT_CONFIG_IGNORED]);
        assert!(v.pass);
        let nocloud = |by: &'static str, src: &'static str| {
            run(&move |g| {
                let ci = &mut g.guest.cloud_init;
                ci.datasource_list = Some(vec!["NoCloud".into()]);
                ci.datasource_source = Some(src.into());
                ci.datasource_decided_by = Some(by.into());
            })
        };
        let v = nocloud(
            "kernel_cmdline",
            "kernel command line in /boot/grub/grub.cfg",
        );
        assert_eq!(v.codes(), [codes::CLOUD_INIT_NOCLOUD_BEFORE_CONFIGDRIVE]);
        let h = v.findings[0].hint.clone().unwrap();
        assert!(
            h.contains("GRUB_CMDLINE_LINUX") && h.contains("update-grub"),
            "{h}"
        );
        assert!(!h.contains("to read"), "{h}");
        let v = nocloud("builtin_default", "cloud-init's built-in default");
        let h = v.findings[0].hint.clone().unwrap();
        assert!(h.contains("/etc/cloud/cloud.cfg.d/"), "{h}");
        let v = nocloud("config", "/etc/cloud/cloud.cfg");
        let h = v.findings[0].hint.clone().unwrap();
        assert!(h.starts_with("edit /etc/cloud/cloud.cfg to read"), "{h}");
        let v = nocloud("ds_identify_config", "/etc/cloud/cloud.cfg.d/90.cfg");
        let h = v.findings[0].hint.clone().unwrap();
        assert!(h.contains("90.cfg") && h.contains("on one line"), "{h}");
        let v = nocloud(
            "ds_identify_config",
            "`datasource:` in /etc/cloud/ds-identify.cfg",
        );
        let h = v.findings[0].hint.clone().unwrap();
        assert!(h.contains("remove the `datasource:` line"), "{h}");
    }

    #[test]
    fn unreadable_usr_turns_missing_into_unverified() {
        let mut g = good_guest();
        g.guest.sshd.installed = false;
        g.guest.cloud_init.installed = false;
        g.notes.push(
            "fstab mounts /usr from UUID=1 (Xfs), which imgcheck cannot read; files there are unknown".into(),
        );
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &raw_image(),
                guest: Some(&g),
            },
        );
        assert_eq!(v.codes(), [codes::GUEST_UNVERIFIED]);
        assert!(v.pass);
        assert!(v.findings[0].message.contains("sshd.missing"));
    }

    #[test]
    fn head_hint_does_not_suggest_presigned() {
        let mut img = raw_image();
        img.head_supported = Some(false);
        let v = check(
            Provider::DigitalOcean,
            &CheckInput {
                image: &img,
                guest: Some(&good_guest()),
            },
        );
        assert_eq!(v.codes(), [codes::URL_HEAD_UNSUPPORTED]);
        let h = v.findings[0].hint.clone().unwrap();
        assert!(!h.contains("or presigned"), "{h}");
        assert!(h.contains("public-read"), "{h}");
    }

    #[test]
    fn sshd_rules() {
        let v = run(&|g| g.guest.sshd.installed = false);
        assert_eq!(v.codes(), [codes::SSHD_MISSING]);
        assert!(!v.pass);
        let v = run(&|g| g.guest.sshd.enabled = Some(false));
        assert_eq!(v.codes(), [codes::SSHD_NOT_ENABLED]);
        assert!(!v.pass);
        let v = run(&|g| {
            g.guest.sshd.enabled = Some(false);
            g.guest.sshd.masked_units = vec!["ssh.service".into()];
        });
        assert_eq!(v.codes(), [codes::SSHD_NOT_ENABLED]);
        let h = v.findings[0].hint.clone().unwrap();
        assert!(h.contains("systemctl unmask ssh.service"), "{h}");
        let v = run(&|g| g.guest.sshd.enabled = None);
        assert_eq!(v.codes(), [codes::SSHD_ENABLED_UNKNOWN]);
        assert!(v.pass, "could not tell is a warning");
        assert!(v.findings[0].message.contains("could not tell"));
    }

    #[test]
    fn boot_rules() {
        let v = run(&|g| {
            g.guest.boot.bios = false;
            g.guest.boot.uefi = true;
        });
        assert_eq!(v.codes(), [codes::BOOT_UEFI_ONLY]);
        assert_eq!(v.findings[0].doc, DOC_LIMITS);
        assert!(
            run(&|g| g.guest.boot.uefi = true).pass,
            "hybrid BIOS+UEFI is fine"
        );
        let v = run(&|g| g.guest.boot.bios = false);
        assert_eq!(v.codes(), [codes::BOOT_NO_BOOTLOADER]);
        assert!(v.pass, "warnings never fail a verdict");
        let v = run(&|g| g.guest.boot.kernels.clear());
        assert_eq!(v.codes(), [codes::BOOT_NO_KERNEL]);
        assert!(v.pass);
    }
}
