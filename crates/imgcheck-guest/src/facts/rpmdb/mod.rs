//! The rpm package database, read-only: which version of a package
//! (cloud-init, openssh-server) an RHEL-family, Fedora or openSUSE guest
//! has installed, for when the package's own files do not say.
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

/// Largest rpmdb.sqlite read: a cloud image's is 5 to 40 MiB, a full
/// server install's under 150 MiB.
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
        if matches!(g.stat(p), Some(Kind::File(n)) if n > 0) {
            out.problems
                .push(format!("rpm database {p} (ndb) is not read by imgcheck"));
        }
    }
    out
}
