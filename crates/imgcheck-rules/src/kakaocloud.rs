//! KakaoCloud.
//!
//! What is established (providers.md §3): the public API and the official
//! Terraform provider create images only from a root volume; an image
//! carries `os_info {type, distro, architecture, admin_user}`, `min_disk`
//! and `min_ram`. File import, size limits, formats and boot requirements
//! are UNCONFIRMED. So, besides the integrity rules every provider shares,
//! this profile has only warnings (each saying UNCONFIRMED) and infos: it
//! never fails an image that is readable and intact.

use imgcheck_guest::GuestReport;

use crate::common::{self, Out};
use crate::facts::CheckInput;
use crate::{Severity, codes};

/// The Terraform `kakaocloud_image` resource (root volumes only; os_info).
pub(crate) const DOC_IMAGE: &str = "https://github.com/kakaoenterprise/terraform-provider-kakaocloud/blob/main/docs/resources/image.md";
/// The Image API of the official SDK (no create or upload endpoint).
pub(crate) const DOC_IMAGE_API: &str =
    "https://github.com/kakaoenterprise/kc-sdk-go/blob/main/services/image/README.md";

/// The KakaoCloud profile.
pub(crate) fn profile(input: &CheckInput<'_>, out: &mut Out) {
    common::integrity(input, out, DOC_IMAGE, false);
    out.push(
        codes::KAKAOCLOUD_VOLUME_IMPORT,
        Severity::Info,
        "KakaoCloud's public API creates images only from a root (bootable) volume; importing an image file is UNCONFIRMED",
        Some(
            "write the image onto a volume from an instance (`qemu-img convert -O raw IMAGE /dev/vdX`); the volume must then serve as a root (bootable) volume, since images are made only from root volumes (UNCONFIRMED whether a converted data volume qualifies), and create the image from it (`POST /api/v1/volumes/{volume_id}/image`)"
                .into(),
        ),
        DOC_IMAGE_API,
    );
    let Some(guest) = input.guest else { return };
    let os = common::os_kind(guest);
    if let Some(why) = common::root_unreadable(input, guest) {
        out.push(
            codes::GUEST_UNVERIFIED,
            Severity::Warning,
            format!(
                "UNCONFIRMED: the root filesystem could not be read ({why}), so imgcheck could not verify {} nor derive os_info",
                common::GUEST_CHECKS
            ),
            Some("check those by hand in the image".into()),
            DOC_IMAGE,
        );
    } else if os.is_none() || input.root_fs().is_none() {
        out.push(
            codes::OS_NOT_FOUND,
            Severity::Warning,
            format!(
                "UNCONFIRMED: no operating system was found{}, so the image's os_info (type, distro) cannot be derived; a root volume without an OS is unlikely to make a usable image",
                common::unread_filesystems(guest)
            ),
            None,
            DOC_IMAGE,
        );
    } else {
        os_info(guest, out);
        if os != Some("windows") {
            if !guest.guest.cloud_init.installed && guest.guest.cloud_init.alternatives.is_empty() {
                out.push(
                    codes::CLOUD_INIT_MISSING,
                    Severity::Warning,
                    "UNCONFIRMED: cloud-init is not installed; KakaoCloud instances are likely set up (SSH keys, network) by cloud-init",
                    Some("install the distribution's cloud-init package".into()),
                    DOC_IMAGE,
                );
            }
            if !guest.guest.cloud_init.disabled_by.is_empty() {
                out.push(
                    codes::CLOUD_INIT_DISABLED,
                    Severity::Warning,
                    format!(
                        "UNCONFIRMED: cloud-init is disabled ({}); instances would get no SSH key or network setup from it",
                        guest.guest.cloud_init.disabled_by.join("; ")
                    ),
                    Some("remove the marker (delete /etc/cloud/cloud-init.disabled; drop `cloud-init=disabled` from the kernel command line)".into()),
                    DOC_IMAGE,
                );
            }
            if !guest.guest.sshd.installed {
                out.push(
                    codes::SSHD_MISSING,
                    Severity::Warning,
                    "UNCONFIRMED: no sshd was found; instances would be reachable only through the console",
                    Some("install the openssh-server package".into()),
                    DOC_IMAGE,
                );
            }
        }
    }
    common::sector_size(guest, out, true, DOC_IMAGE);
    common::boot_warnings(input, guest, out, true, DOC_IMAGE);
}

