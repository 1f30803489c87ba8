//! OS layouts where the root is not "a filesystem holding os-release, plus
//! what its /etc/fstab mounts": the guest tree is assembled the way the
//! distribution's own boot assembles it, then handed to the facts like any
//! other root.
//!
//! * [`flatcar`]: Flatcar Container Linux (and CoreOS Container Linux):
//!   /usr is a whole partition (USR-A or USR-B) mounted by the initramfs
//!   from the kernel command line, never from fstab; the ROOT partition
//!   is `/`.
//! * [`ostree`]: Fedora CoreOS, RHCOS and other ostree systems: `/` is a
//!   deployment directory deep inside the physical root filesystem, named
//!   by the `ostree=` argument of the default boot loader entry.
//!
//! Both only build views over the filesystems already opened through the
//! [`GuestFs`] seam ([`SubtreeFs`] presents a directory as a root), so they
//! work on whichever filesystem the distribution chose (ext2/ext4, XFS,
//! btrfs). Every count read from the image is capped; symlinks are
//! resolved by [`crate::root`] with its hop limit.

pub mod flatcar;
pub mod ostree;

use std::rc::Rc;

use crate::fs::{FsError, GuestFs, Kind};
use crate::report::{Filesystem, FsKind, Partition};
use crate::root::Guest;

/// What the layout finders look at.
pub(crate) struct Disk<'a> {
    /// Filesystems found (the report's list; `opened[i]` reads `fss[i]`).
    pub fss: &'a [Filesystem],
    /// The readers, `None` where a filesystem is not read.
    pub opened: &'a [Option<Rc<dyn GuestFs>>],
    /// Partition table entries.
    pub parts: &'a [Partition],
    /// (partition number, GPT attribute bits).
    pub attributes: &'a [(u32, u64)],
    /// (partition number, PARTUUID).
    pub partuuids: &'a [(u32, String)],
    /// Record every file read (differential tests).
    pub trace: bool,
}

impl Disk<'_> {
    /// The opened filesystem on partition `n`, with its index.
    pub(crate) fn on_partition(&self, n: u32) -> Option<(usize, Rc<dyn GuestFs>)> {
        let i = self
            .fss
            .iter()
            .position(|f| f.partition == Some(n) && f.lv.is_none())?;
        let fs = self.opened.get(i)?.clone()?;
        Some((i, fs))
    }

    /// The byte offset of filesystem `i` (for traces).
    pub(crate) fn offset(&self, i: usize) -> u64 {
        self.fss.get(i).map_or(0, |f| f.offset)
    }
}

/// A guest tree assembled by a layout.
pub(crate) struct Found {
    /// The tree.
    pub guest: Guest,
    /// Index of the filesystem reported as the root (the one `/` lives on).
    pub root: usize,
    /// How it was assembled, for the report's notes.
    pub notes: Vec<String>,
}

/// The guest tree of the first layout that recognises the disk. `notes`
/// collects why a recognised layout could not be assembled.
pub(crate) fn find(d: &Disk<'_>, log: &mut Log) -> Option<Found> {
    flatcar::find(d, log).or_else(|| ostree::find(d, log))
}

/// What the layouts say besides the root they found.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Notes for the report.
    pub notes: Vec<String>,
    /// Why the root could not be told, when a layout was recognised but
    /// names no single tree (see [`crate::GuestReport::root_undetermined`]).
    pub undetermined: Option<String>,
}

/// A directory of another filesystem presented as a whole tree: `/x` here
/// is `prefix/x` there. `prefix` must be a resolved path (no symlinks on
/// the way), which the layouts get from [`Guest::resolve`].
#[derive(Debug)]
pub struct SubtreeFs {
    inner: Rc<dyn GuestFs>,
    prefix: String,
}

impl SubtreeFs {
    /// `prefix` of `inner` as a tree ("/" gives `inner` itself back).
    pub fn view(inner: Rc<dyn GuestFs>, prefix: &str) -> Rc<dyn GuestFs> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return inner;
        }
        Rc::new(Self {
            inner,
            prefix: prefix.to_owned(),
        })
    }

    fn map(&self, path: &str) -> String {
        if path == "/" {
            self.prefix.clone()
        } else {
            format!("{}{path}", self.prefix)
        }
    }
}

impl GuestFs for SubtreeFs {
    fn kind(&self) -> FsKind {
        self.inner.kind()
    }
    fn lstat(&self, path: &str) -> Result<Option<Kind>, FsError> {
        self.inner.lstat(&self.map(path))
    }
    fn read_link(&self, path: &str) -> Result<Vec<u8>, FsError> {
        self.inner.read_link(&self.map(path))
    }
    fn read_dir(&self, path: &str, max: usize) -> Result<Vec<String>, FsError> {
        self.inner.read_dir(&self.map(path), max)
    }
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, FsError> {
        self.inner.read(&self.map(path), max)
    }
    fn on_disk(&self, path: &str, offset: u64) -> (u64, String) {
        self.inner.on_disk(&self.map(path), offset)
    }
}

