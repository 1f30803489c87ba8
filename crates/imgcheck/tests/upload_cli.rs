//! `imgcheck upload` as a user runs it (the README's commands), against
//! strict local stand-ins of the provider APIs
//! (crates/imgcheck-upload/tests/mock/providers.rs) and, for DigitalOcean
//! from a local file, a real S3-compatible server (moto's server mode,
//! started here on 127.0.0.1; tools/install-deps installs it; a missing
//! moto_server fails the test).
//!
//! Every run's stdout and stderr are searched for the credentials and
//! signatures in play ([`run`]): none may appear. After each run the mock's
//! violation log must be empty, and what arrived is compared with the
//! guest's bytes (qemu-img made the qcow2, gzip the .img.gz).

mod common;
#[path = "../../imgcheck-upload/tests/mock/mod.rs"]
mod mock;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures_dir, sha256_file};
use mock::providers::{self, DoScript, KC_ID, KC_SECRET, KakaoScript, LinodeScript, TOKEN};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SPACES_KEY: &str = "AKIASPACESKEYID0001";
const SPACES_SECRET: &str = "spaces-SECRET-key-0001";

/// Every variable the upload commands read, so a test controls them all.
const VARS: &[&str] = &[
    "DIGITALOCEAN_ACCESS_TOKEN",
    "DIGITALOCEAN_TOKEN",
    "SPACES_ACCESS_KEY_ID",
    "SPACES_SECRET_ACCESS_KEY",
    "DIGITALOCEAN_SPACES_ACCESS_KEY",
    "DIGITALOCEAN_SPACES_SECRET_KEY",
    "LINODE_TOKEN",
    "LINODE_CLI_TOKEN",
    "KAKAOCLOUD_APPLICATION_CREDENTIAL_ID",
    "KAKAOCLOUD_APPLICATION_CREDENTIAL_SECRET",
    "IMGCHECK_DIGITALOCEAN_API_URL",
    "IMGCHECK_SPACES_ENDPOINT",
    "IMGCHECK_LINODE_API_URL",
    "IMGCHECK_KAKAOCLOUD_IAM_URL",
    "IMGCHECK_KAKAOCLOUD_VOLUME_URL",
    "IMGCHECK_KAKAOCLOUD_IMAGE_URL",
];

/// Fails when `text` holds a credential or an unredacted signature.
pub fn assert_no_secrets(text: &str) {
    for s in [
        TOKEN,
        KC_SECRET,
        SPACES_SECRET,
        SPACES_KEY,
        "SECRETTOKEN",
        "deadbeef",
        "LINODEKEY",
    ] {
        assert!(!text.contains(s), "{s:?} leaked:\n{text}");
    }
    for marker in ["X-Amz-Signature=", "X-Amz-Credential=", "sig="] {
        for (i, _) in text.match_indices(marker) {
            let rest = &text[i + marker.len()..];
            assert!(rest.starts_with("***"), "unredacted {marker} in:\n{text}");
        }
    }
}

/// Runs imgcheck with exactly `env` set of the upload variables; checks
/// that no credential appears in its output.
fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgcheck"));
    cmd.args(args);
    for v in VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run imgcheck");
    assert_no_secrets(&String::from_utf8_lossy(&out.stdout));
    assert_no_secrets(&String::from_utf8_lossy(&out.stderr));
    out
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn guest(name: &str) -> PathBuf {
    let p = fixtures_dir().join("guests").join(name);
    assert!(p.exists(), "{}: run tools/gen-fixtures first", p.display());
    p
}

