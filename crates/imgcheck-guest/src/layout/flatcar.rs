//! Flatcar Container Linux (and its ancestor CoreOS Container Linux).
//!
//! Facts, from flatcar/scripts `build_library/disk_layout.json`, the
//! Flatcar docs ("disk layout", "boot process") and the GPT type registry
//! (util-linux, gdisk):
//! * GPT partitions EFI-SYSTEM (1), BIOS-BOOT (2), USR-A (3), USR-B (4),
//!   OEM (6), OEM-CONFIG (7), ROOT (9). USR-A/USR-B carry the type GUID
//!   5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6 ("coreos-usr"), ROOT
//!   3884DD41-8582-4404-B9A8-E9B84F2DF50E ("coreos-resize": grown at first
//!   boot).
//! * USR-A holds the whole /usr tree (its `/lib/os-release` is the guest's
//!   /usr/lib/os-release) in a filesystem shorter than the partition: the
//!   dm-verity hash tree follows it inside the partition. /usr is **not**
//!   in /etc/fstab: the initramfs mounts it from the kernel command line
//!   (`mount.usr=`, `verity.usr=PARTUUID=…`, older `usr=PARTLABEL=USR-A`),
//!   which GRUB builds at boot from the partition `gptprio.next` picks:
//!   the highest GPT priority (attribute bits 48-51) among partitions
//!   marked successful (bit 56) or with tries left (bits 52-55).
//! * ROOT (ext4, label ROOT) is `/`; on a fresh image it is nearly empty
//!   (/etc is filled at first boot). OEM is mounted at /oem and may hold a
//!   `grub.cfg` that appends kernel arguments.
//!
//! The ESP's own grub.cfg is on FAT, which imgcheck only lists, and it
//! computes the USR partition at boot anyway; so the choice here is: an
//! explicit `usr=`/`mount.usr=`/`verity.usr=` in the OEM grub.cfg, else the
//! GPT priorities, else USR-A.

use std::rc::Rc;

use super::{Disk, Found, Layer, Log, MountPointsFs, OverlayFs, SubtreeFs, cmdline_value};
use crate::fs::{GuestFs, Kind};
use crate::report::Partition;
use crate::root::Guest;

/// GPT type of Flatcar's USR-A/USR-B ("coreos-usr").
pub const USR_TYPE: &str = "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6";
/// GPT type of Flatcar's ROOT ("coreos-resize").
pub const ROOT_TYPE: &str = "3884DD41-8582-4404-B9A8-E9B84F2DF50E";

/// Whether `p` is a USR partition.
fn is_usr(p: &Partition) -> bool {
    p.type_id.eq_ignore_ascii_case(USR_TYPE) || matches!(p.name.as_deref(), Some("USR-A" | "USR-B"))
}

/// gptprio's view of a partition's attributes: (priority, bootable).
pub fn gptprio(attrs: u64) -> (u8, bool) {
    let field = |shift: u32| u8::try_from((attrs >> shift) & 0xF).unwrap_or(0);
    let priority = field(48);
    let tries = field(52);
    let successful = attrs >> 56 & 1 == 1;
    (priority, priority > 0 && (successful || tries > 0))
}

/// The partition a kernel-command-line device spec names
/// (`PARTLABEL=`, `PARTUUID=`, `/dev/disk/by-partlabel/…`).
fn named_by(
    spec: &str,
    parts: &[Partition],
    partuuid: &dyn Fn(u32) -> Option<String>,
) -> Option<u32> {
    let label = spec
        .strip_prefix("PARTLABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partlabel/"));
    let uuid = spec
        .strip_prefix("PARTUUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partuuid/"));
    parts
        .iter()
        .find(|p| {
            label.is_some_and(|l| p.name.as_deref() == Some(l))
                || uuid
                    .is_some_and(|u| partuuid(p.number).is_some_and(|v| v.eq_ignore_ascii_case(u)))
        })
        .map(|p| p.number)
}

/// Picks the USR partition: (number, why).
fn choose_usr(d: &Disk<'_>, usr: &[&Partition], oem_cfg: Option<&str>) -> Option<(u32, String)> {
    let partuuid = |n: u32| {
        d.partuuids
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, u)| u.clone())
    };
    if let Some(cfg) = oem_cfg {
        for key in ["verity.usr", "mount.usr", "usr"] {
            if let Some(spec) = cmdline_value(cfg, key)
                && let Some(n) = named_by(spec, d.parts, &partuuid)
            {
                return Some((n, format!("{key}={spec} in the OEM grub.cfg")));
            }
        }
    }
    let mut best: Option<(u8, u32)> = None;
    for p in usr {
        let attrs = d
            .attributes
            .iter()
            .find(|(n, _)| *n == p.number)
            .map_or(0, |(_, a)| *a);
        let (prio, bootable) = gptprio(attrs);
        if bootable && best.is_none_or(|(b, _)| prio > b) {
            best = Some((prio, p.number));
        }
    }
    if let Some((prio, n)) = best {
        return Some((
            n,
            format!("highest GPT priority ({prio}), as GRUB's gptprio.next picks"),
        ));
    }
    usr.iter()
        .find(|p| p.name.as_deref() == Some("USR-A"))
        .or_else(|| usr.first())
        .map(|p| {
            (
                p.number,
                "no bootable GPT priority set; USR-A by default".to_owned(),
            )
        })
}