/// `kakaocloud.os_info` (info) with the fields derived from the image, and
/// `kakaocloud.os_info_incomplete` (warning) when some could not be.
fn os_info(guest: &GuestReport, out: &mut Out) {
    let k = &guest.guest.kakaocloud;
    let fields = [
        ("type", k.os_type.as_deref()),
        ("distro", k.distro.as_deref()),
        ("architecture", k.architecture.as_deref()),
        ("admin_user", k.admin_user.as_deref()),
    ];
    let shown: Vec<String> = fields
        .iter()
        .map(|(n, v)| format!("{n}={}", v.unwrap_or("?")))
        .collect();
    out.push(
        codes::KAKAOCLOUD_OS_INFO,
        Severity::Info,
        format!(
            "os_info would be {}; min_disk {} GB",
            shown.join(", "),
            k.min_disk_gb
        ),
        None,
        DOC_IMAGE,
    );
    let missing: Vec<&str> = fields
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        out.push(
            codes::KAKAOCLOUD_OS_INFO_INCOMPLETE,
            Severity::Warning,
            format!(
                "UNCONFIRMED: os_info field(s) {} could not be derived from the image; whether KakaoCloud needs them is not documented",
                missing.join(", ")
            ),
            Some(
                "admin_user comes from cloud-init's system_info.default_user; distro from /etc/os-release"
                    .into(),
            ),
            DOC_IMAGE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{ImageFacts, Provider, check};

    fn codes_of(image: &ImageFacts, guest: Option<&GuestReport>) -> Vec<&'static str> {
        let v = check(Provider::KakaoCloud, &CheckInput { image, guest });
        assert_eq!(v.pass, v.count(Severity::Error) == 0);
        v.codes()
    }

    #[test]
    fn good_image_gets_infos_only() {
        assert_eq!(
            codes_of(&raw_image(), Some(&good_guest())),
            [codes::KAKAOCLOUD_VOLUME_IMPORT, codes::KAKAOCLOUD_OS_INFO]
        );
    }

    #[test]
    fn corrupt_fails() {
        let v = check(
            Provider::KakaoCloud,
            &CheckInput {
                image: &corrupt_image(),
                guest: None,
            },
        );
        assert!(!v.pass);
        assert_eq!(
            v.codes(),
            [codes::IMAGE_CORRUPT, codes::KAKAOCLOUD_VOLUME_IMPORT]
        );
    }

    #[test]
    fn unconfirmed_rules_are_warnings_that_say_so() {
        let mut g = good_guest();
        g.guest.cloud_init.installed = false;
        g.guest.sshd.installed = false;
        g.guest.kakaocloud.admin_user = None;
        let v = check(
            Provider::KakaoCloud,
            &CheckInput {
                image: &raw_image(),
                guest: Some(&g),
            },
        );
        assert!(v.pass);
        assert_eq!(
            v.codes(),
            [
                codes::KAKAOCLOUD_OS_INFO_INCOMPLETE,
                codes::CLOUD_INIT_MISSING,
                codes::SSHD_MISSING,
                codes::KAKAOCLOUD_VOLUME_IMPORT,
                codes::KAKAOCLOUD_OS_INFO,
            ]
        );
        for f in v
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
        {
            assert!(f.message.contains("UNCONFIRMED"), "{}", f.message);
        }
        let mut g = good_guest();
        g.root = None;
        let v = check(
            Provider::KakaoCloud,
            &CheckInput {
                image: &raw_image(),
                guest: Some(&g),
            },
        );
        assert_eq!(
            v.codes(),
            [codes::OS_NOT_FOUND, codes::KAKAOCLOUD_VOLUME_IMPORT]
        );
        assert!(v.findings[0].message.contains("UNCONFIRMED"));
    }

    #[test]
    fn references_are_a_warning_for_a_volume_import() {
        let mut img = raw_image();
        img.format = Some(crate::ImageFormat::Disk(imgcheck_disk::Format::Vmdk));
        img.external_refs.push(imgcheck_disk::ExternalRef {
            kind: "VMDK extent".into(),
            name: "disk-s001.vmdk".into(),
            opened: true,
        });
        let v = check(
            Provider::KakaoCloud,
            &CheckInput {
                image: &img,
                guest: Some(&good_guest()),
            },
        );
        assert!(v.pass);
        assert_eq!(
            v.codes(),
            [
                codes::IMAGE_EXTERNAL_REFERENCE,
                codes::KAKAOCLOUD_VOLUME_IMPORT,
                codes::KAKAOCLOUD_OS_INFO
            ]
        );
        // Not opened at all: still an error (nothing was read).
        let mut img = raw_image();
        img.error = Some(crate::ImageError {
            kind: crate::ImageErrorKind::ExternalReference,
            message: "refers to \"/etc/x\"".into(),
            hint: None,
            uncompressed_at_least: None,
        });
        let v = check(
            Provider::KakaoCloud,
            &CheckInput {
                image: &img,
                guest: None,
            },
        );
        assert!(!v.pass);
    }

    #[test]
    fn windows_skips_unix_rules() {
        let mut g = good_guest();
        g.guest.os.kind = "windows".into();
        g.guest.cloud_init.installed = false;
        g.guest.sshd.installed = false;
        assert_eq!(
            codes_of(&raw_image(), Some(&g)),
            [codes::KAKAOCLOUD_VOLUME_IMPORT, codes::KAKAOCLOUD_OS_INFO]
        );
    }
}
