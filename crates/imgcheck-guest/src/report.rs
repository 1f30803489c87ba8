//! What guest inspection reports. This is the contract between
//! imgcheck-guest (which fills it) and imgcheck-rules (which judges it), and
//! it is serialised as-is into `imgcheck --json` (`partitions`,
//! `filesystems`, `guest`). Everything is optional or defaulted: a fact we
//! could not establish is "unknown" with evidence, never a failure.

use serde::Serialize;

/// Everything inspection found on one disk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestReport {
    /// The partition table.
    pub partitions: PartitionTable,
    /// Filesystems found: one per partition, or one for the whole disk.
    pub filesystems: Vec<Filesystem>,
    /// Index into `filesystems` of the root filesystem, if one was found.
    pub root: Option<usize>,
    /// Set when the disk has a layout whose root its own boot assembles
    /// (ostree deployments, Flatcar's USR partitions) but which tree boots
    /// could not be told: why. The OS is then unverified, not absent.
    pub root_undetermined: Option<String>,
    /// Facts read from the root filesystem.
    pub guest: GuestFacts,
    /// Things that went wrong during inspection but did not stop it
    /// (unreadable filesystem, damaged primary GPT, ...), one line each.
    pub notes: Vec<String>,
}

/// Kind of partition table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// No partition table: a filesystem (or nothing) on the whole disk.
    #[default]
    None,
    /// MBR (DOS) table.
    Mbr,
    /// GPT with a protective MBR.
    Gpt,
    /// GPT whose MBR also lists real partitions (hybrid MBR).
    HybridMbr,
}

/// The partition table and its entries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionTable {
    /// Which kind.
    pub kind: TableKind,
    /// Logical sector size the table was read with (512 or 4096).
    pub sector_size: u32,
    /// Entries in table order (MBR logical partitions numbered from 5).
    pub entries: Vec<Partition>,
    /// Problems with the table (bad CRC, backup used, backup not at end...).
    pub problems: Vec<String>,
}

/// What a partition is for, from its type code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionRole {
    /// EFI system partition (GPT C12A7328-..., MBR 0xEF).
    Esp,
    /// GRUB's BIOS boot partition (GPT 21686148-6449-6E6F-744E-656564454649).
    BiosBoot,
    /// Linux data / root.
    Linux,
    /// Swap.
    Swap,
    /// LVM physical volume.
    Lvm,
    /// MBR extended container.
    Extended,
    /// Anything else.
    #[default]
    Other,
}

/// One partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Partition {
    /// Partition number (1-based; MBR logical partitions start at 5).
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type as written: GPT type GUID or MBR type byte as "0x83".
    pub type_id: String,
    /// What the type means.
    pub role: PartitionRole,
    /// GPT name, if any.
    pub name: Option<String>,
    /// MBR active flag or GPT legacy-BIOS-bootable attribute.
    pub bootable: bool,
}

/// Filesystem kinds identified by magic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no ext4-only features).
    Ext3,
    /// ext4.
    Ext4,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// FAT12/16/32 (ESP).
    Vfat,
    /// Linux swap.
    Swap,
    /// LVM2 physical volume.
    LvmPv,
    /// LUKS encrypted container.
    Luks,
    /// ISO 9660.
    Iso9660,
    /// SquashFS.
    Squashfs,
    /// NTFS.
    Ntfs,
    /// ZFS member.
    Zfs,
    /// UFS / UFS2 (BSD).
    Ufs,
    /// Nothing recognised.
    #[default]
    Unknown,
}

/// One filesystem (or container) found on the disk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filesystem {
    /// Partition number it lives in, or `None` for the whole disk.
    pub partition: Option<u32>,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Kind.
    pub kind: FsKind,
    /// Label, if the filesystem has one.
    pub label: Option<String>,
    /// UUID, if the filesystem has one.
    pub uuid: Option<String>,
    /// Feature names (ext: has_journal, extent, 64bit, ...).
    pub features: Vec<String>,
    /// Why the filesystem could not be read, if it could not (unsupported
    /// incompat feature, corruption). Inspection goes on without it.
    pub error: Option<String>,
    /// The LVM logical volume (`vg/lv`) it lives on, if any; `partition`
    /// and `offset` are then those of the volume's first physical volume.
    pub lv: Option<String>,
}

/// Facts read from the guest's root filesystem.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestFacts {
    /// Operating system.
    pub os: OsFacts,
    /// cloud-init and its alternatives.
    pub cloud_init: CloudInitFacts,
    /// The SSH daemon.
    pub sshd: SshdFacts,
    /// How the disk boots.
    pub boot: BootFacts,
    /// What KakaoCloud's image `os_info` would say.
    pub kakaocloud: KakaoOsInfo,
}

