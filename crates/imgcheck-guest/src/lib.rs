//! Guest inspection: partition tables, filesystems, and facts read from the
//! root filesystem, entirely in userspace over a [`ByteSource`] (never the
//! host kernel, never a mount).
//!
//! The flow of [`inspect`]:
//! 1. [`partitions`]: the partition table (GPT, MBR, hybrid, none);
//! 2. [`fsprobe`]: what sits in each partition (or on the whole disk);
//! 3. [`ext`]: ext filesystems are opened with ext4-view after our own
//!    superblock check;
//! 4. [`root`]: the root is the ext filesystem holding os-release; its
//!    /etc/fstab grafts a separate /usr or /boot;
//! 5. [`facts`]: OS, cloud-init, datasource_list, sshd, boot, KakaoCloud.
//!
//! Every byte comes from an untrusted image: reads are bounded, arithmetic
//! is checked, loops are capped, and a problem becomes a note or an unknown
//! fact, never a panic or an error return.

mod report;

pub mod ext;
pub mod facts;
pub mod fat;
pub mod fs;
pub mod fsprobe;
pub mod layout;
pub mod lvm;
pub mod partitions;
pub mod root;

pub use report::*;
pub use root::FileRead;

use std::rc::Rc;
use std::sync::Arc;

use imgcheck_source::{ByteSource, SliceSource};

use crate::fs::GuestFs;

/// Inspects the guest disk `disk` (guest bytes, e.g. a `VirtualDisk`).
///
/// Never fails: what cannot be read is reported in [`GuestReport::notes`]
/// and in the facts as unknown.
pub fn inspect(disk: Arc<dyn ByteSource>) -> GuestReport {
    inspect_inner(disk, false).0
}

/// [`inspect`], also returning every guest file it read (path, the
/// filesystem's offset, the bytes). For differential tests and for
/// explaining a verdict.
pub fn inspect_traced(disk: Arc<dyn ByteSource>) -> (GuestReport, Vec<FileRead>) {
    inspect_inner(disk, true)
}

/// The window of `disk` a filesystem lives in.
fn fs_source(disk: &Arc<dyn ByteSource>, fs: &Filesystem) -> Arc<dyn ByteSource> {
    let name = match fs.partition {
        Some(n) => format!("{} (partition {n})", disk.name()),
        None => disk.name().to_owned(),
    };
    Arc::new(SliceSource::new(disk.clone(), fs.offset, fs.size, name))
}

fn inspect_inner(disk: Arc<dyn ByteSource>, trace: bool) -> (GuestReport, Vec<FileRead>) {
    let mut r = GuestReport::default();
    let table = partitions::read_table(&disk);
    r.partitions = table.table;
    for p in &r.partitions.problems {
        r.notes.push(format!("partition table: {p}"));
    }

    // 2. What is in each partition (or on the whole disk); `sources[i]`
    // holds the bytes of `r.filesystems[i]`.
    let mut sources: Vec<Arc<dyn ByteSource>> = Vec::new();
    if r.partitions.entries.is_empty() {
        let mut fs = fsprobe::probe(disk.as_ref());
        fs.offset = 0;
        fs.size = disk.len();
        if fs.kind != FsKind::Unknown || r.partitions.kind == TableKind::None {
            sources.push(fs_source(&disk, &fs));
            r.filesystems.push(fs);
        }
    } else {
        for p in &r.partitions.entries {
            if p.role == PartitionRole::Extended {
                continue;
            }
            // One window per partition: probed here, read by its reader later.
            let src = fs_source(
                &disk,
                &Filesystem {
                    partition: Some(p.number),
                    offset: p.start,
                    size: p.size,
                    ..Filesystem::default()
                },
            );
            let mut fs = fsprobe::probe(src.as_ref());
            fs.partition = Some(p.number);
            fs.offset = p.start;
            fs.size = src.len();
            sources.push(src);
            r.filesystems.push(fs);
        }
    }
    add_logical_volumes(&mut r, &mut sources);

    // 3. Open every filesystem imgcheck reads; the reason for a refusal
    // goes into the report and inspection goes on.
    let mut opened: Vec<Option<Rc<dyn GuestFs>>> = Vec::with_capacity(r.filesystems.len());
    for (fs, src) in r.filesystems.iter_mut().zip(&sources) {
        match fs::open(fs.kind, src.clone()) {
            None => opened.push(None),
            Some(Ok(f)) => opened.push(Some(f)),
            Some(Err(why)) => {
                r.notes.push(format!(
                    "{:?} filesystem on {} cannot be read: {why}",
                    fs.kind,
                    place(fs)
                ));
                fs.error = Some(why.to_string());
                opened.push(None);
            }
        }
    }

    // 4. The root and its mounts.
    let guest = find_root(&mut r, &opened, &table.partuuids, &table.attributes, trace);
    if guest.is_none() {
        let has_lvs = r.filesystems.iter().any(|f| f.lv.is_some());
        let unread: Vec<String> = r
            .filesystems
            .iter()
            .zip(&opened)
            .filter(|(f, o)| {
                // A PV whose LVs were read is not "unread": its LVs are listed.
                let pv_read = f.kind == FsKind::LvmPv && has_lvs;
                o.is_none()
                    && !pv_read
                    && !matches!(f.kind, FsKind::Vfat | FsKind::Swap | FsKind::Unknown)
            })
            .map(|(f, _)| format!("{:?} on {}", f.kind, place(f)))
            .collect();
        if r.root_undetermined.is_some() {
            // The layout's own note says why.
        } else if unread.is_empty() {
            r.notes
                .push("no root filesystem found (no readable filesystem holds os-release)".into());
        } else {
            r.notes.push(format!(
                "no readable root filesystem; imgcheck could not read: {}",
                unread.join(", ")
            ));
        }
    }

    // 5. Facts.
    r.guest = facts::gather(guest.as_ref(), &disk, &r);
    if let Some(g) = &guest {
        r.notes.extend(
            g.problems()
                .into_iter()
                .map(|p| format!("guest file not read: {p}")),
        );
    }
    let trace = guest
        .as_ref()
        .map(root::Guest::take_trace)
        .unwrap_or_default();
    (r, trace)
}

