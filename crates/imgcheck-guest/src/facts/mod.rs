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