/// Whether every component of `path` in `fs` is a real directory (not a
/// symlink), so `path` can be a [`SubtreeFs`] prefix.
fn is_real_dir(fs: &Rc<dyn GuestFs>, path: &str) -> bool {
    let mut at = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()).take(16) {
        at.push('/');
        at.push_str(c);
        if !matches!(fs.lstat(&at), Ok(Some(Kind::Dir))) {
            return false;
        }
    }
    true
}

/// Flatcar (since 3535, flatcar/scripts#666 and bootengine#53) ships the
/// image's /etc in /usr/share/flatcar/etc and mounts /etc in the
/// initramfs as an overlay: ROOT's /etc (empty on a fresh image) over that
/// directory of the active USR partition. `None` on older images, whose
/// /etc is a plain directory on ROOT.
fn etc_overlay(
    root: &Rc<dyn GuestFs>,
    root_offset: u64,
    usr: &Rc<dyn GuestFs>,
    usr_offset: u64,
) -> Option<Rc<dyn GuestFs>> {
    const LOWER: &str = "/share/flatcar/etc";
    if !is_real_dir(usr, LOWER) {
        return None;
    }
    let upper = if is_real_dir(root, "/etc") {
        SubtreeFs::view(root.clone(), "/etc")
    } else {
        MountPointsFs::tree(&[])
    };
    Some(OverlayFs::stack(
        Layer {
            fs: upper,
            offset: root_offset,
        },
        Layer {
            fs: SubtreeFs::view(usr.clone(), LOWER),
            offset: usr_offset,
        },
    ))
}

/// The Flatcar guest tree, when the disk has Flatcar's USR partitions.
pub(crate) fn find(d: &Disk<'_>, log: &mut Log) -> Option<Found> {
    let usr: Vec<&Partition> = d.parts.iter().filter(|p| is_usr(p)).take(8).collect();
    if usr.is_empty() {
        return None;
    }
    let oem = d
        .parts
        .iter()
        .find(|p| p.name.as_deref() == Some("OEM"))
        .and_then(|p| d.on_partition(p.number));
    let oem_cfg = oem
        .as_ref()
        .and_then(|(i, fs)| Guest::new(fs.clone(), d.offset(*i), false).read_text("/grub.cfg"));
    let (n, why) = choose_usr(d, &usr, oem_cfg.as_deref())?;
    let label = d
        .parts
        .iter()
        .find(|p| p.number == n)
        .and_then(|p| p.name.clone())
        .unwrap_or_else(|| format!("partition {n}"));
    let Some((usr_i, usr_fs)) = d.on_partition(n) else {
        let what = format!(
            "Flatcar layout: /usr would be {label} (partition {n}, {why}), which holds no filesystem imgcheck can read"
        );
        log.undetermined = Some(what.clone());
        log.notes.push(what);
        return None;
    };
    let root = d
        .parts
        .iter()
        .find(|p| p.name.as_deref() == Some("ROOT"))
        .or_else(|| {
            d.parts
                .iter()
                .find(|p| p.type_id.eq_ignore_ascii_case(ROOT_TYPE))
        })
        .and_then(|p| d.on_partition(p.number).map(|r| (p.number, r)));
    let mut found_notes = vec![format!(
        "Flatcar layout: /usr is {label} (partition {n}; {why}), mounted by the initramfs, not by fstab"
    )];
    let (root_i, root_fs): (usize, Rc<dyn GuestFs>) = match root {
        Some((rn, (i, fs))) => {
            found_notes.push(format!("Flatcar layout: / is ROOT (partition {rn})"));
            (i, fs)
        }
        None => {
            found_notes.push(
                "Flatcar layout: no readable ROOT partition; / holds only the mounts".to_owned(),
            );
            (usr_i, MountPointsFs::tree(&["/usr", "/oem", "/etc"]))
        }
    };
    let etc = etc_overlay(&root_fs, d.offset(root_i), &usr_fs, d.offset(usr_i));
    let mut g = Guest::new(root_fs, d.offset(root_i), d.trace);
    g.mount("/usr", usr_fs, d.offset(usr_i));
    if let Some(etc) = etc {
        found_notes.push(
            "Flatcar layout: /etc is an overlay of ROOT's /etc over /usr/share/flatcar/etc"
                .to_owned(),
        );
        g.mount("/etc", etc, d.offset(usr_i));
    }
    if let Some((i, fs)) = oem {
        g.mount("/oem", fs, d.offset(i));
    }
    if g.stat("/usr/lib/os-release").is_none() {
        log.notes.push(format!(
            "Flatcar layout: {label} (partition {n}) holds no lib/os-release"
        ));
        return None;
    }
    Some(Found {
        guest: g,
        root: root_i,
        notes: found_notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_priority_bits() {
        // USR-A as Flatcar's image builder leaves it: priority 1,
        // successful; USR-B: all zero.
        let a = (1u64 << 48) | (1u64 << 56);
        assert_eq!(gptprio(a), (1, true));
        assert_eq!(gptprio(0), (0, false));
        // Priority 2 with one try left (an update being tried).
        assert_eq!(gptprio((2u64 << 48) | (1u64 << 52)), (2, true));
        // Priority without success or tries: not bootable.
        assert_eq!(gptprio(3u64 << 48), (3, false));
        assert_eq!(gptprio(u64::MAX), (15, true));
    }
}
