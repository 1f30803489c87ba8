//! `imgcheck info --json http://127.0.0.1:PORT/...` against a fixture served
//! by a local test server: the same answers as for the local file, reading
//! a small part of it. No internet: the server is on 127.0.0.1.

mod common;
#[path = "../../imgcheck-source/tests/support/http_server.rs"]
mod http_server;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use http_server::{Behaviour, Content, Server};

fn info_json(location: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .args(["info", "--json", location])
        .output()
        .expect("run imgcheck");
    assert!(
        out.status.success(),
        "imgcheck info --json {location}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("info --json prints JSON")
}

fn serve(path: &Path, behaviour: Behaviour) -> (Server, String) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("fixture name")
        .to_owned();
    let server = Server::start(
        vec![(name.as_str(), Content::File(path.to_path_buf()))],
        behaviour,
    );
    let url = server.url(&name);
    (server, url)
}

/// qcow2 fixtures: a plain one if the manifest has it, and a gzip one.
fn qcow2_fixtures() -> Vec<common::Fixture> {
    let disks = common::fixtures("disk");
    let plain = disks
        .iter()
        .find(|f| f.format == "qcow2" && f.path.extension().is_some_and(|e| e == "qcow2"));
    let gz = disks
        .iter()
        .find(|f| f.format == "qcow2" && f.path.extension().is_some_and(|e| e == "gz"));
    let v: Vec<common::Fixture> = plain.into_iter().chain(gz).cloned().collect();
    assert!(
        !v.is_empty(),
        "manifest has no qcow2 disk fixture: run tools/gen-fixtures first"
    );
    v
}

#[test]
fn info_over_http_matches_the_local_file() {
    for f in qcow2_fixtures() {
        let local = info_json(f.path.to_str().expect("utf-8 path"));
        let (server, url) = serve(&f.path, Behaviour::default());
        let remote = info_json(&url);
        assert_eq!(
            remote["virtual-size"],
            local["virtual-size"],
            "{}",
            f.name()
        );
        assert_eq!(remote["format"], local["format"], "{}", f.name());
        assert_eq!(remote["file-size"], local["file-size"], "{}", f.name());
        let size = std::fs::metadata(&f.path).expect("fixture").len();
        let sent = server.body_bytes.load(Ordering::Relaxed);
        eprintln!("{}: {size} bytes, info over http fetched {sent}", f.name());
        if f.path.extension().is_some_and(|e| e == "qcow2") && size > 8 << 20 {
            assert!(sent < size / 4, "{}: fetched {sent} of {size}", f.name());
        }
    }
}

