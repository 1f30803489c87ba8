#![no_main]
//! Fuzz target: the rpm database readers (SQLite: file header, schema and
//! table b-trees, records, overflow chains; Berkeley DB hash: meta page,
//! buckets, hash and overflow pages; rpm header blobs), and the header
//! parser alone on the same bytes.
use imgcheck_guest::facts::rpmdb::{self, Format, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rpmdb::all("fuzz", data, Format::Sqlite);
    let _ = rpmdb::all("fuzz", data, Format::BerkeleyDb);
    let _ = header::package(data, &header::Ctx { file: "fuzz", row: 0 });
});
