#![no_main]
//! Fuzz target: the rpm database reader (SQLite file header, schema and
//! table b-trees, records, overflow chains, rpm header blobs), and the
//! header parser alone on the same bytes.
use imgcheck_guest::facts::rpmdb::{self, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rpmdb::sqlite_all("fuzz", data);
    let _ = header::package(data, &header::Ctx { file: "fuzz", row: 0 });
});
