//! The stable finding codes.
//!
//! A code names a rule, not a message: scripts match on it, so a code is
//! never renamed or reused for another meaning. New rules get new codes. The
//! severity of a code can differ between providers (a documented
//! requirement at one, a recommendation at another); `docs/check-json.md`
//! has the table.

/// The image file is damaged: a header or table breaks its format's rules,
/// or the file is truncated.
pub const IMAGE_CORRUPT: &str = "image.corrupt";
/// The image names other files (backing file, VMDK extents, data file): a
/// provider fetches one file, so the data in the others would be missing.
pub const IMAGE_EXTERNAL_REFERENCE: &str = "image.external_reference";
/// imgcheck could not read inside the image (an unsupported container or
/// feature), so nothing inside it was checked.
pub const IMAGE_UNREADABLE: &str = "image.unreadable";
/// The format's dirty flag is set: the image was not closed cleanly.
pub const IMAGE_DIRTY: &str = "image.dirty";
/// The image URL's server refuses HEAD requests, which DigitalOcean's
/// importer sends first.
pub const URL_HEAD_UNSUPPORTED: &str = "url.head_unsupported";
/// The disk format is not one the provider takes.
pub const FORMAT_UNSUPPORTED: &str = "format.unsupported";
/// The compression or archive around the image is not one the provider
/// takes (or the provider requires one and there is none).
pub const COMPRESSION_UNSUPPORTED: &str = "compression.unsupported";
/// The image is over the provider's size limit.
pub const SIZE_TOO_LARGE: &str = "size.too_large";
/// The compressed size the provider limits cannot be known before the image
/// is compressed the way the provider wants.
pub const SIZE_COMPRESSED_UNKNOWN: &str = "size.compressed_unknown";
/// A raw image without an MBR or GPT partition table.
pub const PARTITION_TABLE_MISSING: &str = "partition_table.missing";
/// A partition table where the provider recommends an unpartitioned disk.
pub const PARTITION_TABLE_PRESENT: &str = "partition_table.present";
/// The GPT is written for 4096-byte logical sectors: a virtio disk with
/// 512-byte sectors will not show it.
pub const PARTITION_TABLE_SECTOR_SIZE: &str = "partition_table.sector_size";
/// The root filesystem is not ext3 or ext4.
pub const FILESYSTEM_UNSUPPORTED: &str = "filesystem.unsupported";
/// The root filesystem is XFS or btrfs, or sits on LVM: the provider does
/// not say whether it supports that (UNCONFIRMED).
pub const FILESYSTEM_UNCONFIRMED: &str = "filesystem.unconfirmed";
/// No operating system (root filesystem) was found, and every filesystem on
/// the disk was read.
pub const OS_NOT_FOUND: &str = "os.not_found";
/// The root filesystem could not be read or found because imgcheck cannot
/// read a filesystem on the disk; the guest rules were not verified.
pub const GUEST_UNVERIFIED: &str = "guest.unverified";
/// The operating system is one the provider does not take (Windows).
pub const OS_UNSUPPORTED: &str = "os.unsupported";
/// Neither cloud-init nor an alternative is installed.
pub const CLOUD_INIT_MISSING: &str = "cloud_init.missing";
/// cloud-init is older than the provider's minimum.
pub const CLOUD_INIT_TOO_OLD: &str = "cloud_init.too_old";
/// cloud-init is installed but its version could not be read.
pub const CLOUD_INIT_VERSION_UNKNOWN: &str = "cloud_init.version_unknown";
/// cloud-init is disabled (`/etc/cloud/cloud-init.disabled`, or
/// `cloud-init=disabled` on the kernel command line).
pub const CLOUD_INIT_DISABLED: &str = "cloud_init.disabled";
/// A cloud-init configuration file that cloud-init ignores (its YAML does
/// not load, or is not a mapping).
pub const CLOUD_INIT_CONFIG_IGNORED: &str = "cloud_init.config_ignored";
/// `datasource_list` names NoCloud before ConfigDrive.
pub const CLOUD_INIT_NOCLOUD_BEFORE_CONFIGDRIVE: &str = "cloud_init.nocloud_before_configdrive";
/// `datasource_list` names none of the provider's datasources.
pub const CLOUD_INIT_DATASOURCE_MISSING: &str = "cloud_init.datasource_missing";
/// The configuration, as cloud-init reads it, lists NoCloud before
/// ConfigDrive, but ds-identify overrides it at boot with a list that does
/// not.
pub const CLOUD_INIT_NOCLOUD_FIRST_OVERRIDDEN: &str = "cloud_init.nocloud_first_overridden";
/// No sshd binary.
pub const SSHD_MISSING: &str = "sshd.missing";
/// sshd is installed but not enabled at boot.
pub const SSHD_NOT_ENABLED: &str = "sshd.not_enabled";
/// sshd is installed; whether it starts at boot could not be told.
pub const SSHD_ENABLED_UNKNOWN: &str = "sshd.enabled_unknown";
/// The disk boots only with UEFI.
pub const BOOT_UEFI_ONLY: &str = "boot.uefi_only";
/// No boot loader was found (neither BIOS boot code nor an EFI loader).
pub const BOOT_NO_BOOTLOADER: &str = "boot.no_bootloader";
/// No kernel image under /boot.
pub const BOOT_NO_KERNEL: &str = "boot.no_kernel";
/// KakaoCloud creates images from root volumes only.
pub const KAKAOCLOUD_VOLUME_IMPORT: &str = "kakaocloud.volume_import";
/// The `os_info` KakaoCloud would show for the image.
pub const KAKAOCLOUD_OS_INFO: &str = "kakaocloud.os_info";
/// Some `os_info` field could not be derived from the image.
pub const KAKAOCLOUD_OS_INFO_INCOMPLETE: &str = "kakaocloud.os_info_incomplete";