#[test]
fn info_over_http_without_head_still_works() {
    let f = qcow2_fixtures().remove(0);
    let local = info_json(f.path.to_str().expect("utf-8 path"));
    let (server, url) = serve(
        &f.path,
        Behaviour {
            refuse_head: true,
            ..Default::default()
        },
    );
    let remote = info_json(&url);
    assert_eq!(remote["virtual-size"], local["virtual-size"]);
    assert!(
        server.requests().iter().any(|l| l.contains("bytes=0-0")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn unreachable_url_is_an_error_naming_it() {
    // A port nobody listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let url = format!("http://127.0.0.1:{port}/x.qcow2");
    let out = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .args(["info", "--json", &url])
        .output()
        .expect("run imgcheck");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
}

/// The URL bench row: how much of a remote image `info` and `check` fetch.
/// `IMGCHECK_HTTP_BENCH=/path/to/big.qcow2 cargo test -p imgcheck --test
/// http_cli -- --ignored --nocapture`. Prints the bytes the server sent
/// (what crossed the wire, including read-ahead a command did not use).
#[test]
#[ignore = "needs IMGCHECK_HTTP_BENCH=<image>; measurement, not a check"]
fn url_bench_bytes_fetched() {
    let Some(path) = std::env::var_os("IMGCHECK_HTTP_BENCH") else {
        panic!("set IMGCHECK_HTTP_BENCH to a local image to serve");
    };
    let path = Path::new(&path);
    let size = std::fs::metadata(path).expect("bench image").len();
    for cmd in [&["info", "--json"][..], &["check", "--json"][..]] {
        let (server, url) = serve(path, Behaviour::default());
        let t = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
            .args(cmd)
            .arg(&url)
            .output()
            .expect("run imgcheck");
        let elapsed = t.elapsed();
        let sent = server.body_bytes.load(Ordering::Relaxed);
        let requests = server.requests().len();
        eprintln!(
            "imgcheck {} URL: exit {}, {sent} of {size} bytes ({:.3}%), {requests} requests, {elapsed:?}",
            cmd[0],
            out.status,
            100.0 * sent as f64 / size as f64
        );
        if cmd[0] == "check" {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            eprintln!("  check stats: {}", v["stats"]);
        }
    }
}

/// Finding codes per provider from `imgcheck --json LOCATION`, leaving out
/// the codes that are about the container itself (a `.img` and its `.gz`
/// legitimately differ for Linode, which takes only gzip).
fn verdict_codes(location: &str) -> Vec<(String, bool, Vec<String>)> {
    let out = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .args(["--json", location])
        .output()
        .expect("run imgcheck");
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{location}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    v["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .map(|verdict| {
            let mut codes: Vec<String> = verdict["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["code"].as_str().unwrap().to_owned())
                .filter(|c| !c.starts_with("compression.") && !c.starts_with("size.compressed"))
                .collect();
            codes.sort();
            let provider = verdict["provider"].as_str().unwrap().to_owned();
            // Linode's pass depends on the container; compare it only for
            // the others.
            let pass = provider == "linode" || verdict["pass"].as_bool().unwrap();
            (provider, pass, codes)
        })
        .collect()
}

#[test]
fn check_gives_the_same_codes_for_an_image_its_gz_and_bz2_from_file_and_url() {
    let dir = common::fixtures_dir();
    let raw = dir.join("base/gpt-ext4.raw");
    let variants = [
        raw.clone(),
        dir.join("compressed/gpt-ext4.img.gz"),
        dir.join("compressed/gpt-ext4.img.bz2"),
    ];
    let want = verdict_codes(raw.to_str().unwrap());
    for v in &variants {
        assert!(
            v.exists(),
            "{}: missing; run tools/gen-fixtures first",
            v.display()
        );
        assert_eq!(
            verdict_codes(v.to_str().unwrap()),
            want,
            "local {}",
            v.display()
        );
        let (_server, url) = serve(v, Behaviour::default());
        assert_eq!(verdict_codes(&url), want, "over http: {}", v.display());
    }
}

#[test]
fn a_host_refusing_head_is_a_digitalocean_error() {
    let f = common::fixtures_dir().join("base/gpt-ext4.raw");
    let (_server, url) = serve(
        &f,
        Behaviour {
            refuse_head: true,
            ..Default::default()
        },
    );
    let codes = verdict_codes(&url);
    let (_, pass, do_codes) = codes.iter().find(|(p, _, _)| p == "digitalocean").unwrap();
    assert!(
        do_codes.contains(&"url.head_unsupported".to_owned()),
        "{codes:?}"
    );
    assert!(!pass);
    let linode = codes.iter().find(|(p, _, _)| p == "linode").unwrap();
    assert!(
        !linode.2.contains(&"url.head_unsupported".to_owned()),
        "DigitalOcean's rule only"
    );
}

/// `imgcheck --json LOCATION`: exit code and the JSON report.
fn check_json(location: &str) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .args(["--json", location])
        .output()
        .expect("run imgcheck");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{location}: no JSON report ({e}): exit {}, {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// A damaged image over http is a failed check (exit 1, `image.corrupt`),
/// exactly like the same bytes on disk: the report on a failed open is made
/// from what the opener found, never by opening the location again (which
/// cannot work for a URL).
#[test]
fn damaged_image_over_http_is_a_failed_check_like_on_disk() {
    let f = qcow2_fixtures()
        .into_iter()
        .find(|f| f.path.extension().is_some_and(|e| e == "qcow2"))
        .expect("a plain qcow2 fixture");
    // qemu-img's header is 104+ bytes; cut it at 64 (inside the header,
    // qcow2 spec "Header": fields up to byte 103 are mandatory).
    let mut bytes = std::fs::read(&f.path).expect("fixture");
    bytes.truncate(64);
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("cut.qcow2");
    std::fs::write(&local, &bytes).expect("write");
    let server = Server::start(
        vec![("cut.qcow2", Content::Mem(std::sync::Arc::new(bytes)))],
        Behaviour::default(),
    );
    let url = server.url("cut.qcow2");
    let (code_local, v_local) = check_json(local.to_str().expect("utf-8"));
    let (code_url, v_url) = check_json(&url);
    assert_eq!(code_local, Some(1), "{v_local}");
    assert_eq!(code_url, Some(1), "{v_url}");
    for v in [&v_local, &v_url] {
        assert_eq!(v["image"]["format"], "qcow2", "{v}");
        assert_eq!(v["image"]["error"]["kind"], "corrupt", "{v}");
        for verdict in v["verdicts"].as_array().expect("verdicts") {
            assert_eq!(verdict["pass"], false, "{verdict}");
            let codes: Vec<&str> = verdict["findings"]
                .as_array()
                .expect("findings")
                .iter()
                .filter_map(|f| f["code"].as_str())
                .collect();
            assert!(codes.contains(&"image.corrupt"), "{verdict}");
        }
    }
}
