//! Facts read from the guest tree. Each module fills one part of
//! [`GuestFacts`]; all of them read through [`Guest`], which bounds sizes
//! and resolves symlinks inside the guest.

pub mod boot;
pub mod cloud_init;
pub mod datasource;
pub mod ds_identify;
pub mod kakao;
pub mod os;
pub mod rpmdb;
pub mod sshd;
pub mod yaml;

use std::sync::Arc;

use imgcheck_source::ByteSource;

use crate::report::{GuestFacts, GuestReport};
use crate::root::Guest;

/// Gathers every fact. Without a root, only what the disk itself says
/// (boot, size) is filled in.
pub fn gather(guest: Option<&Guest>, disk: &Arc<dyn ByteSource>, r: &GuestReport) -> GuestFacts {
    let mut f = GuestFacts::default();
    match guest {
        Some(g) => {
            f.os = os::gather(g);
            f.cloud_init = cloud_init::gather(g);
            if ships_ignition_in_kernel(&f.os)
                && !f.cloud_init.alternatives.iter().any(|a| a == "ignition")
            {
                f.cloud_init.alternatives.push("ignition".into());
            }
            let ds = datasource::gather(g);
            f.cloud_init.default_user = ds.default_user;
            f.cloud_init.ignored_configs = ds.ignored;
            // Defaults and disable markers mean something only where
            // cloud-init is there to apply them.
            if f.cloud_init.installed {
                f.cloud_init.datasource_list = ds.list;
                f.cloud_init.datasource_source = ds.source;
                f.cloud_init.datasource_decided_by = ds.decided_by;
                f.cloud_init.ds_identify = ds.ds_identify;
                f.cloud_init.config_datasource_list = ds.config_list;
                f.cloud_init.config_datasource_source = ds.config_source;
                f.cloud_init.disabled_by = ds.disabled_by;
            }
            f.sshd = sshd::gather(g, &f.os);
        }
        None => f.os.kind = "unknown".into(),
    }
    f.boot = boot::gather(guest, disk, r);
    f.kakaocloud = kakao::derive(&f, r, disk.len());
    f
}

/// Flatcar (and CoreOS Container Linux) run Ignition from the initramfs
/// that is built into the kernel image on the ESP (flatcar/bootengine,
/// linked into `flatcar/vmlinuz-a`); nothing of it is on /usr, and
/// imgcheck does not unpack kernels. Every Flatcar image ships it (the
/// Flatcar docs: "Ignition is the provisioning utility"), so the
/// os-release ID stands for it. Fedora CoreOS and RHCOS ship Ignition as a
/// dracut module under /usr, which `cloud_init::gather` finds by its files.
fn ships_ignition_in_kernel(os: &crate::report::OsFacts) -> bool {
    matches!(os.id.as_deref(), Some("flatcar" | "coreos"))
}
