//! Linode / Akamai image upload.
//!
//! Requirements, from the "Upload an Image" guide's requirements section
//! (providers.md §2.1):
//!
//! * a raw disk image, gzip-compressed (`.img.gz`); "other file formats will
//!   not work", "other compression algorithms are not compatible";
//! * at most 5 GB compressed (linode-cli enforces `5*1024^3` bytes) and 6 GB
//!   uncompressed (we read this as GiB too, like the tool's 5 GB);
//! * unpartitioned ext3/ext4 disks recommended ("partitioned disks and other
//!   file systems may be used, but some manual configuration may be
//!   required"): warnings, not errors;
//! * cloud-init optional (an upload flag): info.

use imgcheck_disk::{Container, Format};
use imgcheck_guest::TableKind;

use crate::common::{self, Out, gib};
use crate::facts::{CheckInput, ImageErrorKind};
use crate::{Severity, codes};

/// The guide with the requirements.
pub(crate) const DOC_UPLOAD: &str =
    "https://www.linode.com/docs/products/tools/images/guides/upload-an-image/";
/// linode-cli's upload plugin, which enforces the compressed limit.
pub(crate) const DOC_CLI: &str =
    "https://github.com/linode/linode-cli/blob/main/linodecli/plugins/image-upload.py";

/// "5GB" compressed, as linode-cli checks it.
pub(crate) const MAX_COMPRESSED: u64 = 5 << 30;
/// "6GB" uncompressed.
pub(crate) const MAX_UNCOMPRESSED: u64 = 6 << 30;

/// The Linode profile.
pub(crate) fn profile(input: &CheckInput<'_>, out: &mut Out) {
    common::integrity(input, out, DOC_UPLOAD, true);
    format(input, out);
    compression(input, out);
    size(input, out);
    let Some(guest) = input.guest else { return };
    if guest.partitions.kind != TableKind::None {
        out.push(
            codes::PARTITION_TABLE_PRESENT,
            Severity::Warning,
            format!(
                "the disk has a partition table ({}, {} partition{}); Linode recommends unpartitioned disks so Network Helper and the other helpers work, partitioned disks may need manual configuration",
                table_name(guest.partitions.kind),
                guest.partitions.entries.len(),
                if guest.partitions.entries.len() == 1 { "" } else { "s" }
            ),
            Some(
                "to use Linode's helpers, image the root filesystem alone (no partition table), or configure the Linode to boot the disk directly"
                    .into(),
            ),
            DOC_UPLOAD,
        );
    }
    common::ext_root(
        input,
        guest,
        out,
        Severity::Warning,
        true,
        "Linode recommends ext3 or ext4 (other filesystems may need manual configuration)",
        DOC_UPLOAD,
    );
    let unix_root =
        input.root_fs().is_some() && common::os_kind(guest).is_some_and(|k| k != "windows");
    if unix_root && !guest.guest.cloud_init.installed {
        // Flatcar and Fedora CoreOS provision with Ignition, which has its
        // own `akamai` provider for Linode's Metadata service
        // (coreos/ignition#1841, providers.md); the helpers' root password
        // and key injection are not how those images get their keys.
        let ignition = guest
            .guest
            .cloud_init
            .alternatives
            .iter()
            .any(|a| a == "ignition");
        let message = if ignition {
            "cloud-init is not installed; it is optional on Linode. The image provisions with Ignition, which reads Linode's Metadata service only through its `akamai` provider (coreos/ignition#1841); the upload's cloud-init flag marks an image as using that service (UNCONFIRMED for Ignition images)"
        } else {
            "cloud-init is not installed; it is optional on Linode (upload without the cloud-init flag; root password and SSH keys are then set by Linode's helpers)"
        };
        out.push(
            codes::CLOUD_INIT_MISSING,
            Severity::Info,
            message,
            None,
            DOC_UPLOAD,
        );
    }
    if unix_root && !guest.guest.cloud_init.disabled_by.is_empty() {
        out.push(
            codes::CLOUD_INIT_DISABLED,
            Severity::Info,
            format!(
                "cloud-init is disabled ({}); it is optional on Linode (upload without the cloud-init flag)",
                guest.guest.cloud_init.disabled_by.join("; ")
            ),
            None,
            DOC_UPLOAD,
        );
    }
    common::sector_size(guest, out, false, DOC_UPLOAD);
    common::boot_warnings(input, guest, out, false, DOC_UPLOAD);
}

