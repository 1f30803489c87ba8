//! The guest's file tree: the root filesystem plus what its /etc/fstab
//! mounts (/usr, /boot), with path and symlink resolution done here, inside
//! the guest only.
//!
//! Symlinks are resolved component by component by [`Guest::resolve`]: an
//! absolute target restarts from the guest root, a relative one from the
//! link's directory, `..` at the root stays at the root, and at most
//! [`MAX_SYMLINK_HOPS`] links are followed. Paths are plain strings
//! throughout; nothing here ever names a host path. ext4-view only ever sees
//! paths whose directories are already resolved, so its own symlink
//! handling is never relied on for anything but the final `lstat`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub use crate::fs::Kind;
use crate::fs::{FsError, GuestFs};

/// Most symlinks followed while resolving one path (Linux's limit).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// Longest path (after splicing in link targets) we resolve.
pub const MAX_PATH_LEN: usize = 4096;
/// Most entries read from one directory.
pub const MAX_DIR_ENTRIES: usize = 10_000;
/// Size cap for configuration files read whole.
pub const CONFIG_CAP: u64 = 1024 * 1024;

/// One file read during inspection (recorded only when tracing, for the
/// differential test against debugfs).
#[derive(Debug, Clone)]
pub struct FileRead {
    /// Path as asked for, in the guest.
    pub guest_path: String,
    /// Byte offset on the disk of the filesystem that holds it.
    pub fs_offset: u64,
    /// Path inside that filesystem, with every symlink resolved.
    pub fs_path: String,
    /// The bytes returned.
    pub data: Vec<u8>,
}

/// A filesystem grafted into the guest tree.
pub(crate) struct Mount {
    /// Mount point ("/" or "/usr"), no trailing slash except for "/".
    pub point: String,
    /// The filesystem.
    pub fs: Rc<dyn GuestFs>,
    /// Its byte offset on the disk.
    pub offset: u64,
}

/// The guest tree.
pub struct Guest {
    pub(crate) mounts: Vec<Mount>,
    trace: Option<RefCell<Vec<FileRead>>>,
    /// Files that exist but could not be read (too large, corrupt, link
    /// loops), for the report's notes.
    problems: RefCell<Vec<String>>,
    /// `lstat` answers by resolved path. Resolution asks about every prefix
    /// of every path, and each answer costs the filesystem reader a walk
    /// from the root with a linear scan (and checksum) of every directory
    /// block on the way: without this, the same /etc blocks are scanned
    /// hundreds of times and that is most of a check's CPU time. Cleared
    /// on `mount` and when it holds [`LSTAT_CACHE_MAX`] entries.
    lstat_cache: RefCell<HashMap<String, Option<Kind>>>,
}

/// Bound of [`Guest::lstat_cache`] (a few hundred KiB at most).
const LSTAT_CACHE_MAX: usize = 4096;

/// Splits an absolute or relative path into its non-empty components.
fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty() && *c != ".")
}

fn join(parts: &[String]) -> String {
    if parts.is_empty() {
        "/".to_owned()
    } else {
        let mut s = String::new();
        for p in parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }
}

impl Guest {
    /// A tree with `root` mounted at "/".
    pub(crate) fn new(root: Rc<dyn GuestFs>, offset: u64, trace: bool) -> Self {
        Self {
            mounts: vec![Mount {
                point: "/".into(),
                fs: root,
                offset,
            }],
            trace: trace.then(|| RefCell::new(Vec::new())),
            problems: RefCell::new(Vec::new()),
            lstat_cache: RefCell::new(HashMap::new()),
        }
    }

    /// Grafts `fs` at `point` (an absolute, normalised path).
    pub(crate) fn mount(&mut self, point: &str, fs: Rc<dyn GuestFs>, offset: u64) {
        self.lstat_cache.get_mut().clear();
        self.mounts.push(Mount {
            point: point.to_owned(),
            fs,
            offset,
        });
    }

    /// The recorded reads (empty unless tracing).
    pub fn take_trace(&self) -> Vec<FileRead> {
        self.trace.as_ref().map(|t| t.take()).unwrap_or_default()
    }

