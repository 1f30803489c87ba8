//! `imgcheck terraform` driven the way Terraform's `external` data source
//! drives a program (hashicorp/terraform-provider-external,
//! internal/provider/data_source.go): the query as one JSON object of strings
//! on stdin, then stdin closed; stdout parsed as a map of string to string
//! (Go's `json.Unmarshal` into `map[string]string`, which rejects any other
//! value type); on a non-zero exit, stderr is the error Terraform shows.
//!
//! Expected values are typed from the fixture manifest (tools/fixtures/
//! 50-guests.sh: os, arch, user), the files' own sizes, `md5sum`, and the
//! providers' documents, never from imgcheck's code.

mod common;
#[path = "../../imgcheck-source/tests/support/http_server.rs"]
mod http_server;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use http_server::{Behaviour, Content, Server};

/// What Terraform gets back from one run.
struct Run {
    code: i32,
    /// `Some` when stdout is a JSON map of strings, as Terraform requires.
    result: Option<BTreeMap<String, String>>,
    stdout: String,
    stderr: String,
}

/// Runs `imgcheck terraform` with `query` on stdin, closes stdin, waits.
fn terraform(query: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .arg("terraform")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imgcheck terraform");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(query.as_bytes()).expect("write query");
        // Dropped here: stdin is closed after the one object, as Terraform does.
    }
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        result: serde_json::from_str::<BTreeMap<String, String>>(&stdout).ok(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let m: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    serde_json::to_string(&m).expect("query JSON")
}