fn table_name(k: TableKind) -> &'static str {
    match k {
        TableKind::None => "none",
        TableKind::Mbr => "MBR",
        TableKind::Gpt => "GPT",
        TableKind::HybridMbr => "GPT with a hybrid MBR",
    }
}

/// The conversion hint; `imgcheck convert` only helps when it can read the
/// image.
fn convert_hint(input: &CheckInput<'_>) -> String {
    if input.image.readable() {
        "`imgcheck convert --for linode IMAGE` writes the gzip-compressed raw image Linode takes"
            .into()
    } else {
        "convert it to raw (`qemu-img convert -O raw IMAGE OUT.img`), then `imgcheck convert --for linode OUT.img`"
            .into()
    }
}

/// `format.unsupported`: raw only.
fn format(input: &CheckInput<'_>, out: &mut Out) {
    let Some(f) = &input.image.format else { return };
    if input.image.disk_format() != Some(Format::Raw) {
        out.push(
            codes::FORMAT_UNSUPPORTED,
            Severity::Error,
            format!(
                "the image is {}; Linode takes only raw disk images (gzip-compressed)",
                f.name()
            ),
            Some(convert_hint(input)),
            DOC_UPLOAD,
        );
    }
}

/// `compression.unsupported`: gzip is required.
fn compression(input: &CheckInput<'_>, out: &mut Out) {
    let message = match input.image.compression {
        Some(Container::Gzip) => return,
        None => "the image is not compressed; Linode takes only gzip-compressed images (.img.gz)"
            .to_owned(),
        Some(c) => {
            format!(
                "the image is {c}-compressed; Linode takes only gzip (other compression is not compatible)"
            )
        }
    };
    out.push(
        codes::COMPRESSION_UNSUPPORTED,
        Severity::Error,
        message,
        Some(convert_hint(input)),
        DOC_UPLOAD,
    );
}

