//! The rpm package database, read-only: which version of a package
//! (cloud-init, openssh-server) an RHEL-family, Fedora or openSUSE guest
//! has installed, for when the package's own files do not say.
//!
//! rpm 4.16+ keeps its database in SQLite (`rpmdb.sqlite`: Fedora 33+,
//! RHEL/Rocky/Alma/CentOS Stream 9), in `/var/lib/rpm` or
//! `/usr/lib/sysimage/rpm` (`/var/lib/rpm` is often a link there). Each
//! row of its `Packages` table is an rpm header blob ([`header`]). The
//! older Berkeley DB `Packages` (CentOS/RHEL 7 and 8) and openSUSE's ndb
//! `Packages.db` are not read: they are reported as present but unread.
//!
//! The file is read whole through the guest (the [`Guest`] seam reads
//! files from their start, there is no ranged read), capped at
//! [`DB_CAP`]; this only happens when cloud-init's Python metadata is
//! missing, so the common check pays nothing for it.

pub mod header;
pub mod sqlite;
pub mod wal;

use crate::root::{Guest, Kind};

pub use header::Package;

/// Largest rpmdb.sqlite read: a cloud image's is 5 to 40 MiB, a full
/// server install's under 150 MiB.
pub const DB_CAP: u64 = 192 * 1024 * 1024;

/// Where rpm keeps its SQLite database, most common first.
pub const SQLITE_PATHS: [&str; 2] = [
    "/var/lib/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
];
/// Databases of older rpm backends, recognised but not read.
const UNREAD_PATHS: [&str; 4] = [
    "/var/lib/rpm/Packages",
    "/usr/lib/sysimage/rpm/Packages",
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

/// The installed packages named in `wanted` found in the SQLite rpm
/// database `db` (the bytes of `file`). A name installed twice (a
/// transaction interrupted between install and erase) gives the row
/// written last, as rpm lists rows by hnum.
pub fn sqlite_packages(file: &str, db: &[u8], wanted: &[&str]) -> Result<Vec<Package>, RpmdbError> {
    let mut found: Vec<Package> = Vec::new();
    sqlite_each(file, db, &mut |name| wanted.contains(&name), &mut |p| {
        found.retain(|f| f.name != p.name);
        found.push(p);
    })?;
    Ok(found)
}

/// Every package row of the SQLite rpm database `db`, in hnum order.
pub fn sqlite_all(file: &str, db: &[u8]) -> Result<Vec<Package>, RpmdbError> {
    let mut all = Vec::new();
    sqlite_each(file, db, &mut |_| true, &mut |p| all.push(p))?;
    Ok(all)
}

/// Calls `found` with the package of every row whose NAME `keep` accepts.
fn sqlite_each(
    file: &str,
    db: &[u8],
    keep: &mut dyn FnMut(&str) -> bool,
    found: &mut dyn FnMut(Package),
) -> Result<(), RpmdbError> {
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
        let ctx = header::Ctx { file, row };
        if keep(&header::name(blob, &ctx)?) {
            found(header::package(blob, &ctx)?);
        }
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

/// Looks `wanted` up in the guest's rpm database: the SQLite one, with
/// its write-ahead log applied when the log holds committed frames.
pub fn lookup(g: &Guest, wanted: &[&str]) -> Lookup {
    let mut out = Lookup::default();
    let mut read = Vec::new();
    for path in SQLITE_PATHS {
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
        if let Err(e) = wal::apply_from_guest(g, &format!("{path}-wal"), &mut db, DB_CAP) {
            out.problems.push(format!(
                "{e}: {path} read without its log, its versions may be stale"
            ));
        }
        match sqlite_packages(path, &db, wanted) {
            Ok(p) => {
                out.source = Some(path.to_owned());
                out.packages = p;
                return out;
            }
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    if out.source.is_none() {
        for p in UNREAD_PATHS {
            if matches!(g.stat(p), Some(Kind::File(n)) if n > 0) {
                out.problems.push(format!(
                    "rpm database {p} (Berkeley DB or ndb) is not read by imgcheck"
                ));
            }
        }
    }
    out
}
