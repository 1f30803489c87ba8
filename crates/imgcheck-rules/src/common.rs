//! Rules every profile shares, parameterised by severity and document, and
//! the small collector the profiles push findings into.
//!
//! The integrity rules (damage, references, unreadable) come first in every
//! profile: an image that is damaged, or that imgcheck could not read, fails
//! everywhere, whatever the provider's own list says. A provider that
//! fetches one file also fails an image whose data lives in a second one.

use imgcheck_guest::{FsKind, GuestReport};

use crate::codes;
use crate::facts::{CheckInput, ImageErrorKind};
use crate::{Finding, Severity};

/// Collects findings.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) findings: Vec<Finding>,
}

impl Out {
    /// Adds a finding.
    pub(crate) fn push(
        &mut self,
        code: &'static str,
        severity: Severity,
        message: impl Into<String>,
        hint: Option<String>,
        doc: &'static str,
    ) {
        self.findings.push(Finding {
            code,
            severity,
            message: message.into(),
            hint,
            doc,
        });
    }

    /// True if some finding has `code`.
    pub(crate) fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}

/// Decimal gigabytes, as providers write limits ("100 GB").
pub(crate) fn gb(n: u64) -> String {
    let v = n as f64 / 1e9;
    if v >= 10.0 {
        format!("{v:.1} GB")
    } else {
        format!("{v:.2} GB")
    }
}

/// Binary gibibytes, for limits tools enforce as powers of two.
pub(crate) fn gib(n: u64) -> String {
    format!("{:.2} GiB", n as f64 / f64::from(1u32 << 30))
}

/// `image.corrupt`, `image.external_reference`, `image.unreadable`,
/// `image.dirty`: facts about the file itself, judged the same everywhere
/// (errors, except the dirty flag which is a warning, and references, see
/// below). `doc` is the provider's requirements page.
///
/// `fetches_one_file` is true for providers that import by fetching or
/// uploading one file (DigitalOcean, Linode): references the image makes
/// are then data that never arrives, an error. KakaoCloud builds images from
/// a volume the user writes with their own tools (qemu-img follows the
/// references), so there it is a warning.
pub(crate) fn integrity(
    input: &CheckInput<'_>,
    out: &mut Out,
    doc: &'static str,
    fetches_one_file: bool,
) {
    let img = input.image;
    if let Some(e) = &img.error {
        match e.kind {
            ImageErrorKind::Corrupt => out.push(
                codes::IMAGE_CORRUPT,
                Severity::Error,
                format!("the image is damaged: {}", e.message),
                e.hint.clone().or_else(|| {
                    Some("re-download or re-copy it; `qemu-img check` may tell more".into())
                }),
                doc,
            ),
            ImageErrorKind::ExternalReference => out.push(
                codes::IMAGE_EXTERNAL_REFERENCE,
                Severity::Error,
                format!(
                    "the image needs another file, and the provider fetches only one: {}",
                    e.message
                ),
                Some(
                    "flatten it into one file: `qemu-img convert -O qcow2 IMAGE OUT` (or pass --allow-external to check it if you trust the references)"
                        .into(),
                ),
                doc,
            ),
            // Too large is judged by each profile's size rule against its own
            // limit; unreadable covers the rest.
            ImageErrorKind::Unsupported | ImageErrorKind::TooLarge => out.push(
                codes::IMAGE_UNREADABLE,
                Severity::Error,
                format!(
                    "imgcheck could not read the image, so nothing inside it was checked: {}",
                    e.message
                ),
                e.hint.clone(),
                doc,
            ),
        }
    }
    if let Some(r) = &img.read_error {
        out.push(
            codes::IMAGE_CORRUPT,
            Severity::Error,
            format!("the image opened, but reading its data failed: {r}"),
            Some("the file is damaged or truncated: re-download or re-copy it".into()),
            doc,
        );
    }
    let mut refs: Vec<String> = Vec::new();
    if let Some(b) = &img.backing_file {
        refs.push(format!("backing file {b:?}"));
    }
    for r in &img.external_refs {
        // The backing file is usually also listed as a reference.
        if img.backing_file.as_deref() != Some(r.name.as_str()) {
            refs.push(format!("{} {:?}", r.kind, r.name));
        }
    }
    if !refs.is_empty() && !out.has(codes::IMAGE_EXTERNAL_REFERENCE) {
        let (severity, consequence) = if fetches_one_file {
            (
                Severity::Error,
                "the provider fetches one file, so that data would be missing",
            )
        } else {
            (
                Severity::Warning,
                "keep those files next to it when writing it onto a volume, or the data in them is lost",
            )
        };
        out.push(
            codes::IMAGE_EXTERNAL_REFERENCE,
            severity,
            format!("the image refers to {}; {consequence}", refs.join(", ")),
            Some(
                "write a self-contained copy: `imgcheck convert IMAGE OUT` (or `qemu-img convert -O qcow2 IMAGE OUT` for a backing chain)"
                    .into(),
            ),
            doc,
        );
    }
    if img.dirty {
        out.push(
            codes::IMAGE_DIRTY,
            Severity::Warning,
            "the image's dirty flag is set: it was not closed cleanly, and its metadata may be inconsistent",
            Some("run `qemu-img check -r all IMAGE` (or convert it to a fresh image)".into()),
            doc,
        );
    }
}

