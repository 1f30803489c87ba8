#![no_main]
//! Fuzz target: vhdx, on sparse-encoded inputs (a VHDX spreads its
//! metadata over megabytes; see `expand_sparse` in src/lib.rs).
use imgcheck_disk::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imgcheck_fuzz::exercise_sparse(Some(Format::Vhdx), data);
});
