//! The rpm database reader on databases rpm itself wrote
//! (tools/fixtures/76-rpmdb.sh: rpmbuild packages installed with
//! `rpm -i --justdb`, a write-ahead log left by python3's sqlite3, and
//! Berkeley DB hash databases written by db5.3_load and read back by rpm's
//! bdb_ro backend). Expected versions and row counts are `rpm -q` /
//! `rpm -qa` answers recorded in the manifest, never the reader's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use imgcheck_guest::facts::rpmdb::{self, Format, RpmdbError, wal};
use proptest::prelude::*;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IMGCHECK_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/generated"),
    }
}

/// A database fixture: (path, format, bytes with its log applied, notes).
type Fixture = (String, Format, Vec<u8>, BTreeMap<String, String>);

/// Every kind=rpmdb line.
fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let text = std::fs::read_to_string(dir.join("manifest.tsv"))
        .expect("manifest.tsv: run tools/gen-fixtures first");
    let out: Vec<_> = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&"rpmdb"))
        .map(|f| {
            let p = dir.join(f[1]);
            let mut db = std::fs::read(&p).unwrap();
            if let Ok(w) = std::fs::read(format!("{}-wal", p.display())) {
                wal::apply(f[1], &mut db, &w, rpmdb::DB_CAP).unwrap();
            }
            let notes = f[4]
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let format = match f[2] {
                "sqlite" => Format::Sqlite,
                "bdb" => Format::BerkeleyDb,
                other => panic!("{}: format {other}", f[1]),
            };
            (f[1].to_owned(), format, db, notes)
        })
        .collect();
    assert!(
        out.len() >= 4
            && out.iter().any(|f| f.0.contains("wal"))
            && out.iter().any(|f| f.1 == Format::BerkeleyDb),
        "no rpmdb fixtures: tools/fixtures/76-rpmdb.sh did not run"
    );
    out
}

/// Every package name in the database, in row order.
fn all_names(file: &str, db: &[u8], format: Format) -> Result<Vec<String>, RpmdbError> {
    Ok(rpmdb::all(file, db, format)?
        .into_iter()
        .map(|p| p.name)
        .collect())
}

#[test]
fn versions_are_what_rpm_q_says() {
    for (file, format, db, notes) in fixtures() {
        let found = rpmdb::packages(&file, &db, format, &["cloud-init", "openssh-server"])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        for name in ["cloud-init", "openssh-server"] {
            let p = found.iter().find(|p| p.name == name);
            assert_eq!(
                p.map(rpmdb::Package::evr).as_deref(),
                Some(notes[name].as_str()),
                "{file}: {name}"
            );
        }
        let names = all_names(&file, &db, format).unwrap();
        assert_eq!(names.len().to_string(), notes["rows"], "{file}");
        assert_eq!(
            names.iter().filter(|n| n.starts_with("filler-")).count(),
            60
        );
    }
}

#[test]
fn the_main_file_alone_is_the_state_before_the_log() {
    let dir = fixtures_dir();
    let db = std::fs::read(dir.join("rpmdb/wal/rpmdb.sqlite")).unwrap();
    let found = rpmdb::sqlite_packages("wal", &db, &["cloud-init"]).unwrap();
    assert_eq!(found[0].evr(), "23.4-7.el9");
}

#[test]
fn truncated_files_are_errors_not_panics() {
    for (file, format, db, notes) in fixtures() {
        for len in [0, 50, 100, 4096, 4097, db.len() / 2, db.len() - 1] {
            let r = rpmdb::packages(&file, &db[..len], format, &["cloud-init"]);
            // A cut may fall after every page the lookup needs; it must
            // never give a different version.
            if let Ok(p) = r {
                assert!(
                    p.iter().all(|p| p.evr() == notes["cloud-init"]),
                    "{file} {len}: {p:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random byte patches anywhere in a real database (headers, b-tree
    /// pages, cells, overflow chains, header blobs): an answer or a typed
    /// error, never a panic or a hang.
    #[test]
    fn patched_database_never_panics(
        which in any::<prop::sample::Index>(),
        patches in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..8)), 1..24)
    ) {
        let mut all = fixtures();
        let (file, format, mut db, _) = all.swap_remove(which.index(all.len()));
        for (at, bytes) in patches {
            let at = at.index(db.len());
            for (i, b) in bytes.into_iter().enumerate() {
                if let Some(x) = db.get_mut(at + i) {
                    *x = b;
                }
            }
        }
        let _ = rpmdb::packages(&file, &db, format, &["cloud-init", "openssh-server"]);
        let _ = all_names(&file, &db, format);
    }

    /// Patches in the write-ahead log: applying it never panics.
    #[test]
    fn patched_log_never_panics(
        patches in prop::collection::vec((0usize..4200, any::<u8>()), 1..16)
    ) {
        let dir = fixtures_dir();
        let db = std::fs::read(dir.join("rpmdb/wal/rpmdb.sqlite")).unwrap();
        let mut w = std::fs::read(dir.join("rpmdb/wal/rpmdb.sqlite-wal")).unwrap();
        for (at, b) in patches {
            if let Some(x) = w.get_mut(at) {
                *x = b;
            }
        }
        let mut d = db.clone();
        let _ = wal::apply("wal", &mut d, &w, rpmdb::DB_CAP);
        let _ = rpmdb::sqlite_packages("wal", &d, &["cloud-init"]);
    }
}