/// One layer of an [`OverlayFs`]: a tree and the disk offset of the
/// filesystem it is on (for traces).
#[derive(Debug, Clone)]
pub struct Layer {
    /// The tree.
    pub fs: Rc<dyn GuestFs>,
    /// Byte offset of its filesystem on the disk.
    pub offset: u64,
}

/// A read-only overlayfs view (Flatcar's /etc): a name in `upper` hides
/// the same name in `lower`; a whiteout in `upper` (a character device,
/// the only special file overlayfs leaves there) hides it without
/// replacing it. Opaque directories (an xattr) are not seen, so a lower
/// directory's other entries show through one; Flatcar's builder leaves
/// the upper /etc empty, where this cannot arise.
#[derive(Debug)]
pub struct OverlayFs {
    upper: Layer,
    lower: Layer,
}

impl OverlayFs {
    /// `upper` over `lower`.
    pub fn stack(upper: Layer, lower: Layer) -> Rc<dyn GuestFs> {
        Rc::new(Self { upper, lower })
    }

    /// The layer that answers for `path`: upper when it has the name (a
    /// whiteout included), else lower.
    fn layer(&self, path: &str) -> Result<&Layer, FsError> {
        Ok(match self.upper.fs.lstat(path)? {
            Some(_) => &self.upper,
            None => &self.lower,
        })
    }
}

impl GuestFs for OverlayFs {
    fn kind(&self) -> FsKind {
        self.lower.fs.kind()
    }
    fn lstat(&self, path: &str) -> Result<Option<Kind>, FsError> {
        match self.upper.fs.lstat(path)? {
            Some(Kind::Special) => Ok(None),
            Some(k) => Ok(Some(k)),
            None => self.lower.fs.lstat(path),
        }
    }
    fn read_link(&self, path: &str) -> Result<Vec<u8>, FsError> {
        self.layer(path)?.fs.read_link(path)
    }
    fn read_dir(&self, path: &str, max: usize) -> Result<Vec<String>, FsError> {
        let upper_is_dir = self.upper.fs.lstat(path)? == Some(Kind::Dir);
        let lower_is_dir = self.lower.fs.lstat(path)? == Some(Kind::Dir);
        let mut out = Vec::new();
        let mut hidden = std::collections::BTreeSet::new();
        if upper_is_dir {
            for n in self.upper.fs.read_dir(path, max)? {
                let child = if path == "/" {
                    format!("/{n}")
                } else {
                    format!("{path}/{n}")
                };
                if self.upper.fs.lstat(&child)? != Some(Kind::Special) {
                    out.push(n.clone());
                }
                hidden.insert(n);
            }
        }
        if lower_is_dir && (upper_is_dir || self.upper.fs.lstat(path)?.is_none()) {
            for n in self.lower.fs.read_dir(path, max)? {
                if out.len() >= max {
                    break;
                }
                if !hidden.contains(&n) {
                    out.push(n);
                }
            }
        }
        out.truncate(max);
        Ok(out)
    }
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, FsError> {
        self.layer(path)?.fs.read(path, max)
    }
    fn on_disk(&self, path: &str, _: u64) -> (u64, String) {
        let l = self.layer(path).unwrap_or(&self.lower);
        l.fs.on_disk(path, l.offset)
    }
}

/// An empty tree holding only mount points: the `/` of a layout whose
/// root partition is missing or unreadable, so what the other partitions
/// hold (Flatcar's /usr) is still inspected.
#[derive(Debug)]
pub struct MountPointsFs {
    points: Vec<String>,
}

impl MountPointsFs {
    /// A tree with the directories `points` ("/usr") under an empty root.
    pub fn tree(points: &[&str]) -> Rc<dyn GuestFs> {
        Rc::new(Self {
            points: points.iter().map(|p| (*p).to_owned()).collect(),
        })
    }
}

impl GuestFs for MountPointsFs {
    fn kind(&self) -> FsKind {
        FsKind::Unknown
    }
    fn lstat(&self, path: &str) -> Result<Option<Kind>, FsError> {
        Ok((path == "/" || self.points.iter().any(|p| p == path)).then_some(Kind::Dir))
    }
    fn read_link(&self, path: &str) -> Result<Vec<u8>, FsError> {
        Err(FsError::WrongKind {
            path: path.to_owned(),
            why: "not a symlink",
        })
    }
    fn read_dir(&self, path: &str, max: usize) -> Result<Vec<String>, FsError> {
        if path != "/" {
            return Ok(Vec::new());
        }
        Ok(self
            .points
            .iter()
            .filter_map(|p| p.strip_prefix('/'))
            .take(max)
            .map(str::to_owned)
            .collect())
    }
    fn read(&self, path: &str, _: u64) -> Result<Vec<u8>, FsError> {
        Err(FsError::WrongKind {
            path: path.to_owned(),
            why: "not a regular file",
        })
    }
}

