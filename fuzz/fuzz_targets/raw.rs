#![no_main]
//! Fuzz target: raw (see src/lib.rs for what is exercised).
use imgcheck_disk::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    #[allow(unused_imports)]
    use Format as _;
    imgcheck_fuzz::exercise(Some(Format::Raw), data);
});
