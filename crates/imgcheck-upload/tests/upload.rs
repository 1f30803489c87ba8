//! Each provider backend against a local server playing its API as
//! documented: success, provider-side failure, rate limiting, retries, an
//! interrupted upload, and no token anywhere in what the caller sees.

mod mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imgcheck_upload::kakaocloud::{Credential, Endpoints, Session};
use imgcheck_upload::{
    Api, Auth, Outcome, PollOptions, RetryPolicy, Secret, UploadError, digitalocean, linode,
};
use mock::{Req, Resp, Server};
use serde_json::json;

const TOKEN: &str = "tok-SECRET-4242";

fn fast() -> (RetryPolicy, PollOptions) {
    (
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
        },
        PollOptions {
            interval: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
        },
    )
}

fn api(base: &str) -> Api {
    let mut a = Api::new(base, Auth::Bearer(Secret::new(TOKEN)));
    a.retry = fast().0;
    a
}

fn assert_no_token(text: &str) {
    assert!(
        !text.contains(TOKEN) && !text.contains("SECRET"),
        "token leaked: {text}"
    );
}

fn image_host(head_ok: bool) -> Server {
    Server::start(move |r: &Req| match (r.method.as_str(), head_ok) {
        ("HEAD", true) => Resp::Reply(
            200,
            vec![("Content-Length".into(), "1048576".into())],
            vec![],
        ),
        ("HEAD", false) => Resp::json(405, json!({"message": "HEAD not allowed"})),
        _ => Resp::json(404, json!({})),
    })
}

/// DigitalOcean: statuses NEW → pending → available; `fail` ends in deleted.
fn do_api(statuses: &'static [&'static str], first_post_429: bool) -> Server {
    let polls = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    Server::start(move |r: &Req| {
        if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Resp::json(
                401,
                json!({"id": "unauthorized", "message": "Unable to authenticate you"}),
            );
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/v2/images") => {
                if first_post_429 && posts.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Resp::json(
                        429,
                        json!({"id": "too_many_requests", "message": "API rate limit exceeded."}),
                    )
                    .with_header("retry-after", "1");
                }
                Resp::json(
                    202,
                    json!({"image": {"id": 38413969, "name": r.json()["name"], "status": "NEW", "error_message": ""}}),
                )
            }
            ("GET", "/v2/images/38413969") => {
                let i = polls.fetch_add(1, Ordering::SeqCst);
                if i == 1 {
                    return Resp::json(500, json!({"message": "internal error"}));
                }
                let status = statuses[i.min(statuses.len() - 1)];
                let err = if status == "deleted" {
                    "We had a problem decompressing your file."
                } else {
                    ""
                };
                Resp::json(
                    200,
                    json!({"image": {"id": 38413969, "status": status, "error_message": err}}),
                )
            }
            _ => Resp::json(404, json!({"message": "not found"})),
        }
    })
}

fn do_request(url: String) -> digitalocean::ImportRequest {
    digitalocean::ImportRequest {
        name: "img".into(),
        url,
        region: "nyc3".into(),
        distribution: Some("Debian".into()),
        description: None,
        tags: vec!["a".into()],
    }
}

#[test]
fn digitalocean_import_succeeds_after_429_and_500() {
    let host = image_host(true);
    let server = do_api(&["NEW", "NEW", "pending", "available"], true);
    let out = digitalocean::import(
        &api(&server.base),
        &do_request(format!("{}/x.qcow2", host.base)),
        &fast().1,
        false,
    )
    .expect("import succeeds");
    let Outcome::Image(image) = out else {
        panic!("not an image")
    };
    assert_eq!(image["status"], "available");
    assert_eq!(host.count("HEAD", "/x.qcow2"), 1, "preflight HEAD");
    assert_eq!(server.count("POST", "/v2/images"), 2, "429 was retried");
    let post = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v2/images")
        .unwrap();
    assert_eq!(post.json()["region"], "nyc3");
    assert_eq!(post.json()["tags"], json!(["a"]));
    assert!(
        server.count("GET", "/v2/images/38413969") >= 4,
        "polled through the 500"
    );
}

#[test]
fn digitalocean_deleted_image_reports_error_message() {
    let host = image_host(true);
    let server = do_api(&["NEW", "NEW", "deleted"], false);
    let err = digitalocean::import(
        &api(&server.base),
        &do_request(format!("{}/x.img", host.base)),
        &fast().1,
        false,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, UploadError::Provider { .. }), "{msg}");
    assert!(msg.contains("problem decompressing"), "{msg}");
    assert_no_token(&msg);
}

#[test]
fn digitalocean_refuses_a_host_without_head() {
    let host = image_host(false);
    let server = do_api(&["available"], false);
    let err = digitalocean::import(
        &api(&server.base),
        &do_request(format!("{}/x.img", host.base)),
        &fast().1,
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("HEAD"), "{err}");
    assert_eq!(
        server.count("POST", "/v2/images"),
        0,
        "nothing created when the preflight fails"
    );
}