/// The value of `key=` on a kernel command line (last one wins, as in the
/// kernel and systemd), without surrounding quotes.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    let mut v = None;
    for arg in cmdline.split_whitespace().take(4096) {
        if let Some(rest) = arg.strip_prefix(key)
            && let Some(val) = rest.strip_prefix('=')
        {
            v = Some(val.trim_matches('"'));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline() {
        let c = "BOOT_IMAGE=/x ro mount.usr=/dev/mapper/usr verity.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 ostree=/ostree/boot.1/fedora-coreos/ab/0 usr=PARTLABEL=USR-A";
        assert_eq!(cmdline_value(c, "usr"), Some("PARTLABEL=USR-A"));
        assert_eq!(cmdline_value(c, "mount.usr"), Some("/dev/mapper/usr"));
        assert_eq!(
            cmdline_value(c, "verity.usr"),
            Some("PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132")
        );
        assert_eq!(
            cmdline_value(c, "ostree"),
            Some("/ostree/boot.1/fedora-coreos/ab/0")
        );
        assert_eq!(cmdline_value(c, "root"), None);
    }

    /// An in-memory tree: path -> kind; directories listed by prefix.
    #[derive(Debug)]
    struct MapFs(Vec<(&'static str, Kind)>);

    impl GuestFs for MapFs {
        fn kind(&self) -> FsKind {
            FsKind::Ext4
        }
        fn lstat(&self, path: &str) -> Result<Option<Kind>, FsError> {
            if path == "/" {
                return Ok(Some(Kind::Dir));
            }
            Ok(self.0.iter().find(|(p, _)| *p == path).map(|(_, k)| *k))
        }
        fn read_link(&self, _: &str) -> Result<Vec<u8>, FsError> {
            Ok(b"target".to_vec())
        }
        fn read_dir(&self, path: &str, max: usize) -> Result<Vec<String>, FsError> {
            let dir = if path == "/" {
                "/".to_owned()
            } else {
                format!("{path}/")
            };
            Ok(self
                .0
                .iter()
                .filter_map(|(p, _)| p.strip_prefix(dir.as_str()))
                .filter(|rest| !rest.contains('/'))
                .take(max)
                .map(str::to_owned)
                .collect())
        }
        fn read(&self, path: &str, _: u64) -> Result<Vec<u8>, FsError> {
            Ok(path.as_bytes().to_vec())
        }
        fn on_disk(&self, path: &str, offset: u64) -> (u64, String) {
            (offset, format!("map{path}"))
        }
    }

    #[test]
    fn overlay_upper_hides_lower_and_whiteouts_hide() {
        let upper = Rc::new(MapFs(vec![
            ("/hostname", Kind::File(5)),
            ("/gone", Kind::Special),
            ("/ssh", Kind::Dir),
            ("/ssh/extra", Kind::File(1)),
        ]));
        let lower = Rc::new(MapFs(vec![
            ("/hostname", Kind::File(9)),
            ("/gone", Kind::File(1)),
            ("/os-release", Kind::Symlink),
            ("/ssh", Kind::Dir),
            ("/ssh/sshd_config", Kind::File(3)),
        ]));
        let o = OverlayFs::stack(
            Layer {
                fs: upper,
                offset: 100,
            },
            Layer {
                fs: lower,
                offset: 200,
            },
        );
        assert_eq!(o.lstat("/hostname").unwrap(), Some(Kind::File(5)));
        assert_eq!(o.lstat("/gone").unwrap(), None);
        assert_eq!(o.lstat("/os-release").unwrap(), Some(Kind::Symlink));
        let mut root = o.read_dir("/", 100).unwrap();
        root.sort();
        assert_eq!(root, ["hostname", "os-release", "ssh"]);
        let mut ssh = o.read_dir("/ssh", 100).unwrap();
        ssh.sort();
        assert_eq!(ssh, ["extra", "sshd_config"]);
        assert_eq!(o.read_dir("/", 1).unwrap().len(), 1);
        // Traces name the layer that holds the file.
        assert_eq!(o.on_disk("/hostname", 0), (100, "map/hostname".into()));
        assert_eq!(
            o.on_disk("/ssh/sshd_config", 0),
            (200, "map/ssh/sshd_config".into())
        );
        // A subtree view adds its prefix.
        let v = SubtreeFs::view(o, "/ssh");
        assert_eq!(
            v.on_disk("/sshd_config", 0),
            (200, "map/ssh/sshd_config".into())
        );
    }

    #[test]
    fn mount_points_tree() {
        let t = MountPointsFs::tree(&["/usr"]);
        assert_eq!(t.lstat("/").unwrap(), Some(Kind::Dir));
        assert_eq!(t.lstat("/usr").unwrap(), Some(Kind::Dir));
        assert_eq!(t.lstat("/etc").unwrap(), None);
        assert_eq!(t.read_dir("/", 10).unwrap(), ["usr"]);
    }
}