/// The filesystem kind of the root filesystem, or, when no root was found,
/// the kinds of every filesystem found.
pub(crate) fn root_or_all_fs(input: &CheckInput<'_>, guest: &GuestReport) -> Vec<FsKind> {
    match input.root_fs() {
        Some(fs) => vec![fs.kind],
        None => guest.filesystems.iter().map(|f| f.kind).collect(),
    }
}

/// Lowercase name of a filesystem kind, as serialised.
pub(crate) fn fs_name(k: FsKind) -> &'static str {
    match k {
        FsKind::Ext2 => "ext2",
        FsKind::Ext3 => "ext3",
        FsKind::Ext4 => "ext4",
        FsKind::Xfs => "xfs",
        FsKind::Btrfs => "btrfs",
        FsKind::Vfat => "vfat",
        FsKind::Swap => "swap",
        FsKind::LvmPv => "lvm_pv",
        FsKind::Luks => "luks",
        FsKind::Iso9660 => "iso9660",
        FsKind::Squashfs => "squashfs",
        FsKind::Ntfs => "ntfs",
        FsKind::Zfs => "zfs",
        FsKind::Ufs => "ufs",
        FsKind::Unknown => "unknown",
    }
}

/// `filesystem.unsupported` unless the root filesystem is of the ext family.
///
/// ext2 counts: the providers ask that images "support" ext3/ext4, the same
/// kernel driver and tools (e2fsck, resize2fs) handle ext2, and the guest
/// helper's fixtures agree. With no root found, `judge_without_root` says
/// whether to judge the other filesystems (Linode, whose recommendation is
/// about the disk) or to leave it to `os.not_found` (DigitalOcean, where a
/// root imgcheck cannot read is not evidence of a wrong filesystem).
pub(crate) fn ext_root(
    input: &CheckInput<'_>,
    guest: &GuestReport,
    out: &mut Out,
    severity: Severity,
    judge_without_root: bool,
    message_tail: &str,
    doc: &'static str,
) {
    let root = input.root_fs();
    if root.is_none() && !judge_without_root {
        return;
    }
    let kinds = root_or_all_fs(input, guest);
    if kinds.iter().copied().any(is_ext) {
        return;
    }
    let what = if let Some(fs) = root {
        format!("the root filesystem is {}", fs_name(fs.kind))
    } else if kinds.is_empty() {
        "no filesystem was found".to_owned()
    } else {
        let names: Vec<&str> = kinds.iter().map(|k| fs_name(*k)).collect();
        format!(
            "no ext3 or ext4 filesystem was found (found: {})",
            names.join(", ")
        )
    };
    out.push(
        codes::FILESYSTEM_UNSUPPORTED,
        severity,
        format!("{what}; {message_tail}"),
        Some("build the image with an ext4 root filesystem".into()),
        doc,
    );
}

/// ext2, ext3 or ext4.
pub(crate) fn is_ext(k: FsKind) -> bool {
    matches!(k, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)
}

/// "; found xfs (partition 2), which imgcheck does not read" for messages
/// about a root that was not found, or "" when nothing explains it.
pub(crate) fn unread_filesystems(guest: &GuestReport) -> String {
    // XFS and btrfs are read (a failure sets `error`); a PV counts as read
    // when some logical volume came out of it.
    let lvs_read = guest.filesystems.iter().any(|f| f.lv.is_some());
    let found: Vec<String> = guest
        .filesystems
        .iter()
        .filter(|f| {
            f.error.is_some()
                || matches!(f.kind, FsKind::Luks | FsKind::Zfs | FsKind::Ufs)
                || (f.kind == FsKind::LvmPv && !lvs_read)
        })
        .map(|f| {
            let at = f
                .partition
                .map_or_else(|| "whole disk".to_owned(), |n| format!("partition {n}"));
            match &f.error {
                Some(e) => format!("{} ({at}) that could not be read: {e}", fs_name(f.kind)),
                None => format!("{} ({at}), which imgcheck does not read", fs_name(f.kind)),
            }
        })
        .collect();
    if found.is_empty() {
        String::new()
    } else {
        format!("; found {}", found.join(", "))
    }
}