/// The guest as the three local input kinds, made by the reference tools:
/// the raw image, `qemu-img convert -O qcow2`, `gzip -c`.
fn inputs(dir: &Path, raw: &Path) -> Vec<PathBuf> {
    let copy = dir.join("debian-12.2-amd64.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(raw)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let qcow2 = dir.join("debian-12.2-amd64.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(raw)
        .arg(&qcow2)
        .status()
        .expect("qemu-img is required (tools/install-deps)");
    assert!(st.success());
    let gz = dir.join("debian-12.2-amd64.img.gz");
    let out = Command::new("gzip")
        .arg("-c")
        .arg(raw)
        .output()
        .expect("gzip is required");
    assert!(out.status.success());
    std::fs::write(&gz, out.stdout).unwrap();
    vec![qcow2, copy, gz]
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// `gzip -dc` of `gz` (the reference decompressor).
fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = gz.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

fn linode_env(mock: &providers::Mock) -> Vec<(&'static str, String)> {
    vec![
        ("LINODE_TOKEN", TOKEN.to_owned()),
        ("IMGCHECK_LINODE_API_URL", mock.base().to_owned()),
    ]
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn linode_from_qcow2_raw_gz_and_url_uploads_the_guest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = guest("good.img");
    let want = sha256_file(&raw);
    let mut locations: Vec<String> = inputs(dir.path(), &raw)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let qcow2 = std::fs::read(&locations[0]).unwrap();
    let host = providers::image_host(true, qcow2);
    locations.push(format!("{}/debian-12.2-amd64.qcow2", host.base));
    let before = files_in(dir.path());
    for loc in &locations {
        let mock = providers::linode(LinodeScript::default());
        let out = run(
            &[
                "upload",
                "--provider",
                "linode",
                loc,
                "--region",
                "us-east",
                "--poll-interval",
                "1",
            ],
            &linode_env(&mock),
        );
        assert!(out.status.success(), "{loc}:\n{}", text(&out));
        assert_eq!(mock.violations(), Vec::<String>::new(), "{loc}");
        let body = mock.received().expect("a PUT arrived");
        assert_eq!(sha256(&gunzip(&body)), want, "{loc}: guest bytes");
        let post = mock
            .server
            .requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .unwrap();
        // cloud-init 22.4.2 predates the Akamai datasource (23.3.1).
        assert_eq!(
            post.json(),
            json!({"label": "debian-12.2-amd64", "region": "us-east", "cloud_init": false}),
            "{loc}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("linode: image private/42 is available"),
            "{}",
            text(&out)
        );
        let md5 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("md5: "))
            .expect("md5 printed");
        assert_eq!(md5.len(), 32);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("partition_table.present"),
            "warnings shown on success:\n{stderr}"
        );
        assert!(
            stderr.contains("Linode image private/42: creating"),
            "a status line while Linode processes:\n{stderr}"
        );
        assert_eq!(files_in(dir.path()), before, "{loc}: no file left behind");
    }
}

#[test]
fn linode_cloud_init_follows_the_guest_and_the_override() {
    let mock = providers::linode(LinodeScript::default());
    // Rocky's cloud-init 23.4 with no datasource_list configured (ds-identify
    // decides, and tries Akamai): capable, per Linode's guide (23.3.1+).
    let img = guest("family-rocky.img").display().to_string();
    let out = run(
        &[
            "upload",
            "-p",
            "linode",
            &img,
            "--region",
            "us-east",
            "--name",
            "ci 26",
            "--no-wait",
            "--json",
        ],
        &linode_env(&mock),
    );
    assert!(out.status.success(), "{}", text(&out));
    let post = mock
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        post.json()["cloud_init"],
        true,
        "cloud-init 23.4 with the default datasources has the Akamai datasource"
    );
    assert_eq!(post.json()["label"], "ci 26");
    assert_eq!(
        mock.server.count("GET", "/v4/images/"),
        0,
        "--no-wait does not poll"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["image"]["status"], "pending_upload");
    assert_eq!(mock.violations(), Vec::<String>::new());

    // cloud-init 26.1, but its cloud.cfg lists ConfigDrive, DigitalOcean,
    // NoCloud, None: cloud-init tries only listed sources, so Linode's
    // Metadata service (the Akamai datasource) is never read.
    let mock = providers::linode(LinodeScript::default());
    let img = guest("cloud-init-26.img").display().to_string();
    let out = run(
        &[
            "upload",
            "-p",
            "linode",
            &img,
            "--region",
            "us-east",
            "--no-wait",
        ],
        &linode_env(&mock),
    );
    assert!(out.status.success(), "{}", text(&out));
    let post = mock
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        post.json()["cloud_init"],
        false,
        "a listed datasource_list without Akamai"
    );

    let mock = providers::linode(LinodeScript::default());
    let out = run(
        &[
            "upload",
            "-p",
            "linode",
            &img,
            "--region",
            "us-east",
            "--cloud-init",
            "true",
            "--no-wait",
        ],
        &linode_env(&mock),
    );
    assert!(out.status.success(), "{}", text(&out));
    let post = mock
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.json()["cloud_init"], true, "the override wins");
}

