//! Each provider backend against a strict local stand-in of its API
//! (mock/providers.rs): success, provider-side failure, rate limiting,
//! retries, an interrupted upload, and no credential anywhere in what the
//! caller sees. Every test asserts after the call that the mock saw no
//! request the real API would refuse.

mod mock;

use std::time::Duration;

use imgcheck_upload::kakaocloud::{Credential, Endpoints, Session};
use imgcheck_upload::{
    Api, Auth, Event, Flow, PollOptions, RetryPolicy, Secret, UploadError, digitalocean, linode,
};
use mock::providers::{self, DoScript, KC_ID, KC_SECRET, KakaoScript, LinodeScript, TOKEN};
use serde_json::json;

fn retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(2),
    }
}

fn poll() -> PollOptions {
    PollOptions {
        interval: Duration::from_millis(5),
        timeout: Duration::from_secs(5),
    }
}

fn api(base: &str) -> Api {
    let mut a = Api::new(base, Auth::Bearer(Secret::new(TOKEN)));
    a.retry = retry();
    a
}

fn quiet(_: Event<'_>) {}

fn flow(p: &PollOptions) -> Flow<'_> {
    Flow {
        poll: p,
        wait: true,
        events: &quiet,
    }
}

fn assert_no_secret(text: &str) {
    for s in [TOKEN, "SECRET", "deadbeef", "X-Amz-Credential=LINODE"] {
        assert!(!text.contains(s), "{s} leaked: {text}");
    }
}

fn do_request(url: String) -> digitalocean::ImportRequest {
    digitalocean::ImportRequest {
        name: "img".into(),
        url,
        region: "nyc3".into(),
        distribution: Some("Debian".into()),
        tags: vec!["a".into()],
        ..Default::default()
    }
}

#[test]
fn digitalocean_import_succeeds_after_429_and_transfers() {
    let host = providers::image_host(true, vec![7; 1000]);
    let mock = providers::digitalocean(DoScript {
        statuses: vec!["NEW", "pending", "available"],
        first_post_429: true,
        ..Default::default()
    });
    let mut req = do_request(format!("{}/x.qcow2", host.base));
    req.regions = vec!["ams3".into()];
    let p = poll();
    let image = digitalocean::import(&api(mock.base()), &req, &flow(&p)).expect("import");
    assert_eq!(image["status"], "available");
    assert_eq!(mock.violations(), Vec::<String>::new());
    assert_eq!(host.count("HEAD", "/x.qcow2"), 1, "preflight HEAD");
    assert_eq!(
        mock.server.count("POST", "/v2/images"),
        3,
        "429 retried, then one transfer"
    );
    let post = mock
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v2/images")
        .unwrap();
    assert_eq!(
        post.json(),
        json!({"name": "img", "url": format!("{}/x.qcow2", host.base), "region": "nyc3",
            "distribution": "Debian", "tags": ["a"]})
    );
    assert_eq!(
        mock.server.count("POST", "/v2/images/38413969/actions"),
        1,
        "one transfer"
    );
}

#[test]
fn digitalocean_deleted_image_reports_error_message() {
    let host = providers::image_host(true, vec![1; 10]);
    let mock = providers::digitalocean(DoScript {
        statuses: vec!["NEW", "deleted"],
        ..Default::default()
    });
    let p = poll();
    let err = digitalocean::import(
        &api(mock.base()),
        &do_request(format!("{}/x.img", host.base)),
        &flow(&p),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, UploadError::Provider { .. }), "{msg}");
    assert!(msg.contains("problem decompressing"), "{msg}");
    assert_no_secret(&msg);
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[test]
fn digitalocean_refuses_a_host_without_head_but_a_presigned_url_uses_a_ranged_get() {
    let host = providers::image_host(false, vec![1; 10]);
    let mock = providers::digitalocean(DoScript::default());
    let p = poll();
    let err = digitalocean::import(
        &api(mock.base()),
        &do_request(format!("{}/x.img", host.base)),
        &flow(&p),
    )
    .unwrap_err();
    assert!(err.to_string().contains("HEAD"), "{err}");
    assert_eq!(
        mock.server.count("POST", "/v2/images"),
        0,
        "nothing created"
    );

    let mut req = do_request(format!("{}/x.img?X-Amz-Signature=abc", host.base));
    req.presigned = true;
    digitalocean::import(&api(mock.base()), &req, &flow(&p)).expect("import");
    let get = host
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .expect("ranged GET");
    assert_eq!(get.header("range"), Some("bytes=0-0"));
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[test]
fn digitalocean_bad_token_never_shows_the_token() {
    let host = providers::image_host(true, vec![1; 10]);
    let mock = providers::digitalocean(DoScript::default());
    let mut bad = Api::new(mock.base(), Auth::Bearer(Secret::new("tok-SECRET-wrong")));
    bad.retry = retry();
    let p = poll();
    let err = digitalocean::import(&bad, &do_request(format!("{}/x.img", host.base)), &flow(&p))
        .unwrap_err();
    assert!(
        matches!(err, UploadError::Http { status: 401, .. }),
        "{err}"
    );
    assert_no_secret(&format!("{err} {err:?}"));
    assert_eq!(
        mock.server.count("POST", "/v2/images"),
        1,
        "a 401 is not retried"
    );
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
        label: "debian-12.2".into(),
        region: "us-east".into(),
        cloud_init: true,
        tags: vec!["web".into()],
        ..Default::default()
    }
}