/// Every code, in documentation order.
pub const ALL: &[&str] = &[
    URL_HEAD_UNSUPPORTED,
    IMAGE_CORRUPT,
    IMAGE_EXTERNAL_REFERENCE,
    IMAGE_UNREADABLE,
    IMAGE_DIRTY,
    FORMAT_UNSUPPORTED,
    COMPRESSION_UNSUPPORTED,
    SIZE_TOO_LARGE,
    SIZE_COMPRESSED_UNKNOWN,
    PARTITION_TABLE_MISSING,
    PARTITION_TABLE_PRESENT,
    PARTITION_TABLE_SECTOR_SIZE,
    FILESYSTEM_UNSUPPORTED,
    FILESYSTEM_UNCONFIRMED,
    OS_NOT_FOUND,
    GUEST_UNVERIFIED,
    OS_UNSUPPORTED,
    CLOUD_INIT_MISSING,
    CLOUD_INIT_TOO_OLD,
    CLOUD_INIT_VERSION_UNKNOWN,
    CLOUD_INIT_DISABLED,
    CLOUD_INIT_CONFIG_IGNORED,
    CLOUD_INIT_NOCLOUD_BEFORE_CONFIGDRIVE,
    CLOUD_INIT_DATASOURCE_MISSING,
    CLOUD_INIT_NOCLOUD_FIRST_OVERRIDDEN,
    SSHD_MISSING,
    SSHD_NOT_ENABLED,
    SSHD_ENABLED_UNKNOWN,
    BOOT_UEFI_ONLY,
    BOOT_NO_BOOTLOADER,
    BOOT_NO_KERNEL,
    KAKAOCLOUD_VOLUME_IMPORT,
    KAKAOCLOUD_OS_INFO,
    KAKAOCLOUD_OS_INFO_INCOMPLETE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for c in ALL {
            assert!(seen.insert(c), "duplicate code {c}");
            let (group, name) = c.split_once('.').expect("group.name");
            for part in [group, name] {
                assert!(!part.is_empty(), "{c}");
                assert!(
                    part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{c}"
                );
            }
        }
    }

    /// The JSON schema document lists every code (it is the contract users
    /// read; a new code without a row there is a bug).
    #[test]
    fn every_code_is_documented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/check-json.md");
        let doc = std::fs::read_to_string(path).expect("docs/check-json.md");
        for c in ALL {
            assert!(doc.contains(&format!("`{c}`")), "{c} missing from {path}");
        }
    }
}
