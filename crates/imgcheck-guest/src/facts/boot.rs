//! How the disk boots: legacy BIOS, UEFI, and which kernels /boot holds.
//!
//! BIOS firmware runs the 440 bytes of boot code in sector 0 and nothing
//! else, so `bios` is true exactly when that code is present (not all
//! zero). GRUB's signature there, its core image in the MBR gap or in a BIOS
//! boot partition are recorded as evidence; without boot code in sector 0
//! they cannot boot, which the evidence then says. `uefi` is true when a
//! FAT filesystem (normally the ESP) holds `\EFI\*\*.EFI`.

use std::sync::Arc;

use imgcheck_source::{ByteSource, SliceSource};

use crate::fat::Fat;
use crate::report::{BootFacts, FsKind, GuestReport, PartitionRole, TableKind};
use crate::root::Guest;

/// Most kernel names listed.
const MAX_KERNELS: usize = 64;

fn nonzero(src: &dyn ByteSource, off: u64, len: usize) -> bool {
    let mut b = vec![0u8; len];
    src.read_exact_at(off, &mut b).is_ok() && b.iter().any(|&x| x != 0)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads the boot facts.
pub fn gather(guest: Option<&Guest>, disk: &Arc<dyn ByteSource>, r: &GuestReport) -> BootFacts {
    let mut f = BootFacts::default();
    let mut s0 = [0u8; 512];
    let have_s0 = disk.read_exact_at(0, &mut s0).is_ok();
    let code_present = have_s0 && s0[..440].iter().any(|&x| x != 0);
    // Without a partition table, XFS, FAT, NTFS, SquashFS and LUKS keep
    // their own header in sector 0, so non-zero bytes there are not boot
    // code. ext, btrfs, swap and LVM leave the boot sector free.
    let sector0_is_fs = r.partitions.kind == TableKind::None
        && r.filesystems.first().is_some_and(|f| {
            f.offset == 0
                && matches!(
                    f.kind,
                    FsKind::Xfs | FsKind::Vfat | FsKind::Ntfs | FsKind::Squashfs | FsKind::Luks
                )
        });
    if code_present && !sector0_is_fs {
        f.bios = true;
        f.evidence
            .push("boot code in the MBR (first 440 bytes of sector 0)".into());
        if contains(&s0[..440], b"GRUB") {
            f.evidence.push("GRUB boot.img signature in the MBR".into());
        }
    } else if sector0_is_fs {
        f.evidence
            .push("sector 0 belongs to the filesystem on the whole disk: no boot code".into());
    } else if have_s0 {
        f.evidence
            .push("no boot code in the MBR (first 440 bytes are zero)".into());
    }
    if r.partitions.kind == TableKind::Mbr {
        // GRUB's core.img starts at sector 1 when embedded in the MBR gap.
        let first = r
            .partitions
            .entries
            .iter()
            .map(|p| p.start)
            .min()
            .unwrap_or(0);
        if first >= 1024 && nonzero(disk.as_ref(), 512, 512) {
            f.evidence
                .push("boot loader core in the MBR gap (sector 1 is not empty)".into());
        }
    }
    for p in &r.partitions.entries {
        if p.role == PartitionRole::BiosBoot {
            if nonzero(disk.as_ref(), p.start, 512) {
                f.evidence.push(format!(
                    "BIOS boot partition {} holds a boot loader core",
                    p.number
                ));
            } else {
                f.evidence
                    .push(format!("BIOS boot partition {} is empty", p.number));
            }
        }
    }

    for fs in &r.filesystems {
        if fs.kind != FsKind::Vfat {
            continue;
        }
        let src = SliceSource::new(disk.clone(), fs.offset, fs.size, disk.name().to_owned());
        let Some(fat) = Fat::open(&src) else { continue };
        let loaders = fat.efi_loaders();
        let at = fs
            .partition
            .map_or("the whole disk".to_owned(), |n| format!("partition {n}"));
        let is_esp = fs.partition.is_some_and(|n| {
            r.partitions
                .entries
                .iter()
                .any(|p| p.number == n && p.role == PartitionRole::Esp)
        });
        for l in &loaders {
            f.evidence.push(format!(
                "EFI loader {l} on {at}{}",
                if is_esp { " (ESP)" } else { "" }
            ));
        }
        if !loaders.is_empty() {
            f.uefi = true;
        } else if is_esp {
            f.evidence
                .push(format!("ESP on {at} holds no EFI/*/*.EFI loader"));
        }
    }

    if let Some(g) = guest {
        for n in g.list_dir("/boot") {
            if (n.starts_with("vmlinuz") || n.starts_with("vmlinux"))
                && f.kernels.len() < MAX_KERNELS
            {
                f.kernels.push(n);
            }
        }
        if g.exists("/boot/kernel/kernel") {
            f.kernels.push("kernel/kernel".into());
        }
        if f.kernels.is_empty() {
            ostree_kernels(g, &mut f.kernels);
        }
    }
    if f.kernels.is_empty() {
        flatcar_kernels(disk, r, &mut f.kernels);
    }
    f
}

/// Kernels of ostree systems: the boot partition's
/// `/ostree/<stateroot>-<bootcsum>/vmlinuz-<kver>` (what the BLS entries
/// load), else the deployment's `/usr/lib/modules/<kver>/vmlinuz` (where
/// ostree and kernel-install keep the kernel inside /usr).
fn ostree_kernels(g: &Guest, out: &mut Vec<String>) {
    for d in g.list_dir("/boot/ostree").into_iter().take(MAX_KERNELS) {
        for n in g.list_dir(&format!("/boot/ostree/{d}")) {
            if n.starts_with("vmlinuz") && out.len() < MAX_KERNELS {
                out.push(format!("ostree/{d}/{n}"));
            }
        }
    }
    if out.is_empty() {
        for v in g.list_dir("/usr/lib/modules").into_iter().take(MAX_KERNELS) {
            if g.exists(&format!("/usr/lib/modules/{v}/vmlinuz")) {
                out.push(format!("/usr/lib/modules/{v}/vmlinuz"));
            }
        }
    }
}

/// Flatcar keeps its kernels (with the initramfs built in) only on the ESP,
/// as `flatcar/vmlinuz-a` and `vmlinuz-b` (`coreos/` on CoreOS Container
/// Linux); the FAT walker reads 8.3 names, so they are listed by those.
fn flatcar_kernels(disk: &Arc<dyn ByteSource>, r: &GuestReport, out: &mut Vec<String>) {
    for fs in r.filesystems.iter().filter(|f| f.kind == FsKind::Vfat) {
        let src = SliceSource::new(disk.clone(), fs.offset, fs.size, disk.name().to_owned());
        let Some(fat) = Fat::open(&src) else { continue };
        for dir in ["FLATCAR", "COREOS"] {
            for e in fat.list(dir) {
                if !e.is_dir && e.name.starts_with("VMLINU") && out.len() < MAX_KERNELS {
                    out.push(format!("ESP:{dir}/{} (8.3 name)", e.name));
                }
            }
        }
    }
}