/// Why the root could not be read, when the reason is a filesystem
/// imgcheck cannot read (not a disk without an OS): one clause per such
/// filesystem, naming it, where it is and why, plus inspection's notes on
/// files it could not read. `None` when a root was found or every
/// filesystem was read.
pub(crate) fn root_unreadable(input: &CheckInput<'_>, guest: &GuestReport) -> Option<String> {
    if input.root_fs().is_some() {
        return None;
    }
    // A recognised layout (ostree, Flatcar) whose booting tree could not
    // be told: the OS is there but unverified.
    if let Some(why) = &guest.root_undetermined {
        return Some(why.clone());
    }
    // Inspection says so when it opened every filesystem it found (once
    // the XFS, btrfs and LVM readers open those kinds, an empty XFS is
    // "no OS", not "unreadable").
    let all_opened = guest
        .notes
        .iter()
        .any(|n| n.starts_with("no root filesystem found ("));
    let mut why: Vec<String> = guest
        .filesystems
        .iter()
        .filter(|f| {
            f.error.is_some()
                || !all_opened
                    && matches!(
                    f.kind,
                    FsKind::Xfs
                        | FsKind::Btrfs
                        | FsKind::LvmPv
                        | FsKind::Luks
                        | FsKind::Zfs
                        | FsKind::Ufs
                )
        })
        .map(|f| {
            let at = f
                .partition
                .map_or_else(|| "the whole disk".to_owned(), |n| format!("partition {n}"));
            match (&f.error, f.kind) {
                (Some(e), k) => format!("{} on {at} could not be read ({e})", fs_name(k)),
                (None, FsKind::Ufs) => format!(
                    "ufs on {at} (a FreeBSD root?) is not read by imgcheck, so bsd-cloudinit or cloud-init and rc.conf's sshd_enable are out of its reach"
                ),
                (None, FsKind::Luks) => format!("luks on {at} is encrypted"),
                (None, k) => format!("{} on {at} is not read by imgcheck", fs_name(k)),
            }
        })
        .collect();
    if why.is_empty() {
        return None;
    }
    why.extend(
        guest
            .notes
            .iter()
            .filter(|n| n.contains("fstab mounts") || n.starts_with("guest file not read"))
            .cloned(),
    );
    Some(why.join("; "))
}

/// What the guest rules of a profile check, for "could not verify" messages.
pub(crate) const GUEST_CHECKS: &str = "the operating system, cloud-init (installed, version, datasource order, not disabled), sshd (installed, enabled at boot) and the kernel";

/// The OS kind as inspection wrote it, empty or `unknown` meaning not found.
pub(crate) fn os_kind(guest: &GuestReport) -> Option<&str> {
    let k = guest.guest.os.kind.as_str();
    if k.is_empty() || k == "unknown" {
        None
    } else {
        Some(k)
    }
}

/// A short description of the OS for messages ("Debian GNU/Linux 12").
pub(crate) fn os_label(guest: &GuestReport) -> String {
    let os = &guest.guest.os;
    os.pretty_name
        .clone()
        .or_else(|| os.id.clone())
        .unwrap_or_else(|| os.kind.clone())
}

/// `partition_table.sector_size` (warning): a GPT found only at byte 4096
/// (LBA 1 of a 4096-byte-sector disk). The providers attach images as
/// virtio disks, whose logical sectors are 512 bytes unless configured
/// otherwise, so firmware and kernel look for the GPT header at byte 512
/// and find none. `unconfirmed` prefixes the message for KakaoCloud.
pub(crate) fn sector_size(
    guest: &GuestReport,
    out: &mut Out,
    unconfirmed: bool,
    doc: &'static str,
) {
    let t = &guest.partitions;
    if t.kind != imgcheck_guest::TableKind::Gpt || t.sector_size != 4096 {
        return;
    }
    out.push(
        codes::PARTITION_TABLE_SECTOR_SIZE,
        Severity::Warning,
        format!(
            "{}the GPT is written for 4096-byte sectors (its header is at byte 4096); a virtio disk with 512-byte sectors, the default, shows no partition table and the image will not boot",
            if unconfirmed { "UNCONFIRMED: " } else { "" }
        ),
        Some("rebuild the partition table for 512-byte sectors (e.g. build the image on a loop device or file with 512-byte sectors, then sgdisk)".into()),
        doc,
    );
}

/// `boot.no_bootloader` and `boot.no_kernel` warnings: likely not to boot,
/// but inspection can miss a loader or kernel, so they never fail a verdict.
pub(crate) fn boot_warnings(
    input: &CheckInput<'_>,
    guest: &GuestReport,
    out: &mut Out,
    bootloader: bool,
    doc: &'static str,
) {
    let boot = &guest.guest.boot;
    if bootloader && !boot.bios && !boot.uefi {
        out.push(
            codes::BOOT_NO_BOOTLOADER,
            Severity::Warning,
            "no boot loader was found (no BIOS boot code, no EFI loader on an EFI system partition); the image may not boot",
            Some("install GRUB to the disk (grub-install) before uploading".into()),
            doc,
        );
    }
    let unix = os_kind(guest).is_some_and(|k| k != "windows");
    if input.root_fs().is_some() && unix && boot.kernels.is_empty() {
        out.push(
            codes::BOOT_NO_KERNEL,
            Severity::Warning,
            "no kernel image was found under /boot; the image may not boot",
            Some("install a kernel package in the image".into()),
            doc,
        );
    }
}
