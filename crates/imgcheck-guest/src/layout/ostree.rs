//! ostree systems: Fedora CoreOS, RHEL CoreOS (and Silverblue/IoT alike).
//!
//! Facts, from ostreedev/ostree's docs ("Deployments", "Atomic upgrades",
//! the BLS entries `ostree-sysroot-deploy.c` writes), coreos-assembler's
//! `create_disk.sh` and the Boot Loader Specification:
//! * FCOS on x86_64: GPT with BIOS-BOOT, EFI-SYSTEM (vfat), `boot` (ext4,
//!   label boot) and `root` (XFS, label root). The physical root holds
//!   `/ostree/deploy/<stateroot>/deploy/<checksum>.<serial>/`, a complete
//!   tree (usr/, etc/, empty var/ and boot/ mount points), and the
//!   stateroot's shared `/ostree/deploy/<stateroot>/var`.
//! * The boot partition's `/loader/entries/ostree-*.conf` (`/loader` is a
//!   symlink to `loader.0` or `loader.1`, swapped atomically) each carry
//!   `options … ostree=/ostree/boot.N/<stateroot>/<bootcsum>/<n>`; on the
//!   physical root `/ostree/boot.N` links to `boot.N.M`, whose
//!   `<stateroot>/<bootcsum>/<n>` links to the deployment directory.
//! * ostree gives the default deployment the highest `version`, and boot
//!   loaders list BLS entries by version, highest first (ties by file
//!   name, descending): the first entry is what boots.
//!
//! The guest tree is that deployment at `/`, the stateroot's var at /var,
//! the boot partition at /boot and the physical root at /sysroot. Without
//! a usable entry, a disk holding exactly one deployment uses it; several
//! without an entry are reported, not guessed.

use std::cmp::Ordering;
use std::rc::Rc;

use super::{Disk, Found, Log, SubtreeFs, cmdline_value};
use crate::fs::{GuestFs, Kind};

use crate::root::Guest;

/// Most filesystems looked at for `/ostree/deploy`.
const MAX_FILESYSTEMS: usize = 32;
/// Most boot entries read.
const MAX_ENTRIES: usize = 32;
/// Most stateroots and deployments per stateroot listed.
const MAX_STATEROOTS: usize = 8;
const MAX_DEPLOYMENTS: usize = 32;

/// One BLS entry with an `ostree=` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name under loader/entries.
    pub file: String,
    /// The `version` key.
    pub version: Option<String>,
    /// The `ostree=` argument of `options`.
    pub ostree: Option<String>,
}

/// Parses a BLS entry (`key value` lines; several `options` lines join).
pub fn parse_entry(file: &str, text: &str) -> Entry {
    let mut version = None;
    let mut options = String::new();
    for l in text.lines().take(1000) {
        let l = l.trim();
        let (k, v) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        match k {
            "version" => version = Some(v.trim().to_owned()),
            "options" => {
                options.push(' ');
                options.push_str(v);
            }
            _ => {}
        }
    }
    Entry {
        file: file.to_owned(),
        version,
        ostree: cmdline_value(&options, "ostree").map(str::to_owned),
    }
}

/// Compares versions the way BLS loaders do for ostree's plain numbers:
/// runs of digits numerically, other text bytewise.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    /// Splits into runs of ASCII digits and of everything else.
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(first) = rest.chars().next() {
            let digit = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            out.push((digit, run));
            rest = tail;
        }
        out
    }
    if a.is_empty() || b.is_empty() {
        return a.len().cmp(&b.len());
    }
    for (x, y) in runs(a).into_iter().zip(runs(b)) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    runs(a).len().cmp(&runs(b).len())
}

/// Sorts entries into boot order: highest version first, then file name
/// descending.
pub fn boot_order(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        let v = match (&a.version, &b.version) {
            (Some(x), Some(y)) => compare_versions(y, x),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        v.then_with(|| b.file.cmp(&a.file))
    });
}

/// The boot entries under `dir` of `g`, in boot order.
fn entries(g: &Guest, dir: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = g
        .list_dir(dir)
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .take(MAX_ENTRIES)
        .filter_map(|n| {
            let text = g.read_text(&format!("{dir}/{n}"))?;
            Some(parse_entry(&n, &text))
        })
        .collect();
    boot_order(&mut out);
    out
}

/// `/ostree/deploy/<stateroot>/deploy/<name>` → the stateroot.
fn stateroot_of(path: &str) -> Option<&str> {
    let mut c = path.split('/').filter(|c| !c.is_empty());
    let (Some("ostree"), Some("deploy"), Some(s), Some("deploy"), Some(_), None) =
        (c.next(), c.next(), c.next(), c.next(), c.next(), c.next())
    else {
        return None;
    };
    Some(s)
}

/// Every deployment directory on the physical root (bounded).
fn deployments(phys: &Guest) -> Vec<String> {
    let mut out = Vec::new();
    for s in phys
        .list_dir("/ostree/deploy")
        .into_iter()
        .take(MAX_STATEROOTS)
    {
        let dir = format!("/ostree/deploy/{s}/deploy");
        for n in phys.list_dir(&dir).into_iter().take(MAX_DEPLOYMENTS) {
            let p = format!("{dir}/{n}");
            if !n.ends_with(".origin") && phys.lstat(&p) == Some(Kind::Dir) {
                out.push(p);
            }
        }
    }
    out
}

/// The physical root (index, reader, tree) and where its boot entries live
/// (a separate boot filesystem's index, or `None` for /boot on the root).
type Roots = (
    (usize, Rc<dyn GuestFs>, Guest),
    Option<(usize, Rc<dyn GuestFs>)>,
);

