//! Real Packer, offline: a `file` builder produces a disk image, the
//! `manifest` post-processor records it, and a `shell-local` post-processor
//! runs `imgcheck packer`. The build must fail on a bad image and pass on a
//! good one; with `--upload` it uploads to each provider's local stand-in
//! (strict mocks; moto for DigitalOcean's Spaces) what `imgcheck upload`
//! would.

mod common;
#[path = "../../imgcheck-upload/tests/mock/mod.rs"]
mod mock;

use mock::providers::{self, DoScript, KC_ID, KC_SECRET, KakaoScript, LinodeScript, TOKEN};

use std::path::Path;
use std::process::Command;

use common::fixtures_dir;

fn packer_build(dir: &Path, image: &Path) -> (bool, String) {
    packer_build_with(dir, image, "--provider digitalocean", &[])
}

/// A Packer build whose shell-local hook runs `imgcheck packer ARGS`, with
/// `env` added to Packer's environment (shell-local passes it on).
fn packer_build_with(
    dir: &Path,
    image: &Path,
    args: &str,
    env: &[(&str, String)],
) -> (bool, String) {
    let src = dir.join("source.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let hook = format!(
        "{} packer --manifest packer-manifest.json {args}",
        env!("CARGO_BIN_EXE_imgcheck")
    );
    let template = serde_json::json!({
        "builders": [{"type": "file", "source": "source.img", "target": "output/disk.img"}],
        "post-processors": [[
            {"type": "manifest", "output": "packer-manifest.json"},
            {"type": "shell-local", "inline": [hook]}
        ]]
    });
    std::fs::write(dir.join("template.json"), template.to_string()).unwrap();
    let mut cmd = Command::new("packer");
    cmd.args(["build", "-machine-readable", "template.json"])
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", dir.join("cache"))
        .env("HOME", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect(
        "packer is required for this test (apt-get install packer; tools/install-deps does)",
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [TOKEN, KC_SECRET, "SECRETTOKEN", "deadbeef"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    (out.status.success(), text)
}

fn fixture(name: &str) -> std::path::PathBuf {
    let p = fixtures_dir().join(name);
    assert!(
        p.exists(),
        "{}: missing; run tools/gen-fixtures first",
        p.display()
    );
    p
}

#[test]
fn packer_build_passes_on_a_good_image() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = packer_build(dir.path(), &fixture("guests/good.img"));
    assert!(ok, "packer build should pass:\n{log}");
    assert!(log.contains("PASS"), "{log}");
}

#[test]
fn packer_build_fails_on_a_bad_image() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = packer_build(dir.path(), &fixture("guests/no-sshd.img"));
    assert!(!ok, "packer build should fail:\n{log}");
    assert!(
        log.contains("sshd.missing"),
        "the failing finding is shown:\n{log}"
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gz");
    std::fs::write(&p, gz).unwrap();
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&p)
        .output()
        .expect("gzip");
    assert!(out.status.success());
    out.stdout
}

#[test]
fn packer_upload_to_linode() {
    let dir = tempfile::tempdir().unwrap();
    let image = fixture("guests/good.img");
    let mock = providers::linode(LinodeScript::default());
    let (ok, log) = packer_build_with(
        dir.path(),
        &image,
        "--provider linode --upload --region us-east --poll-interval 1",
        &[
            ("LINODE_TOKEN", TOKEN.to_owned()),
            ("IMGCHECK_LINODE_API_URL", mock.base().to_owned()),
        ],
    );
    assert!(ok, "packer build should pass:\n{log}");
    assert_eq!(mock.violations(), Vec::<String>::new());
    let body = mock.received().expect("uploaded");
    assert_eq!(sha256(&gunzip(&body)), common::sha256_file(&image));
    let post = mock
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.json()["label"], "disk");
    assert!(
        log.contains("linode: image private/42 is available"),
        "{log}"
    );
}

