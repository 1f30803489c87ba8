//! The rpm package database, read-only: which version of a package
//! (today: cloud-init) an RHEL-family, Fedora or openSUSE guest has
//! installed, for when the package's own files do not say.
//!
//! rpm 4.16+ keeps its database in SQLite (`rpmdb.sqlite`: Fedora 33+,
//! RHEL/Rocky/Alma/CentOS Stream 9), in `/var/lib/rpm` or
//! `/usr/lib/sysimage/rpm` (`/var/lib/rpm` is often a link there). Each
//! row of its `Packages` table is an rpm header blob ([`header`]). Older
//! rpm (CentOS/RHEL 7 and 8) keeps the same blobs in a Berkeley DB hash
//! database, `Packages` ([`bdb`]). openSUSE's ndb `Packages.db` is not
//! read: it is reported as present but unread.
//!
//! The file is read whole through the guest (the [`Guest`] seam reads
//! files from their start, there is no ranged read), capped at
//! [`DB_CAP`]; this only happens when cloud-init's Python metadata is
//! missing, so the common check pays nothing for it.

pub mod bdb;
pub mod header;
pub mod sqlite;
pub mod wal;

use crate::root::{Guest, Kind};

pub use header::Package;

/// Largest database read. A real rpmdb.sqlite (CBL-Mariner 2.0, 129
/// packages) is 3.4 MiB, about 28 KiB per package: a 500-package cloud
/// image's is near 14 MiB, and the cap leaves room for about 7000
/// packages.
pub const DB_CAP: u64 = 192 * 1024 * 1024;

/// Where rpm keeps its database, in the order looked at: SQLite first
/// (a system converted to it may keep its old Berkeley DB file).
pub const DB_PATHS: [(&str, Format); 4] = [
    ("/var/lib/rpm/rpmdb.sqlite", Format::Sqlite),
    ("/usr/lib/sysimage/rpm/rpmdb.sqlite", Format::Sqlite),
    ("/var/lib/rpm/Packages", Format::BerkeleyDb),
    ("/usr/lib/sysimage/rpm/Packages", Format::BerkeleyDb),
];
/// openSUSE's ndb databases, recognised but not read.
const UNREAD_PATHS: [&str; 2] = [
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/Packages.db",
];

/// Why an rpm database could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpmdbError {
    /// A structure breaks the format's rules.
    #[error("{file}: {structure} at offset {offset}: {reason}")]
    Corrupt {
        /// The database file in the guest.
        file: String,
        /// The structure ("SQLite table b-tree page (page 7)").
        structure: String,
        /// Byte offset in the file (for a header: in the blob).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Valid, but not something this reader reads.
    #[error("{file}: {what} is not supported")]
    Unsupported {
        /// The database file in the guest.
        file: String,
        /// The feature.
        what: String,
    },
    /// A size or count over one of the reader's limits.
    #[error("{file}: {what} is {value}, over the limit of {limit}")]
    Limit {
        /// The database file in the guest.
        file: String,
        /// What was counted.
        what: &'static str,
        /// The value read.
        value: u64,
        /// The limit.
        limit: u64,
    },
}

/// The format of an rpm database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `rpmdb.sqlite` (rpm 4.16+).
    Sqlite,
    /// Berkeley DB hash `Packages` (rpm up to 4.15).
    BerkeleyDb,
}

/// The installed packages named in `wanted` found in the rpm database
/// `db` (the bytes of `file`). A name installed twice (a transaction
/// interrupted between install and erase) gives the row read last.
pub fn packages(
    file: &str,
    db: &[u8],
    format: Format,
    wanted: &[&str],
) -> Result<Vec<Package>, RpmdbError> {
    let mut found: Vec<Package> = Vec::new();
    each(
        file,
        db,
        format,
        &mut |name| wanted.contains(&name),
        &mut |p| {
            found.retain(|f| f.name != p.name);
            found.push(p);
        },
    )?;
    Ok(found)
}

/// [`packages`] of an `rpmdb.sqlite`.
pub fn sqlite_packages(file: &str, db: &[u8], wanted: &[&str]) -> Result<Vec<Package>, RpmdbError> {
    packages(file, db, Format::Sqlite, wanted)
}