#[test]
fn linode_upload_streams_with_md5_and_waits() {
    for (failures, drop_put) in [(0, false), (1, false), (2, true)] {
        let dir = tempfile::tempdir().unwrap();
        let gz = gz_file(dir.path());
        let mock = providers::linode(LinodeScript {
            put_failures: failures,
            drop_put,
            deleted: false,
        });
        let sent = std::sync::Mutex::new(Vec::new());
        let events = |e: Event<'_>| {
            if let Event::Sent { done, total } = e {
                sent.lock().unwrap().push((done, total));
            }
        };
        let p = poll();
        let up = linode::upload(
            &api(mock.base()),
            &linode_request(),
            &gz,
            1 << 30,
            &Flow {
                poll: &p,
                wait: true,
                events: &events,
            },
        )
        .unwrap_or_else(|e| panic!("failures={failures} drop={drop_put}: {e}"));
        let bytes = std::fs::read(&gz).unwrap();
        use md5::{Digest, Md5};
        let want = format!("{:x}", Md5::digest(&bytes));
        assert_eq!(up.md5, want);
        assert_eq!(mock.received().as_deref(), Some(bytes.as_slice()));
        assert_eq!(up.image["status"], "available");
        assert_eq!(mock.server.count("PUT", "/upload/abc"), failures + 1);
        let total = bytes.len() as u64;
        let last = *sent.lock().unwrap().last().unwrap();
        assert_eq!(last, (total, total), "progress ends at the file size");
        let post = mock
            .server
            .requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .unwrap();
        assert_eq!(
            post.json(),
            json!({"label": "debian-12.2", "region": "us-east", "cloud_init": true, "tags": ["web"]})
        );
        assert_eq!(mock.violations(), Vec::<String>::new());
    }
}

#[test]
fn linode_failed_put_deletes_its_pending_image_and_hides_the_upload_url() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gz_file(dir.path());
    let mock = providers::linode(LinodeScript {
        put_failures: 100,
        drop_put: true,
        deleted: false,
    });
    let p = poll();
    let err = linode::upload(&api(mock.base()), &linode_request(), &gz, 1, &flow(&p)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("private/42") && msg.contains("deleted"),
        "{msg}"
    );
    assert_no_secret(&format!("{msg} {err:?}"));
    assert_eq!(mock.server.count("DELETE", "/v4/images/private/42"), 1);
    assert_eq!(
        mock.server.count("POST", "/v4/images/upload"),
        1,
        "POST never repeated"
    );
    assert_eq!(mock.violations(), Vec::<String>::new());

    let mock = providers::linode(LinodeScript {
        deleted: true,
        ..Default::default()
    });
    let err = linode::upload(&api(mock.base()), &linode_request(), &gz, 1, &flow(&p)).unwrap_err();
    assert!(matches!(err, UploadError::Provider { .. }), "{err}");
    assert!(err.to_string().contains("deleted"));
}