/// Where a filesystem lives, for messages: "LV vg/root", "partition 2",
/// "whole disk".
fn place(f: &Filesystem) -> String {
    match (&f.lv, f.partition) {
        (Some(lv), _) => format!("LV {lv}"),
        (None, Some(n)) => format!("partition {n}"),
        (None, None) => "whole disk".to_owned(),
    }
}

/// Reads the LVM physical volumes among the filesystems and appends one
/// filesystem per readable logical volume (with its bytes to `sources`).
fn add_logical_volumes(r: &mut GuestReport, sources: &mut Vec<Arc<dyn ByteSource>>) {
    let pvs: Vec<(String, Arc<dyn ByteSource>)> = r
        .filesystems
        .iter()
        .zip(sources.iter())
        .filter(|(f, _)| f.kind == FsKind::LvmPv)
        .map(|(f, s)| (place(f), s.clone()))
        .collect();
    if pvs.is_empty() {
        return;
    }
    let first = r
        .filesystems
        .iter()
        .find(|f| f.kind == FsKind::LvmPv)
        .cloned()
        .unwrap_or_default();
    let scan = lvm::scan(&pvs);
    r.notes.extend(scan.problems);
    for lv in scan.lvs {
        let Ok(src) = lv.source else { continue };
        let mut fs = fsprobe::probe(src.as_ref());
        fs.partition = first.partition;
        fs.offset = first.offset;
        fs.size = src.len();
        fs.lv = Some(lv.name);
        r.filesystems.push(fs);
        sources.push(src);
    }
}

/// The guest tree of the first filesystem (or btrfs subvolume) that holds
/// an OS root marker, with /usr and /boot mounted from its fstab. The
/// markers are looked for after the mounts, so a separate /usr holding the
/// only os-release (os-release(5): /usr/lib/os-release) is found.
fn find_root(
    r: &mut GuestReport,
    opened: &[Option<Rc<dyn GuestFs>>],
    partuuids: &[(u32, String)],
    attributes: &[(u32, u64)],
    trace: bool,
) -> Option<root::Guest> {
    // Layouts whose root is assembled by their own boot (Flatcar's USR
    // partition, ostree deployments) come first: their filesystems would
    // otherwise look like a root without its /usr, or like no root at all.
    let mut log = layout::Log::default();
    let disk = layout::Disk {
        fss: &r.filesystems,
        opened,
        parts: &r.partitions.entries,
        attributes,
        partuuids,
        trace,
    };
    let found = layout::find(&disk, &mut log);
    r.notes.extend(log.notes);
    if let Some(f) = found {
        r.root = Some(f.root);
        r.notes.extend(f.notes);
        return Some(f.guest);
    }
    let has_marker = |g: &root::Guest| facts::os::ROOT_MARKERS.iter().any(|m| g.lstat(m).is_some());
    for (i, f) in opened.iter().enumerate() {
        let Some(f) = f else { continue };
        let offset = r.filesystems.get(i).map_or(0, |f| f.offset);
        let mut views = vec![(String::new(), f.clone())];
        views.extend(f.alternate_roots().into_iter().take(MAX_ALTERNATE_ROOTS));
        for (view, tree) in views {
            let mut g = root::Guest::new(tree, offset, trace);
            if !has_marker(&g) && g.lstat("/etc/fstab").is_none() {
                continue;
            }
            let mut notes = Vec::new();
            mount_from_fstab(&mut g, i, &r.filesystems, opened, partuuids, &mut notes);
            if has_marker(&g) {
                r.root = Some(i);
                if !view.is_empty() {
                    r.notes
                        .push(format!("root is {view} of partition filesystem {i}"));
                }
                r.notes.extend(notes);
                return Some(g);
            }
        }
    }
    r.root_undetermined = log.undetermined;
    None
}