/// Every package of the rpm database `db`, in the database's order.
pub fn all(file: &str, db: &[u8], format: Format) -> Result<Vec<Package>, RpmdbError> {
    let mut all = Vec::new();
    each(file, db, format, &mut |_| true, &mut |p| all.push(p))?;
    Ok(all)
}

/// [`all`] of an `rpmdb.sqlite`.
pub fn sqlite_all(file: &str, db: &[u8]) -> Result<Vec<Package>, RpmdbError> {
    all(file, db, Format::Sqlite)
}

/// Calls `found` with the package of every header whose NAME `keep`
/// accepts.
fn each(
    file: &str,
    db: &[u8],
    format: Format,
    keep: &mut dyn FnMut(&str) -> bool,
    found: &mut dyn FnMut(Package),
) -> Result<(), RpmdbError> {
    let mut one = |row: i64, blob: &[u8]| -> Result<(), RpmdbError> {
        let ctx = header::Ctx { file, row };
        if keep(&header::name(blob, &ctx)?) {
            found(header::package(blob, &ctx)?);
        }
        Ok(())
    };
    match format {
        Format::Sqlite => sqlite_each(file, db, &mut one),
        Format::BerkeleyDb => bdb::walk(file, db, &mut |key, value, le| {
            // Key 0 holds rpm's next header number, not a header.
            let row = match key {
                [a, b, c, d] if le => i64::from(u32::from_le_bytes([*a, *b, *c, *d])),
                [a, b, c, d] => i64::from(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => -1,
            };
            if row == 0 {
                return Ok(());
            }
            one(row, value)
        }),
    }
}

/// What [`sqlite_each`] calls for each row: `(hnum, header blob)`.
type HeaderFn<'f> = dyn FnMut(i64, &[u8]) -> Result<(), RpmdbError> + 'f;

/// Calls `one(hnum, header blob)` for every row of an rpmdb.sqlite.
fn sqlite_each(file: &str, db: &[u8], one: &mut HeaderFn<'_>) -> Result<(), RpmdbError> {
    let d = sqlite::Db::open(file, db)?;
    let Some(root) = d.table_root("Packages")? else {
        return Err(RpmdbError::Corrupt {
            file: file.to_owned(),
            structure: "SQLite schema".into(),
            offset: 0,
            reason: "no Packages table".into(),
        });
    };
    d.walk(root, &mut |row, rec| {
        let bad = |reason: String| RpmdbError::Corrupt {
            file: file.to_owned(),
            structure: format!("Packages row {row}"),
            offset: 0,
            reason,
        };
        let cols = sqlite::record(rec).map_err(bad)?;
        let Some(sqlite::Value::Blob(blob)) = cols.get(1) else {
            return Err(bad("second column is not a blob".into()));
        };
        one(row, blob)?;
        Ok(true)
    })
}

/// What the guest's rpm database says about `wanted`.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The database read (guest path), if one was.
    pub source: Option<String>,
    /// The packages of `wanted` it lists.
    pub packages: Vec<Package>,
    /// What could not be read or may be stale, in words.
    pub problems: Vec<String>,
}