fn physical_root(d: &Disk<'_>) -> Option<Roots> {
    let mut phys = None;
    let mut boot = None;
    for (i, f) in d.opened.iter().enumerate().take(MAX_FILESYSTEMS) {
        let Some(f) = f else { continue };
        let g = Guest::new(f.clone(), d.offset(i), false);
        if phys.is_none() && g.lstat("/ostree/deploy") == Some(Kind::Dir) {
            phys = Some((i, f.clone(), g));
        } else if boot.is_none() && g.stat("/loader/entries") == Some(Kind::Dir) {
            boot = Some((i, f.clone()));
        }
    }
    phys.map(|p| (p, boot))
}

/// The ostree guest tree, when a filesystem holds `/ostree/deploy`.
pub(crate) fn find(d: &Disk<'_>, log: &mut Log) -> Option<Found> {
    let ((phys_i, phys_fs, phys), boot) = physical_root(d)?;
    let entry_list = match &boot {
        Some((i, fs)) => entries(
            &Guest::new(fs.clone(), d.offset(*i), false),
            "/loader/entries",
        ),
        None => entries(&phys, "/boot/loader/entries"),
    };
    let mut chosen = None;
    for e in &entry_list {
        let Some(arg) = &e.ostree else { continue };
        match phys.resolve(arg) {
            Some(p) if stateroot_of(&p).is_some() && phys.lstat(&p) == Some(Kind::Dir) => {
                chosen = Some((p, format!("boot entry {} (ostree={arg})", e.file)));
                break;
            }
            _ => log.notes.push(format!(
                "ostree: boot entry {} names ostree={arg}, which is not a deployment on this disk",
                e.file
            )),
        }
    }
    if chosen.is_none() {
        let all = deployments(&phys);
        match all.as_slice() {
            [one] => {
                chosen = Some((
                    one.clone(),
                    "the only deployment (no boot entry names one)".into(),
                ))
            }
            [] => {
                log.notes
                    .push("ostree: /ostree/deploy holds no deployment".into());
                return None;
            }
            many => {
                let what = format!(
                    "ostree: {} deployments and no boot entry naming one; cannot tell which boots",
                    many.len()
                );
                log.undetermined = Some(what.clone());
                log.notes.push(what);
                return None;
            }
        }
    }
    let (deploy, why) = chosen?;
    let stateroot = stateroot_of(&deploy)?.to_owned();
    let mut g = Guest::new(
        SubtreeFs::view(phys_fs.clone(), &deploy),
        d.offset(phys_i),
        d.trace,
    );
    let var = format!("/ostree/deploy/{stateroot}/var");
    if phys.lstat(&var) == Some(Kind::Dir) {
        g.mount(
            "/var",
            SubtreeFs::view(phys_fs.clone(), &var),
            d.offset(phys_i),
        );
    }
    g.mount("/sysroot", phys_fs.clone(), d.offset(phys_i));
    if let Some((i, fs)) = boot {
        g.mount("/boot", fs, d.offset(i));
    } else {
        // /boot on the physical root, as the deployment sees it.
        g.mount("/boot", SubtreeFs::view(phys_fs, "/boot"), d.offset(phys_i));
    }
    if g.stat("/usr/lib/os-release").is_none() && g.stat("/etc/os-release").is_none() {
        log.notes
            .push(format!("ostree: deployment {deploy} holds no os-release"));
        return None;
    }
    Some(Found {
        guest: g,
        root: phys_i,
        notes: vec![format!(
            "ostree: / is {deploy}, chosen by {why}; /var is {var}"
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(file: &str, version: Option<&str>) -> Entry {
        Entry {
            file: file.to_owned(),
            version: version.map(str::to_owned),
            ostree: None,
        }
    }

    #[test]
    fn entries_in_boot_order() {
        let mut v = vec![
            e("ostree-1-fedora-coreos.conf", Some("1")),
            e("other.conf", None),
            e("ostree-10-fedora-coreos.conf", Some("10")),
            e("ostree-2-fedora-coreos.conf", Some("2")),
            e("b.conf", Some("2")),
        ];
        boot_order(&mut v);
        let files: Vec<&str> = v.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "ostree-10-fedora-coreos.conf",
                "ostree-2-fedora-coreos.conf",
                "b.conf",
                "ostree-1-fedora-coreos.conf",
                "other.conf"
            ]
        );
        assert_eq!(compare_versions("6.8.11", "6.8.9"), Ordering::Greater);
        assert_eq!(compare_versions("007", "7"), Ordering::Equal);
        assert_eq!(compare_versions("", "1"), Ordering::Less);
    }

    #[test]
    fn entry_and_deployment_paths() {
        let t = "title Fedora CoreOS 40 (ostree:0)\nversion 2\noptions a=b ostree=/ostree/boot.1/fedora-coreos/ab/0\noptions root=UUID=x\nlinux /ostree/x/vmlinuz\n";
        let en = parse_entry("ostree-2.conf", t);
        assert_eq!(en.version.as_deref(), Some("2"));
        assert_eq!(
            en.ostree.as_deref(),
            Some("/ostree/boot.1/fedora-coreos/ab/0")
        );
        assert_eq!(
            stateroot_of("/ostree/deploy/fedora-coreos/deploy/abc.0"),
            Some("fedora-coreos")
        );
        assert_eq!(stateroot_of("/ostree/deploy/fedora-coreos/deploy"), None);
        assert_eq!(stateroot_of("/ostree/deploy/x/var/abc.0"), None);
        assert_eq!(stateroot_of("/ostree/deploy/x/deploy/a/b"), None);
    }
}