#[test]
fn digitalocean_bad_token_and_dry_run_never_show_the_token() {
    let host = image_host(true);
    let server = do_api(&["available"], false);
    let mut bad = Api::new(&server.base, Auth::Bearer(Secret::new("tok-SECRET-wrong")));
    bad.retry = fast().0;
    let err = digitalocean::import(
        &bad,
        &do_request(format!("{}/x.img", host.base)),
        &fast().1,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(err, UploadError::Http { status: 401, .. }),
        "{err}"
    );
    assert_no_token(&format!("{err} {err:?}"));
    let before = server.requests().len();
    let Outcome::DryRun(lines) = digitalocean::import(
        &api(&server.base),
        &do_request("https://h/x.img".into()),
        &fast().1,
        true,
    )
    .unwrap() else {
        panic!("dry run");
    };
    assert_eq!(server.requests().len(), before, "dry run sends nothing");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("POST") && l.contains("/v2/images") && l.contains("Bearer ***"))
    );
    assert_no_token(&lines.join("\n"));
}

/// Linode: POST /v4/images/upload, PUT to upload_to (checked for length and
/// MD5), then statuses until available.
fn linode_api(
    put_failures: usize,
    drop_put: bool,
    deleted: bool,
) -> (Server, Arc<std::sync::Mutex<Option<String>>>) {
    let received_md5 = Arc::new(std::sync::Mutex::new(None));
    let seen = received_md5.clone();
    let puts = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let base = Arc::new(std::sync::Mutex::new(String::new()));
    let base2 = base.clone();
    let server = Server::start(move |r: &Req| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v4/images/upload") => {
            if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
                return Resp::json(401, json!({"errors": [{"reason": "Invalid Token"}]}));
            }
            let upload_to = format!("{}/upload/abc?sig=1", base2.lock().unwrap());
            Resp::json(
                200,
                json!({"upload_to": upload_to, "image": {"id": "private/42", "status": "pending_upload", "label": r.json()["label"]}}),
            )
        }
        ("PUT", p) if p.starts_with("/upload/abc") => {
            assert!(
                r.header("authorization").is_none(),
                "no credentials to the presigned URL"
            );
            assert_eq!(r.header("content-type"), Some("application/octet-stream"));
            let n = puts.fetch_add(1, Ordering::SeqCst);
            if n < put_failures {
                return if drop_put {
                    Resp::Drop
                } else {
                    Resp::json(500, json!({}))
                };
            }
            let len: usize = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .expect("Content-Length set");
            assert_eq!(len, r.body.len(), "length matches body");
            use md5::{Digest, Md5};
            *seen.lock().unwrap() = Some(format!("{:x}", Md5::digest(&r.body)));
            Resp::Reply(200, vec![], vec![])
        }
        ("GET", "/v4/images/private/42") => {
            let i = polls.fetch_add(1, Ordering::SeqCst);
            if deleted && i >= 1 {
                return Resp::json(404, json!({"errors": [{"reason": "Not found"}]}));
            }
            let status = ["pending_upload", "creating", "available"][i.min(2)];
            Resp::json(200, json!({"id": "private/42", "status": status}))
        }
        _ => Resp::json(404, json!({"errors": [{"reason": "Not found"}]})),
    });
    *base.lock().unwrap() = server.base.clone();
    (server, received_md5)
}

fn gz_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("disk.img.gz");
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&p, data).unwrap();
    p
}

fn linode_request() -> linode::UploadRequest {
    linode::UploadRequest {
        label: "img".into(),
        region: "us-east".into(),
        cloud_init: true,
        ..Default::default()
    }
}

#[test]
fn linode_upload_streams_with_md5_and_waits() {
    for (failures, drop_put) in [(0, false), (1, false), (2, true)] {
        let dir = tempfile::tempdir().unwrap();
        let gz = gz_file(dir.path());
        let (server, received) = linode_api(failures, drop_put, false);
        let progress = |_n: u64| {};
        let (out, up) = linode::upload(
            &api(&server.base),
            &linode_request(),
            &gz,
            1 << 30,
            &fast().1,
            false,
            &progress,
        )
        .unwrap_or_else(|e| panic!("failures={failures} drop={drop_put}: {e}"));
        let up = up.unwrap();
        use md5::{Digest, Md5};
        let want = format!("{:x}", Md5::digest(std::fs::read(&gz).unwrap()));
        assert_eq!(up.md5, want);
        assert_eq!(
            received.lock().unwrap().as_deref(),
            Some(want.as_str()),
            "server got the same bytes"
        );
        assert_eq!(up.bytes, std::fs::metadata(&gz).unwrap().len());
        assert!(matches!(out, Outcome::Image(ref i) if i["status"] == "available"));
        assert_eq!(server.count("PUT", "/upload/abc"), failures + 1);
        let post = server
            .requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .unwrap();
        assert_eq!(post.json()["cloud_init"], true);
    }
}