#[test]
fn linode_refusals_exit_1_with_findings_and_send_nothing() {
    let mock = providers::linode(LinodeScript::default());
    // 108 GB of guest: over Linode's 6 GB uncompressed.
    let img = guest("over-100gb.img").display().to_string();
    let out = run(
        &["upload", "-p", "linode", &img, "--region", "us-east"],
        &linode_env(&mock),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("size.too_large") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(
        mock.server.requests().iter().all(|r| r.method == "GET"),
        "only the region lookup before the refusal"
    );

    // A label Linode refuses, a region without Object Storage: refused
    // before any conversion or upload.
    let good = guest("good.img").display().to_string();
    let out = run(
        &[
            "upload", "-p", "linode", &good, "--region", "us-east", "--name", "a/b",
        ],
        &linode_env(&mock),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("label"));
    let out = run(
        &["upload", "-p", "linode", &good, "--region", "us-edge"],
        &linode_env(&mock),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Object Storage"));
    assert_eq!(mock.server.count("POST", "/"), 0);
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[test]
fn linode_failed_put_deletes_the_pending_image_and_keep_keeps_the_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let raw = guest("good.img");
    let qcow2 = inputs(dir.path(), &raw).remove(0);
    std::fs::remove_file(dir.path().join("debian-12.2-amd64.img.gz")).unwrap();
    let mock = providers::linode(LinodeScript {
        put_failures: 100,
        drop_put: false,
        deleted: false,
    });
    let out = run(
        &[
            "upload",
            "-p",
            "linode",
            &qcow2.display().to_string(),
            "--region",
            "us-east",
            "--keep",
        ],
        &linode_env(&mock),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("private/42") && stderr.contains("deleted"),
        "{stderr}"
    );
    assert_eq!(mock.server.count("DELETE", "/v4/images/private/42"), 1);
    let kept = dir.path().join("debian-12.2-amd64.img.gz");
    assert!(
        kept.exists(),
        "--keep keeps the conversion: {:?}",
        files_in(dir.path())
    );
    assert_eq!(
        sha256(&gunzip(&std::fs::read(&kept).unwrap())),
        sha256_file(&raw)
    );
    assert_eq!(mock.violations(), Vec::<String>::new());

    // The retry sends the kept file as is.
    let mock = providers::linode(LinodeScript::default());
    let out = run(
        &[
            "upload",
            "-p",
            "linode",
            &kept.display().to_string(),
            "--region",
            "us-east",
            "--poll-interval",
            "1",
        ],
        &linode_env(&mock),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mock.received().unwrap(), std::fs::read(&kept).unwrap());
}

#[test]
fn dry_runs_need_no_credentials_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let raw = guest("good.img");
    let qcow2 = inputs(dir.path(), &raw).remove(0).display().to_string();
    let host = providers::image_host(true, std::fs::read(&qcow2).unwrap());
    let url = format!("{}/x.qcow2?X-Amz-Signature=abc&sig=1", host.base);
    let before = files_in(dir.path());
    for args in [
        vec![
            "upload",
            "-p",
            "linode",
            &qcow2,
            "--region",
            "us-east",
            "--dry-run",
        ],
        vec![
            "upload",
            "-p",
            "digitalocean",
            &qcow2,
            "--region",
            "nyc3",
            "--spaces-bucket",
            "b",
            "--dry-run",
        ],
        vec![
            "upload",
            "-p",
            "digitalocean",
            "--url",
            &url,
            "--region",
            "nyc3",
            "--name",
            "web",
            "--dry-run",
        ],
        vec![
            "upload",
            "-p",
            "digitalocean",
            &url,
            "--region",
            "nyc3",
            "--name",
            "web",
            "--dry-run",
            "--json",
        ],
        vec![
            "upload",
            "-p",
            "kakaocloud",
            &qcow2,
            "--volume-id",
            "vol-1",
            "--name",
            "web",
            "--dry-run",
        ],
    ] {
        let out = run(&args, &[]);
        assert!(out.status.success(), "{args:?}:\n{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("dry run") || stdout.contains("\"dry_run\""),
            "{stdout}"
        );
    }
    assert_eq!(
        host.requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        0
    );
    assert_eq!(files_in(dir.path()), before, "a dry run writes nothing");

    let out = run(
        &[
            "upload",
            "-p",
            "linode",
            &qcow2,
            "--region",
            "us-east",
            "--dry-run",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("convert ") && stdout.contains("(raw, gzip)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"label\":\"debian-12.2-amd64\""),
        "{stdout}"
    );
}

#[test]
fn credentials_are_checked_first_and_every_variable_is_named() {
    let img = guest("good.img").display().to_string();
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["-p", "linode", &img, "--region", "us-east"],
            &["LINODE_TOKEN", "LINODE_CLI_TOKEN"],
        ),
        (
            &[
                "-p",
                "digitalocean",
                &img,
                "--region",
                "nyc3",
                "--spaces-bucket",
                "b",
            ],
            &[
                "DIGITALOCEAN_ACCESS_TOKEN",
                "DIGITALOCEAN_TOKEN",
                "SPACES_ACCESS_KEY_ID",
                "SPACES_SECRET_ACCESS_KEY",
            ],
        ),
        (
            &["-p", "kakaocloud", &img, "--volume-id", "v", "--name", "n"],
            &[
                "KAKAOCLOUD_APPLICATION_CREDENTIAL_ID",
                "KAKAOCLOUD_APPLICATION_CREDENTIAL_SECRET",
            ],
        ),
    ];
    for (args, vars) in cases {
        let mut a = vec!["upload"];
        a.extend_from_slice(args);
        let start = Instant::now();
        let out = run(&a, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for v in vars {
            assert!(stderr.contains(v), "{v} not named:\n{stderr}");
        }
        assert!(!stderr.contains("PASS"), "no check before credentials");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    let help = run(&["upload", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for v in VARS {
        assert!(help.contains(v), "--help does not name {v}");
    }
}

#[test]
fn broken_pipe_exits_quietly() {
    let img = guest("good.img").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .args([
            "upload",
            "-p",
            "linode",
            &img,
            "--region",
            "us-east",
            "--dry-run",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -c 1`: read one byte, close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.code().is_none(),
        "{stderr}"
    );
}

fn do_env(mock: &providers::Mock) -> Vec<(&'static str, String)> {
    vec![
        ("DIGITALOCEAN_ACCESS_TOKEN", TOKEN.to_owned()),
        ("IMGCHECK_DIGITALOCEAN_API_URL", mock.base().to_owned()),
    ]
}

#[test]
fn digitalocean_url_import_fills_the_distribution_from_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let raw = guest("good.img");
    let qcow2 = inputs(dir.path(), &raw).remove(0);
    let host = providers::image_host(true, std::fs::read(&qcow2).unwrap());
    let mock = providers::digitalocean(DoScript {
        statuses: vec!["NEW", "available"],
        fetch: true,
        ..Default::default()
    });
    let url = format!("{}/debian.qcow2", host.base);
    let out = run(
        &[
            "upload",
            "--provider",
            "digitalocean",
            "--url",
            &url,
            "--region",
            "nyc3",
            "--name",
            "web",
            "--poll-interval",
            "1",
            "--regions",
            "ams3",
        ],
        &do_env(&mock),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mock.violations(), Vec::<String>::new());
    let post = mock
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        post.json(),
        json!({"name": "web", "url": url, "region": "nyc3", "distribution": "Debian"})
    );
    assert_eq!(mock.received().unwrap(), std::fs::read(&qcow2).unwrap());
    assert_eq!(mock.server.count("POST", "/v2/images/38413969/actions"), 1);

    // A presigned URL (its host refuses HEAD, as S3 does for a URL signed
    // for GET): checked and preflighted with ranged GETs.
    let no_head = providers::image_host(false, std::fs::read(&qcow2).unwrap());
    let mock2 = providers::digitalocean(DoScript {
        fetch: true,
        ..Default::default()
    });
    let signed = format!(
        "{}/debian.qcow2?X-Amz-Expires=600&X-Amz-Signature=0123abcd",
        no_head.base
    );
    let out = run(
        &[
            "upload",
            "-p",
            "digitalocean",
            "--url",
            &signed,
            "--region",
            "nyc3",
            "--name",
            "web",
            "--poll-interval",
            "1",
        ],
        &do_env(&mock2),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mock2.violations(), Vec::<String>::new());
    assert!(
        no_head
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.header("range") == Some("bytes=0-0")),
        "ranged GET preflight"
    );

    // A misspelt distribution is refused before any request.
    let out = run(
        &[
            "upload",
            "-p",
            "digitalocean",
            "--url",
            &url,
            "--region",
            "nyc3",
            "--name",
            "web",
            "--distribution",
            "Debain",
        ],
        &do_env(&mock),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Debian"));
}

/// moto's S3 server on a free port of 127.0.0.1, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is required (pip install 'moto[server]'; tools/install-deps does)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, endpoint }
}

/// A bare HTTP/1.1 request (moto takes unsigned requests for set-up).
fn raw_http(method: &str, url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

#[test]
fn digitalocean_from_a_local_file_goes_through_spaces_and_leaves_no_object() {
    let s3 = moto();
    let (st, resp) = raw_http("PUT", &format!("{}/images", s3.endpoint));
    assert_eq!(st, 200, "create bucket: {resp}");
    let dir = tempfile::tempdir().unwrap();
    let raw = guest("good.img");
    let files = inputs(dir.path(), &raw);
    // The qcow2 (one PUT), the 48 MiB raw image (multipart: 16 MiB parts)
    // and the .img.gz.
    for file in &files {
        let mock = providers::digitalocean(DoScript {
            statuses: vec!["NEW", "pending", "available"],
            fetch: true,
            ..Default::default()
        });
        let mut env = do_env(&mock);
        env.push(("SPACES_ACCESS_KEY_ID", SPACES_KEY.to_owned()));
        env.push(("SPACES_SECRET_ACCESS_KEY", SPACES_SECRET.to_owned()));
        env.push(("IMGCHECK_SPACES_ENDPOINT", s3.endpoint.clone()));
        let f = file.display().to_string();
        let out = run(
            &[
                "upload",
                "-p",
                "digitalocean",
                &f,
                "--region",
                "nyc3",
                "--spaces-bucket",
                "images",
                "--poll-interval",
                "1",
            ],
            &env,
        );
        assert!(out.status.success(), "{f}:\n{}", text(&out));
        assert_eq!(mock.violations(), Vec::<String>::new());
        assert_eq!(
            sha256(&mock.received().expect("the importer fetched the URL")),
            sha256_file(file),
            "{f}: the importer got the file"
        );
        let post = mock
            .server
            .requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .unwrap();
        let url = post.json()["url"].as_str().unwrap().to_owned();
        assert!(
            url.starts_with(&format!("{}/images/imgcheck-import/", s3.endpoint))
                && url.contains("X-Amz-Signature=")
                && url.contains("X-Amz-Expires=1800"),
            "a presigned GET with a short expiry: {url}"
        );
        let (_, listing) = raw_http("GET", &format!("{}/images?list-type=2", s3.endpoint));
        assert!(!listing.contains("<Key>"), "object left behind:\n{listing}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Spaces object deleted"), "{stdout}");
    }

    // A bucket that does not exist: the S3 error, no import, no secret.
    let mock = providers::digitalocean(DoScript::default());
    let mut env = do_env(&mock);
    env.push(("SPACES_ACCESS_KEY_ID", SPACES_KEY.to_owned()));
    env.push(("SPACES_SECRET_ACCESS_KEY", SPACES_SECRET.to_owned()));
    env.push(("IMGCHECK_SPACES_ENDPOINT", s3.endpoint.clone()));
    let f = files[0].display().to_string();
    let out = run(
        &[
            "upload",
            "-p",
            "digitalocean",
            &f,
            "--region",
            "nyc3",
            "--spaces-bucket",
            "no-such-bucket",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Spaces"),
        "{}",
        text(&out)
    );
    assert!(
        mock.server.requests().is_empty(),
        "no import without the object"
    );
}

#[test]
fn kakaocloud_creates_from_a_volume_and_reports_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut images: Vec<String> = inputs(dir.path(), &guest("good.img"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let host = providers::image_host(true, std::fs::read(&images[0]).unwrap());
    images.push(format!("{}/debian.qcow2", host.base));
    let cases = images.iter().map(|i| (i.clone(), "active", true)).chain([(
        images[0].clone(),
        "killed",
        false,
    )]);
    for (img, end, ok) in cases {
        let mock = providers::kakaocloud(KakaoScript {
            expires_soon: false,
            end_status: end,
        });
        let env = vec![
            ("KAKAOCLOUD_APPLICATION_CREDENTIAL_ID", KC_ID.to_owned()),
            (
                "KAKAOCLOUD_APPLICATION_CREDENTIAL_SECRET",
                KC_SECRET.to_owned(),
            ),
            ("IMGCHECK_KAKAOCLOUD_IAM_URL", mock.base().to_owned()),
            ("IMGCHECK_KAKAOCLOUD_VOLUME_URL", mock.base().to_owned()),
            ("IMGCHECK_KAKAOCLOUD_IMAGE_URL", mock.base().to_owned()),
        ];
        let out = run(
            &[
                "upload",
                "--provider",
                "kakaocloud",
                &img,
                "--volume-id",
                "vol-1",
                "--name",
                "web",
                "--poll-interval",
                "1",
            ],
            &env,
        );
        assert_eq!(out.status.success(), ok, "{img}: {}", text(&out));
        assert_eq!(mock.violations(), Vec::<String>::new());
        if ok {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("kakaocloud: image img-9 is active"),
                "{stdout}"
            );
            assert!(
                stdout.contains("os_info: type=linux distro=debian"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn digitalocean_refuses_a_multi_file_image_from_a_local_file() {
    let vmdk = fixtures_dir().join("vmdk/big-twoGbMaxExtentSparse.vmdk");
    assert!(vmdk.exists(), "{}: run tools/gen-fixtures", vmdk.display());
    let out = run(
        &[
            "upload",
            "-p",
            "digitalocean",
            &vmdk.display().to_string(),
            "--region",
            "nyc3",
            "--spaces-bucket",
            "b",
            "--dry-run",
            "--skip-check",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("other files"),
        "{}",
        text(&out)
    );
}