    /// The mount holding a resolved absolute `path`, and the path inside it.
    fn locate(&self, path: &str) -> (&Mount, String) {
        let mut best = &self.mounts[0];
        for m in &self.mounts[1..] {
            let under = path == m.point
                || path
                    .strip_prefix(m.point.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            if under && m.point.len() > best.point.len() {
                best = m;
            }
        }
        let rest = if best.point == "/" {
            path.to_owned()
        } else {
            let r = &path[best.point.len()..];
            if r.is_empty() {
                "/".to_owned()
            } else {
                r.to_owned()
            }
        };
        (best, rest)
    }

    /// Resolves `path` inside the guest (see [`resolve_in`]).
    pub fn resolve_opt(&self, path: &str, follow_last: bool) -> Result<Option<String>, FsError> {
        resolve_in(self, path, follow_last)
    }

    /// [`Self::resolve_opt`] following every link; errors count as absent.
    pub fn resolve(&self, path: &str) -> Option<String> {
        self.resolve_opt(path, true).ok().flatten()
    }

    /// What `path` names after following all links.
    pub fn stat(&self, path: &str) -> Option<Kind> {
        let p = self.resolve(path)?;
        self.lstat_resolved(&p).ok().flatten()
    }

    /// What `path` names, not following a final link.
    pub fn lstat(&self, path: &str) -> Option<Kind> {
        let p = self.resolve_opt(path, false).ok().flatten()?;
        self.lstat_resolved(&p).ok().flatten()
    }

    /// The target of the symlink `path` (its directories resolved first).
    pub fn read_link(&self, path: &str) -> Option<String> {
        let p = self.resolve_opt(path, false).ok().flatten()?;
        self.read_link_resolved(&p).ok()
    }

    /// True if `path` exists after following links.
    pub fn exists(&self, path: &str) -> bool {
        self.stat(path).is_some()
    }

    /// Reads the regular file `path` whole if it is at most `cap` bytes.
    /// `Ok(None)` when it does not exist; `Err` when it is too large,
    /// not a regular file, or unreadable.
    pub fn read_file(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, FsError> {
        let r = self.read_file_inner(path, cap);
        if let Err(e) = &r {
            let e = e.to_string();
            let mut p = self.problems.borrow_mut();
            if p.len() < 100 && !p.contains(&e) {
                p.push(e);
            }
        }
        r
    }

    /// Records a problem reading a guest file's contents (a database the
    /// facts could not parse), reported like an unreadable file.
    pub(crate) fn note_problem(&self, problem: String) {
        let mut p = self.problems.borrow_mut();
        if p.len() < 100 && !p.contains(&problem) {
            p.push(problem);
        }
    }

    /// Unreadable-file problems met so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.borrow().clone()
    }

    fn read_file_inner(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, FsError> {
        let Some(real) = self.resolve_opt(path, true)? else {
            return Ok(None);
        };
        match self.lstat_resolved(&real)? {
            None => Ok(None),
            Some(Kind::File(n)) if n > cap => Err(FsError::TooLarge {
                path: path.to_owned(),
                size: n,
                cap,
            }),
            Some(Kind::File(_)) => {
                let (m, p) = self.locate(&real);
                let data = m.fs.read(&p, cap).map_err(|e| e.at(path))?;
                if let Some(t) = &self.trace {
                    let (fs_offset, fs_path) = m.fs.on_disk(&p, m.offset);
                    t.borrow_mut().push(FileRead {
                        guest_path: path.to_owned(),
                        fs_offset,
                        fs_path,
                        data: data.clone(),
                    });
                }
                Ok(Some(data))
            }
            Some(_) => Err(FsError::WrongKind {
                path: path.to_owned(),
                why: "not a regular file",
            }),
        }
    }

    /// The first `n` bytes (or fewer, for a shorter file) of the regular
    /// file `path`, without reading the rest (ELF headers of large binaries).
    pub fn read_head(&self, path: &str, n: usize) -> Result<Option<Vec<u8>>, FsError> {
        let Some(real) = self.resolve_opt(path, true)? else {
            return Ok(None);
        };
        let Some(Kind::File(_)) = self.lstat_resolved(&real)? else {
            return Ok(None);
        };
        let (m, p) = self.locate(&real);
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let buf = m.fs.read(&p, n).map_err(|e| e.at(path))?;
        if let Some(t) = &self.trace {
            let (fs_offset, fs_path) = m.fs.on_disk(&p, m.offset);
            t.borrow_mut().push(FileRead {
                guest_path: path.to_owned(),
                fs_offset,
                fs_path,
                data: buf.clone(),
            });
        }
        Ok(Some(buf))
    }

    /// [`Self::read_file`] as text (lossy UTF-8), errors as absent, with the
    /// config-file cap.
    pub fn read_text(&self, path: &str) -> Option<String> {
        self.read_file(path, CONFIG_CAP)
            .ok()
            .flatten()
            .map(|d| String::from_utf8_lossy(&d).into_owned())
    }

    /// Names in directory `path` (following links), sorted, without "." and
    /// "..", at most [`MAX_DIR_ENTRIES`]. Empty when absent or unreadable.
    pub fn list_dir(&self, path: &str) -> Vec<String> {
        let Some(real) = self.resolve(path) else {
            return Vec::new();
        };
        let (m, p) = self.locate(&real);
        let Ok(mut out) = m.fs.read_dir(&p, MAX_DIR_ENTRIES) else {
            return Vec::new();
        };
        out.sort();
        out
    }
}

impl Lookup for Guest {
    /// What `path` names without following a final symlink; the directories
    /// leading to it must already be resolved. `Ok(None)` when absent.
    fn lstat_resolved(&self, path: &str) -> Result<Option<Kind>, FsError> {
        if let Some(k) = self.lstat_cache.borrow().get(path) {
            return Ok(*k);
        }
        let (m, p) = self.locate(path);
        // Only answers are cached: an error is rare and reported once.
        let k = m.fs.lstat(&p).map_err(|e| e.at(path))?;
        let mut cache = self.lstat_cache.borrow_mut();
        if cache.len() >= LSTAT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(path.to_owned(), k);
        Ok(k)
    }

    fn read_link_resolved(&self, path: &str) -> Result<String, FsError> {
        let (m, p) = self.locate(path);
        let t = m.fs.read_link(&p).map_err(|e| e.at(path))?;
        String::from_utf8(t).map_err(|_| FsError::resolve(path, "symlink target is not UTF-8"))
    }
}

/// The two primitive lookups path resolution needs, on paths whose
/// directories are already resolved. [`Guest`] implements it over ext4-view;
/// tests implement it over a map.
pub trait Lookup {
    /// What `path` names, not following a final symlink; `Ok(None)` if absent.
    fn lstat_resolved(&self, path: &str) -> Result<Option<Kind>, FsError>;
    /// The target of the symlink `path`.
    fn read_link_resolved(&self, path: &str) -> Result<String, FsError>;
}

/// Resolves `path` inside the guest. With `follow_last`, a final symlink
/// is followed too. `Ok(None)` when some component does not exist (a
/// dangling link included); `Err` for loops, over-long paths, and
/// unreadable metadata.
pub fn resolve_in<L: Lookup + ?Sized>(
    l: &L,
    path: &str,
    follow_last: bool,
) -> Result<Option<String>, FsError> {
    if path.len() > MAX_PATH_LEN {
        return Err(FsError::resolve(
            path.get(..64).unwrap_or("?"),
            format!("path too long ({} bytes)", path.len()),
        ));
    }
    // Components still to walk, front first.
    let mut pending: std::collections::VecDeque<String> =
        components(path).map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0usize;
    let mut budget = MAX_PATH_LEN;
    while let Some(c) = pending.pop_front() {
        budget = budget
            .checked_sub(1)
            .ok_or_else(|| FsError::resolve(path, "path resolution takes too many steps"))?;
        if c == ".." {
            done.pop();
            continue;
        }
        done.push(c);
        let cur = join(&done);
        let last = pending.is_empty();
        match l.lstat_resolved(&cur)? {
            None => return Ok(None),
            Some(Kind::Symlink) if !last || follow_last => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(FsError::resolve(
                        path,
                        format!("more than {MAX_SYMLINK_HOPS} symlinks (loop?)"),
                    ));
                }
                let target = l.read_link_resolved(&cur)?;
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                let mut total: usize = pending.iter().map(|p| p.len() + 1).sum();
                total += target.len();
                if total > MAX_PATH_LEN {
                    return Err(FsError::resolve(
                        path,
                        "path too long after following links",
                    ));
                }
                for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(t.to_owned());
                }
            }
            Some(Kind::Dir | Kind::Symlink) => {}
            Some(_) if !last => return Ok(None),
            Some(_) => {}
        }
    }
    Ok(Some(join(&done)))
}