#[test]
fn linode_limits_labels_and_regions_are_checked_before_any_upload() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gz_file(dir.path());
    let mock = providers::linode(LinodeScript::default());
    let p = poll();
    let err = linode::upload(
        &api(mock.base()),
        &linode_request(),
        &gz,
        7 << 30,
        &flow(&p),
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::Refused(_)), "{err}");
    let mut bad = linode_request();
    bad.label = "a/b".into();
    let err = linode::upload(&api(mock.base()), &bad, &gz, 1, &flow(&p)).unwrap_err();
    assert!(matches!(err, UploadError::Invalid(_)), "{err}");
    assert!(mock.server.requests().is_empty());
    let err = linode::check_region(&api(mock.base()), "us-edge").unwrap_err();
    assert!(err.to_string().contains("Object Storage"), "{err}");
    let err = linode::check_region(&api(mock.base()), "mars-1").unwrap_err();
    assert!(err.to_string().contains("no region"), "{err}");
    linode::check_region(&api(mock.base()), "us-east").unwrap();
    assert_eq!(mock.violations(), Vec::<String>::new());
}

fn kakao_session(mock: &providers::Mock) -> Session {
    let cred = Credential {
        id: KC_ID.into(),
        secret: Secret::new(KC_SECRET),
    };
    let b = mock.base().to_owned();
    let mut s = Session::new(
        cred,
        Endpoints {
            iam: b.clone(),
            volume: b.clone(),
            image: b,
        },
    );
    s.retry = retry();
    s
}

#[test]
fn kakaocloud_creates_from_volume_and_renews_tokens() {
    let mock = providers::kakaocloud(KakaoScript {
        expires_soon: true,
        end_status: "active",
    });
    let mut session = kakao_session(&mock);
    let p = poll();
    let image = imgcheck_upload::kakaocloud::create_from_volume(
        &mut session,
        "vol-1",
        "img",
        None,
        &flow(&p),
    )
    .expect("create");
    assert_eq!(image["status"], "active");
    // An already-expired token is renewed before each use.
    assert!(mock.server.count("POST", "/identity/v3/auth/tokens") >= 3);
    let create = mock
        .server
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/volumes/vol-1/image")
        .unwrap();
    assert_eq!(
        create.json(),
        json!({"image": {"name": "img", "description": "-"}})
    );
    assert_eq!(mock.violations(), Vec::<String>::new());

    let mock = providers::kakaocloud(KakaoScript {
        expires_soon: false,
        end_status: "active",
    });
    let mut session = kakao_session(&mock);
    imgcheck_upload::kakaocloud::create_from_volume(
        &mut session,
        "vol-1",
        "img",
        Some("d"),
        &flow(&p),
    )
    .unwrap();
    assert_eq!(
        mock.server.count("POST", "/identity/v3/auth/tokens"),
        1,
        "a valid token is reused"
    );
    assert_eq!(mock.violations(), Vec::<String>::new());
}

#[test]
fn kakaocloud_failure_status_and_bad_secret() {
    let mock = providers::kakaocloud(KakaoScript {
        expires_soon: false,
        end_status: "killed",
    });
    let mut session = kakao_session(&mock);
    let p = poll();
    let err = imgcheck_upload::kakaocloud::create_from_volume(
        &mut session,
        "vol-1",
        "img",
        None,
        &flow(&p),
    )
    .unwrap_err();
    assert!(matches!(err, UploadError::Provider { .. }), "{err}");

    let mut bad = Session::new(
        Credential {
            id: KC_ID.into(),
            secret: Secret::new("kc-SECRET-wrong"),
        },
        Endpoints {
            iam: mock.base().into(),
            volume: mock.base().into(),
            image: mock.base().into(),
        },
    );
    bad.retry = retry();
    let err =
        imgcheck_upload::kakaocloud::create_from_volume(&mut bad, "vol-1", "img", None, &flow(&p))
            .unwrap_err();
    assert!(
        matches!(err, UploadError::Http { status: 401, .. }),
        "{err}"
    );
    assert_no_secret(&format!("{err} {err:?}"));
}

#[test]
fn a_post_is_not_repeated_after_a_server_error_but_gets_are() {
    let host = providers::image_host(true, vec![1; 10]);
    let mock = providers::digitalocean(DoScript {
        first_post_500: true,
        ..Default::default()
    });
    let p = poll();
    let err = digitalocean::import(
        &api(mock.base()),
        &do_request(format!("{}/x.img", host.base)),
        &flow(&p),
    )
    .unwrap_err();
    assert!(
        matches!(err, UploadError::Http { status: 500, .. }),
        "{err}"
    );
    assert_eq!(
        mock.server.count("POST", "/v2/images"),
        1,
        "a POST that may have created an image is not sent again"
    );
    assert_eq!(mock.violations(), Vec::<String>::new());
}