/// `size.too_large` (uncompressed, and compressed when it is gzip already),
/// `size.compressed_unknown` when it is not gzip yet.
fn size(input: &CheckInput<'_>, out: &mut Out) {
    let img = input.image;
    let gzip = img.compression == Some(Container::Gzip);
    let uncompressed = img.virtual_size.or_else(|| match &img.error {
        Some(e) if e.kind == ImageErrorKind::TooLarge => e.uncompressed_at_least,
        _ => None,
    });
    if let Some(u) = uncompressed
        && u > MAX_UNCOMPRESSED
    {
        out.push(
            codes::SIZE_TOO_LARGE,
            Severity::Error,
            format!(
                "the image is {} ({u} bytes) uncompressed; Linode takes at most 6 GB uncompressed",
                gib(u)
            ),
            Some(
                "shrink the filesystem and the disk, or ask Linode support to raise the account limit"
                    .into(),
            ),
            DOC_UPLOAD,
        );
    }
    if gzip {
        if img.file_size > MAX_COMPRESSED {
            out.push(
                codes::SIZE_TOO_LARGE,
                Severity::Error,
                format!(
                    "the compressed file is {} ({} bytes); Linode takes at most 5 GB compressed",
                    gib(img.file_size),
                    img.file_size
                ),
                Some(
                    "zero free space in the guest (fstrim / zerofree) so it compresses better"
                        .into(),
                ),
                DOC_CLI,
            );
        }
    } else if uncompressed.is_some_and(|u| u > MAX_COMPRESSED) {
        // Under 5 GiB uncompressed it cannot be over 5 GiB compressed; above,
        // only compressing tells.
        out.push(
            codes::SIZE_COMPRESSED_UNKNOWN,
            Severity::Info,
            "the compressed size (at most 5 GB on Linode) is unknown until the image is converted; check the converted .img.gz again",
            Some(convert_hint(input)),
            DOC_CLI,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::ImageFormat;
    use crate::testutil::*;
    use crate::{ImageFacts, Provider, Verdict, check};
    use imgcheck_guest::{FsKind, GuestReport};

    /// What Linode takes: an unpartitioned ext4 raw image, gzipped.
    fn linode_image() -> ImageFacts {
        let mut img = raw_image();
        img.compression = Some(Container::Gzip);
        img.file_size = 300 << 20;
        img
    }

    fn linode_guest() -> GuestReport {
        let mut g = good_guest();
        g.partitions.kind = TableKind::None;
        g.partitions.entries.clear();
        g.filesystems.truncate(1);
        g.filesystems[0].kind = FsKind::Ext4;
        g.filesystems[0].partition = None;
        g.root = Some(0);
        g.guest.boot.bios = false;
        g
    }

    /// Linode's verdict on the usual gzip-compressed raw image.
    fn verdict_of(guest: &GuestReport) -> Verdict {
        check(
            Provider::Linode,
            &CheckInput {
                image: &linode_image(),
                guest: Some(guest),
            },
        )
    }

    fn codes_of(image: &ImageFacts, guest: Option<&GuestReport>) -> Vec<&'static str> {
        let v = check(Provider::Linode, &CheckInput { image, guest });
        assert_eq!(v.pass, v.count(Severity::Error) == 0);
        v.codes()
    }

    #[test]
    fn gzip_raw_unpartitioned_passes() {
        assert_eq!(
            codes_of(&linode_image(), Some(&linode_guest())),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn corrupt_fails() {
        let mut img = corrupt_image();
        img.format = Some(ImageFormat::Disk(Format::Raw));
        img.compression = Some(Container::Gzip);
        assert_eq!(codes_of(&img, None), [codes::IMAGE_CORRUPT]);
    }

    #[test]
    fn only_raw() {
        for f in [Format::Qcow2, Format::Vhdx, Format::Vdi, Format::Vmdk] {
            let mut img = linode_image();
            img.format = Some(ImageFormat::Disk(f));
            let v = check(
                Provider::Linode,
                &CheckInput {
                    image: &img,
                    guest: Some(&linode_guest()),
                },
            );
            assert_eq!(v.codes(), [codes::FORMAT_UNSUPPORTED], "{f}");
            assert!(
                v.findings[0]
                    .hint
                    .as_deref()
                    .unwrap()
                    .contains("imgcheck convert --for linode")
            );
        }
    }

    #[test]
    fn only_gzip() {
        for c in [
            None,
            Some(Container::Bzip2),
            Some(Container::Xz),
            Some(Container::Zstd),
        ] {
            let mut img = linode_image();
            img.compression = c;
            let v = check(
                Provider::Linode,
                &CheckInput {
                    image: &img,
                    guest: Some(&linode_guest()),
                },
            );
            assert_eq!(v.codes(), [codes::COMPRESSION_UNSUPPORTED], "{c:?}");
            assert!(
                v.findings[0]
                    .hint
                    .as_deref()
                    .unwrap()
                    .contains("imgcheck convert --for linode")
            );
        }
    }

    /// Linode's limits as its documents state them, typed here rather than
    /// taken from the code: "5GB" compressed, which linode-cli enforces as
    /// `MAX_UPLOAD_SIZE = 5*1024^3` (linodecli/plugins/image-upload.py),
    /// and "6GB" uncompressed (the upload guide), read as GiB like the CLI's
    /// (docs/check-json.md, "Units").
    const FIVE_GB: u64 = 5_368_709_120;
    const SIX_GB: u64 = 6_442_450_944;

    #[test]
    fn sizes() {
        let mut img = linode_image();
        img.virtual_size = Some(SIX_GB);
        img.file_size = FIVE_GB;
        assert_eq!(
            codes_of(&img, Some(&linode_guest())),
            Vec::<&str>::new(),
            "limits are inclusive"
        );
        img.virtual_size = Some(SIX_GB + 1);
        assert_eq!(
            codes_of(&img, Some(&linode_guest())),
            [codes::SIZE_TOO_LARGE]
        );
        img.file_size = FIVE_GB + 1;
        assert_eq!(
            codes_of(&img, Some(&linode_guest())),
            [codes::SIZE_TOO_LARGE, codes::SIZE_TOO_LARGE]
        );
        // Not gzip yet: only the uncompressed size is judged, and the
        // compressed size is said to be unknown when it could matter.
        let mut img = linode_image();
        img.compression = None;
        img.virtual_size = Some(FIVE_GB + 1);
        img.file_size = FIVE_GB + 1;
        let v = check(
            Provider::Linode,
            &CheckInput {
                image: &img,
                guest: Some(&linode_guest()),
            },
        );
        assert_eq!(
            v.codes(),
            [
                codes::COMPRESSION_UNSUPPORTED,
                codes::SIZE_COMPRESSED_UNKNOWN
            ]
        );
        assert!(v.findings[1].message.contains("unknown until"));
        img.virtual_size = Some(1 << 30);
        assert_eq!(
            codes_of(&img, Some(&linode_guest())),
            [codes::COMPRESSION_UNSUPPORTED]
        );
        img.virtual_size = Some(SIX_GB + 1);
        assert_eq!(
            codes_of(&img, Some(&linode_guest())),
            [
                codes::COMPRESSION_UNSUPPORTED,
                codes::SIZE_TOO_LARGE,
                codes::SIZE_COMPRESSED_UNKNOWN
            ]
        );
    }

    #[test]
    fn partitioned_and_other_fs_are_warnings() {
        let v = verdict_of(&good_guest());
        assert_eq!(v.codes(), [codes::PARTITION_TABLE_PRESENT]);
        assert!(v.pass);
        let mut g = linode_guest();
        g.filesystems[0].kind = FsKind::Xfs;
        let v = verdict_of(&g);
        assert_eq!(v.codes(), [codes::FILESYSTEM_UNSUPPORTED]);
        assert!(v.pass);
        // No root found: Linode still judges the filesystems on the disk.
        g.root = None;
        assert_eq!(
            codes_of(&linode_image(), Some(&g)),
            [codes::FILESYSTEM_UNSUPPORTED]
        );
        g.filesystems[0].kind = FsKind::Ext2;
        assert_eq!(codes_of(&linode_image(), Some(&g)), Vec::<&str>::new());
    }

    #[test]
    fn cloud_init_is_optional() {
        let mut g = linode_guest();
        g.guest.cloud_init.installed = false;
        let v = verdict_of(&g);
        assert_eq!(v.codes(), [codes::CLOUD_INIT_MISSING]);
        assert_eq!(v.findings[0].severity, Severity::Info);
        assert!(v.pass);
        // Ignition images (Flatcar, Fedora CoreOS) are told about
        // Ignition's akamai provider, not about Linode's helpers.
        g.guest.cloud_init.alternatives = vec!["ignition".into()];
        let v = verdict_of(&g);
        assert_eq!(v.codes(), [codes::CLOUD_INIT_MISSING]);
        assert!(v.findings[0].message.contains("`akamai` provider"));
        assert!(v.pass);
        // sshd and UEFI are not Linode rules.
        let mut g = linode_guest();
        g.guest.sshd.installed = false;
        g.guest.boot.uefi = true;
        assert_eq!(codes_of(&linode_image(), Some(&g)), Vec::<&str>::new());
        let mut g = linode_guest();
        g.guest.boot.kernels.clear();
        assert_eq!(codes_of(&linode_image(), Some(&g)), [codes::BOOT_NO_KERNEL]);
    }
}