/// Most alternate roots (btrfs subvolumes) tried per filesystem.
const MAX_ALTERNATE_ROOTS: usize = 64;

/// Mounts /usr and /boot from the root's /etc/fstab when they live on
/// other filesystems we opened (for btrfs, the subvolume its options name).
fn mount_from_fstab(
    g: &mut root::Guest,
    root_index: usize,
    fss: &[Filesystem],
    opened: &[Option<Rc<dyn GuestFs>>],
    partuuids: &[(u32, String)],
    notes: &mut Vec<String>,
) {
    let Some(text) = g.read_text("/etc/fstab") else {
        return;
    };
    for e in root::parse_fstab(&text) {
        if e.point != "/usr" && e.point != "/boot" {
            continue;
        }
        let found = fss.iter().position(|f| spec_matches(&e.spec, f, partuuids));
        match found {
            Some(i) if i == root_index && e.options.is_empty() => {}
            Some(i) => match opened.get(i).and_then(Option::as_ref) {
                Some(fs) => match fs.with_mount_options(&e.options) {
                    Ok(view) => {
                        let view = view.unwrap_or_else(|| fs.clone());
                        if i != root_index || !Rc::ptr_eq(&view, fs) {
                            g.mount(&e.point, view, fss[i].offset);
                        }
                    }
                    Err(why) => notes.push(format!(
                        "fstab mounts {} from {} ({}): {why}",
                        e.point, e.spec, e.options
                    )),
                },
                None => notes.push(format!(
                    "fstab mounts {} from {} ({:?}), which imgcheck cannot read; files there are unknown",
                    e.point, e.spec, fss[i].kind
                )),
            },
            None => notes.push(format!(
                "fstab mounts {} from {}, which is not on this disk",
                e.point, e.spec
            )),
        }
    }
}

/// Whether an fstab `spec` names filesystem `f`.
fn spec_matches(spec: &str, f: &Filesystem, partuuids: &[(u32, String)]) -> bool {
    let eq = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
    let partuuid = |v: &str| {
        partuuids
            .iter()
            .any(|(n, u)| Some(*n) == f.partition && u.eq_ignore_ascii_case(v))
    };
    let unq = |v: &str| v.trim_matches('"').to_owned();
    if let Some(v) = spec.strip_prefix("UUID=") {
        eq(f.uuid.as_deref(), &unq(v))
    } else if let Some(v) = spec.strip_prefix("LABEL=") {
        eq(f.label.as_deref(), &unq(v))
    } else if let Some(v) = spec.strip_prefix("PARTUUID=") {
        partuuid(&unq(v))
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-uuid/") {
        eq(f.uuid.as_deref(), v)
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-label/") {
        eq(f.label.as_deref(), v)
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-partuuid/") {
        partuuid(v)
    } else if let Some(lv) = &f.lv {
        lv_spec_matches(spec, lv)
    } else if let Some(dev) = spec.strip_prefix("/dev/") {
        // /dev/vda2, /dev/sda2, /dev/xvda2, /dev/nvme0n1p2: the trailing
        // number is the partition number on the (only) disk.
        let digits: String = dev
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let n: Option<u32> = digits.parse().ok();
        n.is_some() && n == f.partition
    } else {
        false
    }
}

/// Whether an fstab `spec` names logical volume `lv` ("vg/name"):
/// `/dev/vg/name` or `/dev/mapper/vg-name` (dashes inside names doubled).
fn lv_spec_matches(spec: &str, lv: &str) -> bool {
    let Some((vg, name)) = lv.split_once('/') else {
        return false;
    };
    let mapper = format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        name.replace('-', "--")
    );
    spec == mapper || spec == format!("/dev/{vg}/{name}")
}