#[test]
fn packer_upload_to_kakaocloud() {
    let dir = tempfile::tempdir().unwrap();
    let mock = providers::kakaocloud(KakaoScript {
        expires_soon: false,
        end_status: "active",
    });
    let (ok, log) = packer_build_with(
        dir.path(),
        &fixture("guests/good.img"),
        "--provider kakaocloud --upload --volume-id vol-1 --name web --poll-interval 1",
        &[
            ("KAKAOCLOUD_APPLICATION_CREDENTIAL_ID", KC_ID.to_owned()),
            (
                "KAKAOCLOUD_APPLICATION_CREDENTIAL_SECRET",
                KC_SECRET.to_owned(),
            ),
            ("IMGCHECK_KAKAOCLOUD_IAM_URL", mock.base().to_owned()),
            ("IMGCHECK_KAKAOCLOUD_VOLUME_URL", mock.base().to_owned()),
            ("IMGCHECK_KAKAOCLOUD_IMAGE_URL", mock.base().to_owned()),
        ],
    );
    assert!(ok, "packer build should pass:\n{log}");
    assert_eq!(mock.violations(), Vec::<String>::new());
    assert!(log.contains("kakaocloud: image img-9 is active"), "{log}");
}

#[test]
fn packer_upload_to_digitalocean_goes_through_spaces() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut moto = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server is required (tools/install-deps installs it)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed().as_secs() < 60, "moto_server did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let create = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/images")])
        .status()
        .expect("curl");
    let dir = tempfile::tempdir().unwrap();
    let image = fixture("guests/good.img");
    let mock = providers::digitalocean(DoScript {
        statuses: vec!["NEW", "available"],
        fetch: true,
        ..Default::default()
    });
    let (ok, log) = packer_build_with(
        dir.path(),
        &image,
        "--provider digitalocean --upload --region nyc3 --spaces-bucket images --poll-interval 1",
        &[
            ("DIGITALOCEAN_TOKEN", TOKEN.to_owned()),
            ("IMGCHECK_DIGITALOCEAN_API_URL", mock.base().to_owned()),
            ("SPACES_ACCESS_KEY_ID", "AKIAPACKERTEST".to_owned()),
            (
                "SPACES_SECRET_ACCESS_KEY",
                "packer-spaces-secret".to_owned(),
            ),
            ("IMGCHECK_SPACES_ENDPOINT", endpoint.clone()),
        ],
    );
    let _ = moto.kill();
    let _ = moto.wait();
    assert!(create.success(), "bucket created");
    assert!(ok, "packer build should pass:\n{log}");
    assert!(!log.contains("packer-spaces-secret"), "{log}");
    assert_eq!(mock.violations(), Vec::<String>::new());
    assert_eq!(
        sha256(&mock.received().expect("imported")),
        common::sha256_file(&image),
        "DigitalOcean got the artifact"
    );
    assert!(
        log.contains("digitalocean: image 38413969 is available"),
        "{log}"
    );
    assert!(log.contains("Spaces object deleted"), "{log}");
}

#[test]
fn packer_upload_refused_by_the_check_fails_the_build_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mock = providers::digitalocean(DoScript::default());
    let (ok, log) = packer_build_with(
        dir.path(),
        &fixture("guests/no-sshd.img"),
        "--provider digitalocean --upload --region nyc3 --spaces-bucket images",
        &[
            ("DIGITALOCEAN_TOKEN", TOKEN.to_owned()),
            ("IMGCHECK_DIGITALOCEAN_API_URL", mock.base().to_owned()),
            ("SPACES_ACCESS_KEY_ID", "AKIAPACKERTEST".to_owned()),
            (
                "SPACES_SECRET_ACCESS_KEY",
                "packer-spaces-secret".to_owned(),
            ),
            // Nothing listens here: a request would fail the build
            // differently.
            ("IMGCHECK_SPACES_ENDPOINT", "http://127.0.0.1:9".to_owned()),
        ],
    );
    assert!(!ok, "packer build should fail:\n{log}");
    assert!(
        log.contains("sshd.missing") && log.contains("FAIL"),
        "{log}"
    );
    assert!(mock.server.requests().is_empty(), "nothing sent");
}
