//! KakaoCloud image `os_info` derived from the other facts, and `min_disk`.
//!
//! `min_disk` is in GB. KakaoCloud's image model (Glance-like) documents
//! `min_disk` as GB without saying decimal or binary; we use decimal
//! gigabytes (10^9 bytes), rounding up. That gives a number at least as
//! large as the GiB figure, so a volume of that size always holds the
//! image: erring towards too large is safe, too small would fail to boot.

use crate::report::{FsKind, GuestFacts, GuestReport, KakaoOsInfo};

/// One decimal gigabyte.
pub const GB: u64 = 1_000_000_000;

/// Smallest whole number of GB (10^9 bytes) that holds `bytes`.
pub fn min_disk_gb(bytes: u64) -> u64 {
    bytes.div_ceil(GB)
}

/// Flatcar and Fedora CoreOS are provisioned by Ignition, not cloud-init:
/// their login user is `core` (both distributions document it).
fn ignition_user(f: &GuestFacts) -> Option<String> {
    // os-release IDs: Flatcar `flatcar`, CoreOS Container Linux `coreos`,
    // RHCOS `rhcos`; Fedora CoreOS is `fedora` with VARIANT_ID=coreos.
    let coreos = matches!(f.os.id.as_deref(), Some("flatcar" | "coreos" | "rhcos"))
        || f.os.variant_id.as_deref() == Some("coreos");
    (coreos || f.cloud_init.alternatives.iter().any(|a| a == "ignition")).then(|| "core".to_owned())
}

/// Derives KakaoCloud's `os_info` from the facts and the virtual size.
pub fn derive(f: &GuestFacts, r: &GuestReport, virtual_size: u64) -> KakaoOsInfo {
    let os_type = match f.os.kind.as_str() {
        "linux" => Some("linux".to_owned()),
        "windows" => Some("windows".to_owned()),
        _ if r.root.is_none() && r.filesystems.iter().any(|fs| fs.kind == FsKind::Ntfs) => {
            Some("windows".to_owned())
        }
        _ => None,
    };
    KakaoOsInfo {
        os_type,
        distro: f.os.id.clone(),
        architecture: f.os.architecture.clone(),
        admin_user: f
            .cloud_init
            .default_user
            .clone()
            .or_else(|| ignition_user(f)),
        min_disk_gb: min_disk_gb(virtual_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gb_rounding() {
        assert_eq!(min_disk_gb(0), 0);
        assert_eq!(min_disk_gb(1), 1);
        assert_eq!(min_disk_gb(GB), 1);
        assert_eq!(min_disk_gb(GB + 1), 2);
        // 101 GiB is 108.45 GB -> 109.
        assert_eq!(min_disk_gb(101 << 30), 109);
        assert_eq!(min_disk_gb(u64::MAX), u64::MAX / GB + 1);
    }
}