/// One /etc/fstab line we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// First field (`UUID=...`, `LABEL=...`, `/dev/vda2`, ...).
    pub spec: String,
    /// Mount point.
    pub point: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount options (`subvol=root,compress=zstd:1`), empty when the
    /// field is missing or `defaults`.
    pub options: String,
}

/// Parses fstab text (comments, blank lines, octal `\040` escapes left as
/// they are; at most 1000 lines).
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .take(1000)
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split_whitespace();
            let spec = f.next()?;
            let point = f.next()?;
            let fstype = f.next().unwrap_or("auto");
            let options = match f.next() {
                None | Some("defaults") => "",
                Some(o) => o,
            };
            Some(FstabEntry {
                spec: spec.to_owned(),
                point: match point.trim_end_matches('/') {
                    "" => "/".to_owned(),
                    p => p.to_owned(),
                },
                fstype: fstype.to_owned(),
                options: options.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filesystem of directories /a, /a/b, /a/b/c that counts lstat calls.
    #[derive(Debug, Default)]
    struct CountingFs {
        lstats: std::cell::Cell<usize>,
    }

    impl GuestFs for CountingFs {
        fn kind(&self) -> crate::report::FsKind {
            crate::report::FsKind::Ext4
        }
        fn lstat(&self, path: &str) -> Result<Option<Kind>, crate::fs::FsError> {
            self.lstats.set(self.lstats.get() + 1);
            Ok(["/", "/a", "/a/b", "/a/b/c"]
                .contains(&path)
                .then_some(Kind::Dir))
        }
        fn read_link(&self, path: &str) -> Result<Vec<u8>, crate::fs::FsError> {
            Err(crate::fs::FsError::WrongKind {
                path: path.into(),
                why: "not a link",
            })
        }
        fn read_dir(&self, _: &str, _: usize) -> Result<Vec<String>, crate::fs::FsError> {
            Ok(Vec::new())
        }
        fn read(&self, _: &str, _: u64) -> Result<Vec<u8>, crate::fs::FsError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn prefixes_are_looked_up_once() {
        let fs = Rc::new(CountingFs::default());
        let g = Guest::new(fs.clone(), 0, false);
        for name in ["x", "y", "z", "x"] {
            assert_eq!(g.lstat(&format!("/a/b/c/{name}")), None);
        }
        assert_eq!(g.stat("/a/b/c"), Some(Kind::Dir));
        // /a, /a/b, /a/b/c once each, then x, y, z: 6 lookups, not 4 * 4 + 3.
        assert_eq!(fs.lstats.get(), 6);
    }

    #[test]
    fn fstab() {
        let t = "# c\nUUID=ab-cd / ext4 defaults 0 1\n\nLABEL=usr\t/usr/ ext4 ro 0 2\n/dev/vda1 /boot ext2\nbroken\n";
        let e = parse_fstab(t);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].point, "/usr");
        assert_eq!(e[0].point, "/");
        assert_eq!(e[2].fstype, "ext2");
    }

    /// An in-memory tree: path -> Some(target) for links, None for files;
    /// directories are implied.
    struct MapTree(std::collections::HashMap<&'static str, Option<&'static str>>);

    impl Lookup for MapTree {
        fn lstat_resolved(&self, path: &str) -> Result<Option<Kind>, FsError> {
            if path == "/" {
                return Ok(Some(Kind::Dir));
            }
            if let Some(v) = self.0.get(path) {
                return Ok(Some(if v.is_some() {
                    Kind::Symlink
                } else {
                    Kind::File(1)
                }));
            }
            let dir = format!("{path}/");
            Ok(self
                .0
                .keys()
                .any(|k| k.starts_with(&dir))
                .then_some(Kind::Dir))
        }
        fn read_link_resolved(&self, path: &str) -> Result<String, FsError> {
            self.0
                .get(path)
                .copied()
                .flatten()
                .map(str::to_owned)
                .ok_or_else(|| FsError::WrongKind {
                    path: path.to_owned(),
                    why: "not a symlink",
                })
        }
    }

    fn tree() -> MapTree {
        MapTree(
            [
                ("/usr/bin/bash", None),
                ("/bin", Some("usr/bin")),
                ("/usr/bin/sh", Some("bash")),
                ("/sbin/init", Some("/lib/systemd/systemd")),
                ("/lib", Some("usr/lib")),
                ("/usr/lib/systemd/systemd", None),
                ("/etc/os-release", Some("../usr/lib/os-release")),
                ("/usr/lib/os-release", None),
                ("/loop/a", Some("b")),
                ("/loop/b", Some("a")),
                ("/esc", Some("../../../../etc/passwd")),
                ("/etc/passwd", None),
                ("/dangling", Some("/nowhere")),
            ]
            .into_iter()
            .collect(),
        )
    }

    #[test]
    fn symlinks_absolute_relative_and_loops() {
        let t = tree();
        let r = |p: &str| resolve_in(&t, p, true);
        assert_eq!(r("/bin/sh").unwrap().as_deref(), Some("/usr/bin/bash"));
        assert_eq!(
            r("/sbin/init").unwrap().as_deref(),
            Some("/usr/lib/systemd/systemd")
        );
        assert_eq!(
            r("/etc/os-release").unwrap().as_deref(),
            Some("/usr/lib/os-release")
        );
        // `..` above the root stays inside the guest.
        assert_eq!(r("/esc").unwrap().as_deref(), Some("/etc/passwd"));
        assert_eq!(r("/dangling").unwrap(), None);
        assert_eq!(r("/nothing/here").unwrap(), None);
        assert!(r("/loop/a").unwrap_err().to_string().contains("symlinks"));
        // Not following the last link.
        assert_eq!(
            resolve_in(&t, "/bin/sh", false).unwrap().as_deref(),
            Some("/usr/bin/sh")
        );
        // A file used as a directory.
        assert_eq!(r("/usr/bin/bash/x").unwrap(), None);
        assert!(r(&"a/".repeat(5000)).is_err());
    }

    #[test]
    fn join_and_components() {
        assert_eq!(join(&[]), "/");
        assert_eq!(join(&["a".into(), "b".into()]), "/a/b");
        assert_eq!(components("//a/./b/").collect::<Vec<_>>(), ["a", "b"]);
    }
}