/// Looks `wanted` up in the guest's rpm database: the SQLite one (with
/// its write-ahead log applied when the log holds committed frames), else
/// the Berkeley DB one.
pub fn lookup(g: &Guest, wanted: &[&str]) -> Lookup {
    let mut out = Lookup::default();
    let mut read = Vec::new();
    for (path, format) in DB_PATHS {
        // /var/lib/rpm is a link to /usr/lib/sysimage/rpm on Fedora.
        let Some(real) = g.resolve(path) else {
            continue;
        };
        if read.contains(&real) {
            continue;
        }
        read.push(real);
        // A read error is already among the guest's problems.
        let Ok(Some(mut db)) = g.read_file(path, DB_CAP) else {
            continue;
        };
        if format == Format::Sqlite
            && let Err(e) = wal::apply_from_guest(g, &format!("{path}-wal"), &mut db, DB_CAP)
        {
            out.problems.push(format!(
                "{e}: {path} read without its log, its versions may be stale"
            ));
        }
        if format == Format::BerkeleyDb && !bdb::is_bdb_hash(&db) {
            out.problems.push(format!(
                "rpm database {path} is not a Berkeley DB hash database: not read"
            ));
            continue;
        }
        match packages(path, &db, format, wanted) {
            Ok(p) => {
                out.source = Some(path.to_owned());
                out.packages = p;
                return out;
            }
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    for p in UNREAD_PATHS {
        let Some(real) = g.resolve(p) else { continue };
        if read.contains(&real) {
            continue;
        }
        read.push(real);
        if matches!(g.stat(p), Some(Kind::File(n)) if n > 0) {
            out.problems
                .push(format!("rpm database {p} (ndb) is not read by imgcheck"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::rc::Rc;

    use super::*;
    use crate::fs::{FsError, GuestFs};
    use crate::report::FsKind;

    /// Files, links and directories in memory.
    #[derive(Debug, Default)]
    struct MapFs {
        files: HashMap<String, Vec<u8>>,
        links: HashMap<String, String>,
    }

    impl MapFs {
        fn is_dir(&self, p: &str) -> bool {
            p == "/"
                || self
                    .files
                    .keys()
                    .chain(self.links.keys())
                    .any(|f| f.starts_with(&format!("{p}/")))
        }
    }

    impl GuestFs for MapFs {
        fn kind(&self) -> FsKind {
            FsKind::Ext4
        }
        fn lstat(&self, p: &str) -> Result<Option<Kind>, FsError> {
            Ok(if let Some(f) = self.files.get(p) {
                Some(Kind::File(f.len() as u64))
            } else if self.links.contains_key(p) {
                Some(Kind::Symlink)
            } else {
                self.is_dir(p).then_some(Kind::Dir)
            })
        }
        fn read_link(&self, p: &str) -> Result<Vec<u8>, FsError> {
            self.links
                .get(p)
                .map(|l| l.as_bytes().to_vec())
                .ok_or_else(|| FsError::WrongKind {
                    path: p.into(),
                    why: "not a symlink",
                })
        }
        fn read_dir(&self, _: &str, _: usize) -> Result<Vec<String>, FsError> {
            Ok(Vec::new())
        }
        fn read(&self, p: &str, max: u64) -> Result<Vec<u8>, FsError> {
            let f = self.files.get(p).cloned().unwrap_or_default();
            Ok(f[..f.len().min(usize::try_from(max).unwrap_or(usize::MAX))].to_vec())
        }
    }

    fn guest(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Guest {
        let fs = MapFs {
            files: files
                .iter()
                .map(|(p, d)| ((*p).to_owned(), d.to_vec()))
                .collect(),
            links: links
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                .collect(),
        };
        Guest::new(Rc::new(fs), 0, false)
    }

    #[test]
    fn damaged_and_unread_databases_are_said_not_guessed() {
        // Fedora's link: the damaged database is read (and reported) once.
        let g = guest(
            &[
                ("/usr/lib/sysimage/rpm/rpmdb.sqlite", b"SQLite format 3\0xx"),
                ("/usr/lib/sysimage/rpm/Packages.db", b"RpmP"),
            ],
            &[("/var/lib/rpm", "../../usr/lib/sysimage/rpm")],
        );
        let l = lookup(&g, &["cloud-init"]);
        assert_eq!(l.source, None);
        assert!(l.packages.is_empty());
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(
            l.problems[0].contains("/var/lib/rpm/rpmdb.sqlite: SQLite file header"),
            "{:?}",
            l.problems
        );
        assert!(l.problems[1].contains("Packages.db (ndb) is not read"));
        // Not a Berkeley DB file at all.
        let g = guest(&[("/var/lib/rpm/Packages", b"garbage")], &[]);
        let l = lookup(&g, &["cloud-init"]);
        assert!(l.problems[0].contains("not a Berkeley DB hash database"));
        // No database: nothing to say.
        assert!(
            lookup(&guest(&[], &[]), &["cloud-init"])
                .problems
                .is_empty()
        );
    }
}
