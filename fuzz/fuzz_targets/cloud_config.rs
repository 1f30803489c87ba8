#![no_main]
//! Fuzz target: the bounded cloud-init config readers (datasource_list,
//! default_user, kernel command line).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = imgcheck_guest::facts::datasource::parse_datasource_list(&text);
    let _ = imgcheck_guest::facts::datasource::parse_default_user(&text);
    let _ = imgcheck_guest::facts::datasource::cmdline_datasource(&text);
});