#[test]
fn linode_upload_gives_up_after_retries_and_reports_deleted_images() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gz_file(dir.path());
    let (server, _) = linode_api(100, true, false);
    let err = linode::upload(
        &api(&server.base),
        &linode_request(),
        &gz,
        1,
        &fast().1,
        false,
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::Transport { .. }), "{err}");
    assert_no_token(&err.to_string());

    let (server, _) = linode_api(0, false, true);
    let err = linode::upload(
        &api(&server.base),
        &linode_request(),
        &gz,
        1,
        &fast().1,
        false,
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::Provider { .. }), "{err}");
    assert!(err.to_string().contains("deleted"));
}

#[test]
fn linode_limits_are_enforced_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gz_file(dir.path());
    let (server, _) = linode_api(0, false, false);
    let err = linode::upload(
        &api(&server.base),
        &linode_request(),
        &gz,
        7 << 30,
        &fast().1,
        false,
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::Refused(_)), "{err}");
    assert!(server.requests().is_empty());
}

/// KakaoCloud: tokens from X-Subject-Token (expiring soon → renewed), image
/// from a volume, statuses until active.
fn kakao_api(expires_soon: bool, end_status: &'static str) -> Server {
    let polls = Arc::new(AtomicUsize::new(0));
    let auths = Arc::new(AtomicUsize::new(0));
    Server::start(move |r: &Req| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/identity/v3/auth/tokens") => {
            let cred = &r.json()["auth"]["identity"]["application_credential"];
            if cred["secret"] != "kc-SECRET" {
                return Resp::json(401, json!({"error": {"message": "bad credential"}}));
            }
            let n = auths.fetch_add(1, Ordering::SeqCst);
            let exp = if expires_soon {
                "2000-01-01T00:00:00Z"
            } else {
                "2999-01-01T00:00:00Z"
            };
            Resp::json(201, json!({"token": {"expires_at": exp}}))
                .with_header("X-Subject-Token", &format!("kt-{n}"))
        }
        ("POST", "/api/v1/volumes/vol-1/image") => {
            if r.header("x-auth-token")
                .is_none_or(|t| !t.starts_with("kt-"))
            {
                return Resp::json(401, json!({}));
            }
            Resp::json(
                202,
                json!({"image": {"id": "img-9", "name": r.json()["image"]["name"]}}),
            )
        }
        ("GET", "/api/v1/images/img-9") => {
            let i = polls.fetch_add(1, Ordering::SeqCst);
            if i == 0 {
                return Resp::json(429, json!({})).with_header("Retry-After", "0");
            }
            let status = if i >= 3 { end_status } else { "saving" };
            Resp::json(
                200,
                json!({"image": {"id": "img-9", "status": status, "os_info": {"type": "linux"}}}),
            )
        }
        _ => Resp::json(404, json!({})),
    })
}

fn kakao_session(server: &Server) -> Session {
    let cred = Credential {
        id: "cid".into(),
        secret: Secret::new("kc-SECRET"),
    };
    let b = server.base.clone();
    let mut s = Session::new(
        cred,
        Endpoints {
            iam: b.clone(),
            volume: b.clone(),
            image: b,
        },
    );
    s.retry = fast().0;
    s
}

#[test]
fn kakaocloud_creates_from_volume_and_renews_tokens() {
    let server = kakao_api(true, "active");
    let mut session = kakao_session(&server);
    let out = imgcheck_upload::kakaocloud::create_from_volume(
        &mut session,
        "vol-1",
        "img",
        None,
        &fast().1,
        false,
    )
    .expect("create");
    assert!(matches!(out, Outcome::Image(ref i) if i["status"] == "active"));
    // An already-expired token is renewed before each use.
    assert!(server.count("POST", "/identity/v3/auth/tokens") >= 3);
    let create = server
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/volumes/vol-1/image")
        .unwrap();
    assert_eq!(create.json()["image"]["description"], "-");

    let server = kakao_api(false, "active");
    let mut session = kakao_session(&server);
    imgcheck_upload::kakaocloud::create_from_volume(
        &mut session,
        "vol-1",
        "img",
        Some("d"),
        &fast().1,
        false,
    )
    .unwrap();
    assert_eq!(
        server.count("POST", "/identity/v3/auth/tokens"),
        1,
        "a valid token is reused"
    );
}

#[test]
fn kakaocloud_failure_status_and_dry_run() {
    let server = kakao_api(false, "killed");
    let mut session = kakao_session(&server);
    let err = imgcheck_upload::kakaocloud::create_from_volume(
        &mut session,
        "vol-1",
        "img",
        None,
        &fast().1,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::Provider { .. }), "{err}");

    let server = kakao_api(false, "active");
    let mut session = kakao_session(&server);
    let Outcome::DryRun(lines) = imgcheck_upload::kakaocloud::create_from_volume(
        &mut session,
        "vol-1",
        "img",
        None,
        &fast().1,
        true,
    )
    .unwrap() else {
        panic!("dry run")
    };
    assert!(server.requests().is_empty(), "dry run sends nothing");
    let text = lines.join("\n");
    assert!(!text.contains("kc-SECRET"), "{text}");
    assert!(text.contains("/api/v1/volumes/vol-1/image"));
}