fn guest(name: &str) -> PathBuf {
    let p = common::fixtures_dir().join("guests").join(name);
    assert!(
        p.exists(),
        "{}: missing; run tools/gen-fixtures",
        p.display()
    );
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `md5sum FILE`'s hash: the reference for `md5` (Terraform's `filemd5()`
/// and `linode_image.file_hash` are the same lowercase hex).
fn md5sum(p: &Path) -> String {
    let out = Command::new("md5sum")
        .arg(p)
        .output()
        .expect("md5sum (coreutils) must be installed");
    assert!(out.status.success(), "md5sum {}", p.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("md5sum output")
        .to_owned()
}

/// The keys issue 14 promises, always present.
const KEYS: &[&str] = &[
    "pass",
    "codes",
    "warnings",
    "format",
    "virtual_size",
    "md5",
    "distribution",
    "cloud_init",
    "os_type",
    "os_distro",
    "os_architecture",
    "admin_user",
    "min_disk",
];

/// A passing run: exit 0, a map of strings with every key, nothing on stderr.
fn passes(q: &str) -> BTreeMap<String, String> {
    let r = terraform(q);
    assert_eq!(r.code, 0, "{q}\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
    let m = r
        .result
        .unwrap_or_else(|| panic!("stdout is not a JSON map of strings: {}", r.stdout));
    for k in KEYS {
        assert!(m.contains_key(*k), "{q}: no key {k} in {m:?}");
    }
    assert_eq!(m["pass"], "true", "{m:?}");
    assert_eq!(m["codes"], "", "{m:?}");
    m
}

/// A failing strict run: exit 1, nothing on stdout, findings with hints on
/// stderr naming every expected code.
fn fails(q: &str, codes: &[&str]) {
    let r = terraform(q);
    assert_eq!(r.code, 1, "{q}\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "{q}: stdout on failure: {}", r.stdout);
    for c in codes {
        assert!(
            r.stderr.contains(&format!("error {c}: ")),
            "{q}: no {c} in\n{}",
            r.stderr
        );
    }
    assert!(r.stderr.contains("hint: "), "{q}: no hint in\n{}", r.stderr);
}

#[test]
fn digitalocean_pass_and_fail() {
    // good.img: GPT, ext4, Debian 12, BIOS, cloud-init 22.4.2 (manifest:
    // expected= nothing). DigitalOcean takes raw images as they are.
    let good = guest("good.img");
    let m = passes(&query(&[("image", s(&good)), ("provider", "digitalocean")]));
    assert_eq!(m["distribution"], "Debian");
    assert_eq!(m["format"], "raw");
    // A raw image's virtual size is its file size: 48 MiB (50-guests.sh).
    assert_eq!(m["virtual_size"], "50331648");
    assert_eq!(m["md5"], md5sum(&good));

    // uefi-only.img: DigitalOcean documents BIOS boot only.
    fails(
        &query(&[
            ("image", s(&guest("uefi-only.img"))),
            ("provider", "digitalocean"),
        ]),
        &["boot.uefi_only"],
    );
}

#[test]
fn linode_pass_and_fail() {
    // Linode takes only gzip-compressed raw: good.img as it is fails.
    let good = guest("good.img");
    fails(
        &query(&[("image", s(&good)), ("provider", "linode")]),
        &["compression.unsupported"],
    );

    // `imgcheck convert --for linode` output passes; its md5 is md5sum's.
    let dir = tempfile::tempdir().expect("tempdir");
    let gz = dir.path().join("good.img.gz");
    let out = common::imgcheck(&["convert", "--for", "linode", s(&good), s(&gz), "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = passes(&query(&[("image", s(&gz)), ("provider", "linode")]));
    assert_eq!(m["md5"], md5sum(&gz));
    assert_eq!(m["format"], "raw");
    assert_eq!(m["compression"], "gzip");
    assert_eq!(m["virtual_size"], "50331648");
    // cloud-init 22.4.2 predates the Akamai datasource (23.3.1, Linode's
    // Metadata guide).
    assert_eq!(m["cloud_init"], "false");
}

#[test]
fn for_checks_what_convert_would_write_and_hashes_it() {
    let good = guest("good.img");
    let m = passes(&query(&[
        ("image", s(&good)),
        ("provider", "linode"),
        ("for", "linode"),
    ]));
    assert_eq!(m["compression"], "gzip");
    // The file `convert --for linode` writes next to the input...
    assert_eq!(m["file"], s(&good.with_file_name("good.img.gz")));
    // ...and its MD5, equal to md5sum of the file convert really writes.
    let dir = tempfile::tempdir().expect("tempdir");
    let gz = dir.path().join("good.img.gz");
    let out = common::imgcheck(&["convert", "--for", "linode", s(&good), s(&gz), "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(m["md5"], md5sum(&gz));
    // Nothing was left next to the input.
    assert!(!good.with_file_name("good.img.gz").exists());

    let m = passes(&query(&[
        ("image", s(&good)),
        ("provider", "digitalocean"),
        ("for", "digitalocean"),
    ]));
    assert_eq!(m["format"], "qcow2");
    assert_eq!(m["compression"], "gzip");
}

#[test]
fn kakaocloud_pass_and_fail_with_os_info() {
    // os_info from the manifest line of good.img: os=debian, arch=x86_64,
    // user=debian; a 48 MiB disk needs min_disk 1 (GB, rounded up).
    let m = passes(&query(&[
        ("image", s(&guest("good.img"))),
        ("provider", "kakaocloud"),
    ]));
    assert_eq!(m["os_type"], "linux");
    assert_eq!(m["os_distro"], "debian");
    assert_eq!(m["os_architecture"], "x86_64");
    assert_eq!(m["admin_user"], "debian");
    assert_eq!(m["min_disk"], "1");

    // A gzip stream cut short (`head -c` half of a gzip file, 60-compressed.sh) is damaged
    // for every provider.
    let cut = common::fixtures_dir().join("compressed/truncated.img.gz");
    fails(
        &query(&[("image", s(&cut)), ("provider", "kakaocloud")]),
        &["image.corrupt"],
    );
}

#[test]
fn strict_false_returns_the_failing_result() {
    let r = terraform(&query(&[
        ("image", s(&guest("uefi-only.img"))),
        ("provider", "digitalocean"),
        ("strict", "false"),
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = r.result.expect("map of strings");
    assert_eq!(m["pass"], "false");
    assert_eq!(m["codes"], "boot.uefi_only");
}

#[test]
fn url_input() {
    let good = guest("good.img");
    let server = Server::start(
        vec![("good.img", Content::File(good.clone()))],
        Behaviour::default(),
    );
    let m = passes(&query(&[
        ("image", &server.url("good.img")),
        ("provider", "digitalocean"),
    ]));
    assert_eq!(m["distribution"], "Debian");
    assert_eq!(m["virtual_size"], "50331648");
    // No local file to hash (linode_image needs a local file_path anyway).
    assert_eq!(m["md5"], "");
}

#[test]
fn every_malformed_query_is_one_line_naming_the_key() {
    let img = guest("good.img");
    let img = s(&img);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not JSON"),
        ("[\"image\"]".into(), "array"),
        ("{}".into(), "\"image\" is missing"),
        (query(&[("image", img)]), "\"provider\" is missing"),
        (
            query(&[("image", ""), ("provider", "linode")]),
            "\"image\" is empty",
        ),
        (
            format!("{{\"image\":{img:?},\"provider\":[\"linode\"]}}"),
            "\"provider\" is a JSON array",
        ),
        (
            format!("{{\"image\":{img:?},\"provider\":\"linode\",\"strict\":false}}"),
            "\"strict\" is a JSON boolean",
        ),
        (
            format!("{{\"image\":{img:?},\"provider\":\"linode\",\"for\":null}}"),
            "\"for\" is a JSON null",
        ),
        (
            query(&[("image", img), ("provider", "aws")]),
            "\"provider\"",
        ),
        (
            query(&[("image", img), ("provider", "linode"), ("strict", "yes")]),
            "\"strict\"",
        ),
        (
            query(&[
                ("image", img),
                ("provider", "linode"),
                ("for", "kakaocloud"),
            ]),
            "\"for\"",
        ),
        (
            query(&[("image", img), ("provider", "linode"), ("file", "x")]),
            "\"file\" is not known",
        ),
    ];
    for (q, needle) in cases {
        let r = terraform(&q);
        assert_eq!(r.code, 2, "{q}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{q}: {}", r.stdout);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{q}: not one line:\n{}", r.stderr);
        assert!(
            lines[0].contains(needle),
            "{q}: {:?} lacks {needle}",
            lines[0]
        );
    }
}

#[test]
fn a_missing_image_is_an_error_not_a_result() {
    let r = terraform(&query(&[
        ("image", "/nonexistent/imgcheck/disk.img"),
        ("provider", "linode"),
        ("strict", "false"),
    ]));
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains("/nonexistent/imgcheck/disk.img"),
        "{}",
        r.stderr
    );
}