/// The operating system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OsFacts {
    /// `linux`, `freebsd`, `openbsd`, `netbsd`, `windows`, or `unknown`.
    pub kind: String,
    /// os-release ID (e.g. `debian`), if known.
    pub id: Option<String>,
    /// os-release VERSION_ID, if known.
    pub version_id: Option<String>,
    /// os-release PRETTY_NAME, if known.
    pub pretty_name: Option<String>,
    /// os-release VARIANT_ID (`coreos` on Fedora CoreOS, `cloud`), if set.
    pub variant_id: Option<String>,
    /// os-release ID_LIKE (`rhel centos fedora`), if set.
    pub id_like: Option<String>,
    /// CPU architecture from the ELF header of /sbin/init or /bin/sh
    /// (`x86_64`, `aarch64`, `i386`, `arm`, `riscv64`, ...).
    pub architecture: Option<String>,
    /// Files the facts came from.
    pub evidence: Vec<String>,
}

/// cloud-init and its alternatives.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CloudInitFacts {
    /// cloud-init is installed.
    pub installed: bool,
    /// Its version ("22.4.2"), if found.
    pub version: Option<String>,
    /// Where the version came from (file path).
    pub version_source: Option<String>,
    /// Alternatives found: any of `cloudbase-init`, `coreos-cloudinit`,
    /// `ignition`, `bsd-cloudinit`.
    pub alternatives: Vec<String>,
    /// The effective datasource_list: the configured one (as ds-identify
    /// reads it, on images that run ds-identify at boot), or, when nothing
    /// configures one, the default that governs at boot (ds-identify's
    /// order on images that run it, else cloud-init's built-in list).
    /// `None` only when no guest was read.
    pub datasource_list: Option<Vec<String>>,
    /// Where the effective datasource_list came from, in words (a file,
    /// "kernel command line in /boot/grub/grub.cfg", or which default).
    pub datasource_source: Option<String>,
    /// Who decided it: `kernel_cmdline`, `ds_identify_config`, `config`,
    /// `ds_identify_default` or `builtin_default`.
    pub datasource_decided_by: Option<String>,
    /// ds-identify runs at boot (it is installed, and cloud-init's systemd
    /// generator or the OpenRC `cloud-init-ds-identify` service starts it).
    pub ds_identify: bool,
    /// The list cloud-init's own reading of the configuration gives (YAML),
    /// when ds-identify overrides it at boot with a different one.
    pub config_datasource_list: Option<Vec<String>>,
    /// The file that list comes from.
    pub config_datasource_source: Option<String>,
    /// `system_info.default_user.name`, if set.
    pub default_user: Option<String>,
    /// What disables cloud-init (`/etc/cloud/cloud-init.disabled`,
    /// `cloud-init=disabled` on a kernel command line), one line each.
    pub disabled_by: Vec<String>,
    /// Configuration files cloud-init would ignore (YAML that PyYAML's
    /// safe_load refuses, a document that is not a mapping), with why.
    pub ignored_configs: Vec<String>,
}

/// The SSH daemon.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SshdFacts {
    /// An sshd binary exists.
    pub installed: bool,
    /// Its path in the guest.
    pub binary: Option<String>,
    /// Enabled at boot: `Some(true)` / `Some(false)` when the init system
    /// was recognised, `None` when it could not be told.
    pub enabled: Option<bool>,
    /// `systemd`, `sysvinit`, `openrc`, `rc.d` (BSD), or `None`.
    pub init_system: Option<String>,
    /// systemd units for sshd that are masked (a /dev/null link or an
    /// empty unit file), e.g. `ssh.service`.
    pub masked_units: Vec<String>,
    /// What the decision rests on (symlink paths, masks, rc.conf lines).
    pub evidence: Vec<String>,
}

/// Boot capability.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BootFacts {
    /// Boots with legacy BIOS (boot code in the MBR, GRUB in the MBR gap
    /// or a BIOS boot partition).
    pub bios: bool,
    /// Boots with UEFI (an ESP holding an EFI loader).
    pub uefi: bool,
    /// Why we think so.
    pub evidence: Vec<String>,
    /// Kernel images under /boot (file names).
    pub kernels: Vec<String>,
}

/// KakaoCloud image `os_info` fields derived from the facts, plus min_disk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KakaoOsInfo {
    /// `linux` or `windows`.
    #[serde(rename = "type")]
    pub os_type: Option<String>,
    /// Distribution name (e.g. `ubuntu`).
    pub distro: Option<String>,
    /// `x86_64` / `aarch64`.
    pub architecture: Option<String>,
    /// Default login user.
    pub admin_user: Option<String>,
    /// Smallest disk in GB that holds the image (virtual size rounded up).
    pub min_disk_gb: u64,
}
