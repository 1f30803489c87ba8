//! Strict stand-ins for the three provider APIs, written from their API
//! references (providers.md §1.2, §2.2, §3.1/3.3 and the seeds): a request
//! the real API would refuse is refused here with the status and error
//! shape the real API uses, and recorded as a *violation*.
//!
//! Checked on every call: the method and path exist; the credential is
//! there and right (Bearer token; KakaoCloud's `X-Auth-Token` must be one
//! this server issued); a JSON body has `Content-Type: application/json`,
//! its required fields, and the documented types. The presigned upload
//! URL must be sent *without* credentials.
//!
//! Nothing is asserted in a server thread: a test runs the client, then
//! asserts on [`Mock::violations`] and the request log ([`Server`]).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{Req, Resp, Server};

/// The DigitalOcean and Linode token the mocks accept.
pub const TOKEN: &str = "tok-SECRET-4242";
/// KakaoCloud application credential.
pub const KC_ID: &str = "kc-cred-id";
/// KakaoCloud application credential secret.
pub const KC_SECRET: &str = "kc-SECRET-77";

/// A running mock API with its violation log.
pub struct Mock {
    pub server: Server,
    violations: Arc<Mutex<Vec<String>>>,
    /// Bytes the mock's importer fetched (DigitalOcean) or received by PUT
    /// (Linode).
    pub received: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Mock {
    /// What the mock refused as the real API would, one line each.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }
    pub fn base(&self) -> &str {
        &self.server.base
    }
    pub fn received(&self) -> Option<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

/// Records a violation and gives the real API's answer to it.
fn violation(log: &Mutex<Vec<String>>, r: &Req, what: &str, resp: Resp) -> Resp {
    log.lock()
        .unwrap()
        .push(format!("{} {}: {what}", r.method, r.path));
    resp
}

fn json_body(r: &Req) -> Result<Value, String> {
    let ct = r.header("content-type").unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("Content-Type {ct:?}, not application/json"));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("body is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("body is not a JSON object".into());
    }
    Ok(v)
}

fn need_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    match v.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("{field} is empty")),
        Some(_) => Err(format!("{field} is not a string")),
        None => Err(format!("{field} is required")),
    }
}

fn opt_type(v: &Value, field: &str, ok: fn(&Value) -> bool, what: &str) -> Result<(), String> {
    match v.get(field) {
        None => Ok(()),
        Some(x) if ok(x) => Ok(()),
        Some(_) => Err(format!("{field} must be {what}")),
    }
}

fn string_array(x: &Value) -> bool {
    x.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}

/// DigitalOcean's region slugs (openapi `shared/attributes/region_slug.yml`).
pub const DO_REGIONS: &[&str] = &[
    "ams1", "ams2", "ams3", "blr1", "fra1", "lon1", "nyc1", "nyc2", "nyc3", "sfo1", "sfo2", "sfo3",
    "sgp1", "tor1", "syd1",
];

/// How the DigitalOcean mock behaves.
#[derive(Clone, Default)]
pub struct DoScript {
    /// Statuses the image goes through on each GET (the last repeats).
    pub statuses: Vec<&'static str>,
    /// Answer the first POST with 429 + Retry-After.
    pub first_post_429: bool,
    /// Answer the first POST with 500 (after creating the image, as a
    /// proxy timing out would: a client must not POST again).
    pub first_post_500: bool,
    /// The importer fetches `url` (GET, as DigitalOcean's importer does)
    /// when the image is created, and keeps the bytes.
    pub fetch: bool,
}

/// DigitalOcean API: `POST /v2/images`, `GET /v2/images/{id}`,
/// `POST /v2/images/{id}/actions`, `GET /v2/images/{id}/actions/{aid}`,
/// `DELETE /v2/images/{id}`.
pub fn digitalocean(script: DoScript) -> Mock {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(None));
    let (v, rec) = (violations.clone(), received.clone());
    let polls = AtomicUsize::new(0);
    let posts = AtomicUsize::new(0);
    let fetch_error = Arc::new(Mutex::new(String::new()));
    let server = Server::start(move |r: &Req| {
        let unauthorized = || {
            Resp::json(
                401,
                json!({"id": "unauthorized", "message": "Unable to authenticate you"}),
            )
        };
        if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return violation(&v, r, "no or wrong Bearer token", unauthorized());
        }
        let unprocessable = |msg: String| {
            violation(
                &v,
                r,
                &msg,
                Resp::json(422, json!({"id": "unprocessable_entity", "message": msg})),
            )
        };
        let path = r.path.split('?').next().unwrap_or("");
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (r.method.as_str(), parts.as_slice()) {
            ("POST", ["v2", "images"]) => {
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(e) => return unprocessable(e),
                };
                let check = || -> Result<(), String> {
                    need_str(&body, "name")?;
                    let url = need_str(&body, "url")?;
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err("url is not an http(s) URL".into());
                    }
                    let region = need_str(&body, "region")?;
                    if !DO_REGIONS.contains(&region) {
                        return Err(format!("region {region} is not a region slug"));
                    }
                    opt_type(&body, "distribution", Value::is_string, "a string")?;
                    opt_type(&body, "description", Value::is_string, "a string")?;
                    opt_type(&body, "tags", string_array, "an array of strings")?;
                    Ok(())
                };
                if let Err(e) = check() {
                    return unprocessable(e);
                }
                if script.first_post_429 && posts.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Resp::json(
                        429,
                        json!({"id": "too_many_requests", "message": "API rate limit exceeded."}),
                    )
                    .with_header("retry-after", "1");
                }
                if script.first_post_500 && posts.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Resp::json(
                        500,
                        json!({"id": "server_error", "message": "Server Error"}),
                    );
                }
                if script.fetch {
                    let url = body["url"].as_str().unwrap_or("").to_owned();
                    match fetch(&url) {
                        Ok(bytes) => *rec.lock().unwrap() = Some(bytes),
                        Err(e) => *fetch_error.lock().unwrap() = e,
                    }
                }
                Resp::json(
                    202,
                    json!({"image": {"id": 38413969, "name": body["name"], "status": "NEW",
                        "distribution": body.get("distribution").cloned().unwrap_or(json!("Unknown")),
                        "error_message": "", "regions": [], "type": "custom"}}),
                )
            }
            ("GET", ["v2", "images", "38413969"]) => {
                let i = polls.fetch_add(1, Ordering::SeqCst);
                let statuses = if script.statuses.is_empty() {
                    vec!["available"]
                } else {
                    script.statuses.clone()
                };
                let mut status = statuses[i.min(statuses.len() - 1)];
                let mut err = if status == "deleted" {
                    "We had a problem decompressing your file.".to_owned()
                } else {
                    String::new()
                };
                let fe = fetch_error.lock().unwrap().clone();
                if !fe.is_empty() {
                    status = "deleted";
                    err = format!("could not fetch the URL: {fe}");
                }
                Resp::json(
                    200,
                    json!({"image": {"id": 38413969, "status": status, "error_message": err, "regions": ["nyc3"]}}),
                )
            }
            ("POST", ["v2", "images", "38413969", "actions"]) => {
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(e) => return unprocessable(e),
                };
                if body.get("type") != Some(&json!("transfer")) {
                    return unprocessable("type must be transfer or convert".into());
                }
                match need_str(&body, "region") {
                    Ok(reg) if DO_REGIONS.contains(&reg) => Resp::json(
                        201,
                        json!({"action": {"id": 7, "status": "in-progress", "type": "transfer",
                            "resource_id": 38413969, "resource_type": "image", "region_slug": reg}}),
                    ),
                    Ok(reg) => unprocessable(format!("region {reg} is not a region slug")),
                    Err(e) => unprocessable(e),
                }
            }
            ("GET", ["v2", "images", "38413969", "actions", "7"]) => Resp::json(
                200,
                json!({"action": {"id": 7, "status": "completed", "type": "transfer"}}),
            ),
            ("DELETE", ["v2", "images", "38413969"]) => Resp::Reply(204, vec![], vec![]),
            _ => violation(
                &v,
                r,
                "no such endpoint",
                Resp::json(
                    404,
                    json!({"id": "not_found", "message": "The resource you were accessing could not be found."}),
                ),
            ),
        }
    });
    Mock {
        server,
        violations,
        received,
    }
}

/// The importer's fetch: a plain GET of the whole URL (no credentials).
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    if resp.status().as_u16() != 200 {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    resp.body_mut()
        .with_config()
        .limit(1 << 32)
        .read_to_vec()
        .map_err(|e| e.to_string())
}

/// Linode's regions for the mock: `us-east` is a core region with Object
/// Storage; `us-edge` exists without it.
const LINODE_REGIONS: &[(&str, bool)] = &[("us-east", true), ("us-ord", true), ("us-edge", false)];

/// How the Linode mock behaves.
#[derive(Clone, Default)]
pub struct LinodeScript {
    /// PUTs to answer with 500 before one succeeds.
    pub put_failures: usize,
    /// Drop the connection instead of answering 500.
    pub drop_put: bool,
    /// The image disappears while processing (a failed upload).
    pub deleted: bool,
}

fn linode_error(status: u16, reason: &str, field: Option<&str>) -> Resp {
    let mut e = json!({"reason": reason});
    if let Some(f) = field {
        e["field"] = json!(f);
    }
    Resp::json(status, json!({"errors": [e]}))
}

/// Linode API v4: `GET /v4/regions/{id}`, `POST /v4/images/upload`,
/// `PUT {upload_to}`, `GET /v4/images/{id}`, `DELETE /v4/images/{id}`.
pub fn linode(script: LinodeScript) -> Mock {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(None));
    let (v, rec) = (violations.clone(), received.clone());
    let puts = AtomicUsize::new(0);
    let polls = AtomicUsize::new(0);
    let deleted = Arc::new(Mutex::new(false));
    let base = Arc::new(Mutex::new(String::new()));
    let base2 = base.clone();
    let server = Server::start(move |r: &Req| {
        let path = r.path.split('?').next().unwrap_or("").to_owned();
        // The presigned upload URL: no credentials, octet-stream.
        if path == "/upload/abc" {
            if r.method != "PUT" {
                return violation(
                    &v,
                    r,
                    "upload_to takes PUT",
                    Resp::Reply(405, vec![], vec![]),
                );
            }
            if r.header("authorization").is_some() {
                return violation(
                    &v,
                    r,
                    "credentials sent to the presigned URL",
                    Resp::Reply(400, vec![], b"<Error>InvalidArgument</Error>".to_vec()),
                );
            }
            if r.header("content-type") != Some("application/octet-stream") {
                return violation(
                    &v,
                    r,
                    "Content-Type is not application/octet-stream",
                    Resp::Reply(
                        403,
                        vec![],
                        b"<Error>SignatureDoesNotMatch</Error>".to_vec(),
                    ),
                );
            }
            if !r.path.contains("X-Amz-Signature=") {
                return violation(&v, r, "signature missing", Resp::Reply(403, vec![], vec![]));
            }
            let n = puts.fetch_add(1, Ordering::SeqCst);
            if n < script.put_failures {
                return if script.drop_put {
                    Resp::Drop
                } else {
                    Resp::json(500, json!({}))
                };
            }
            *rec.lock().unwrap() = Some(r.body.clone());
            return Resp::Reply(200, vec![], vec![]);
        }
        if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return violation(
                &v,
                r,
                "no or wrong Bearer token",
                linode_error(401, "Invalid Token", None),
            );
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (r.method.as_str(), parts.as_slice()) {
            ("GET", ["v4", "regions", id]) => match LINODE_REGIONS.iter().find(|(n, _)| n == id) {
                Some((n, obj)) => {
                    let mut caps = vec!["Linodes", "Block Storage"];
                    if *obj {
                        caps.push("Object Storage");
                    }
                    Resp::json(200, json!({"id": n, "capabilities": caps, "status": "ok"}))
                }
                None => linode_error(404, "Not found", None),
            },
            ("POST", ["v4", "images", "upload"]) => {
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(e) => return violation(&v, r, &e, linode_error(400, &e, None)),
                };
                let check = || -> Result<(), (String, &'static str)> {
                    let label = need_str(&body, "label").map_err(|e| (e, "label"))?;
                    let n = label.chars().count();
                    if n > 50
                        || label
                            .chars()
                            .any(|c| !(c.is_ascii_alphanumeric() || ",.?-_ '".contains(c)))
                    {
                        return Err((
                            "Label must be 1-50 characters of letters, digits and ,.?-_' ".into(),
                            "label",
                        ));
                    }
                    let region = need_str(&body, "region").map_err(|e| (e, "region"))?;
                    if !LINODE_REGIONS.iter().any(|(n, o)| *n == region && *o) {
                        return Err((format!("region {region} does not take uploads"), "region"));
                    }
                    opt_type(&body, "cloud_init", Value::is_boolean, "a boolean")
                        .map_err(|e| (e, "cloud_init"))?;
                    opt_type(&body, "description", Value::is_string, "a string")
                        .map_err(|e| (e, "description"))?;
                    opt_type(&body, "tags", string_array, "an array of strings")
                        .map_err(|e| (e, "tags"))?;
                    if let Some(t) = body["tags"].as_array()
                        && t.iter().any(|t| {
                            let n = t.as_str().unwrap_or("").chars().count();
                            !(3..=100).contains(&n)
                        })
                    {
                        return Err(("Tags must be 3-100 characters".into(), "tags"));
                    }
                    Ok(())
                };
                if let Err((e, field)) = check() {
                    return violation(&v, r, &e, linode_error(400, &e, Some(field)));
                }
                let upload_to = format!(
                    "{}/upload/abc?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=LINODEKEY%2F20261129&X-Amz-Signature=deadbeefSIGNATURE",
                    base2.lock().unwrap()
                );
                Resp::json(
                    200,
                    json!({"upload_to": upload_to, "image": {"id": "private/42", "status": "pending_upload",
                        "label": body["label"], "capabilities": if body["cloud_init"] == json!(true) { json!(["cloud-init"]) } else { json!([]) }}}),
                )
            }
            ("GET", ["v4", "images", "private", "42"]) => {
                if *deleted.lock().unwrap() {
                    return linode_error(404, "Not found", None);
                }
                let i = polls.fetch_add(1, Ordering::SeqCst);
                if script.deleted && i >= 1 {
                    return linode_error(404, "Not found", None);
                }
                let status = ["pending_upload", "creating", "available"][i.min(2)];
                Resp::json(200, json!({"id": "private/42", "status": status}))
            }
            ("DELETE", ["v4", "images", "private", "42"]) => {
                *deleted.lock().unwrap() = true;
                Resp::json(200, json!({}))
            }
            _ => violation(
                &v,
                r,
                "no such endpoint",
                linode_error(404, "Not found", None),
            ),
        }
    });
    *base.lock().unwrap() = server.base.clone();
    Mock {
        server,
        violations,
        received,
    }
}

/// How the KakaoCloud mock behaves.
#[derive(Clone)]
pub struct KakaoScript {
    /// Tokens expire at once (renewed before every use).
    pub expires_soon: bool,
    /// The final image status.
    pub end_status: &'static str,
}

/// KakaoCloud: IAM `POST /identity/v3/auth/tokens`, volume
/// `POST /api/v1/volumes/{id}/image`, image `GET /api/v1/images/{id}`. One
/// server plays all three services.
pub fn kakaocloud(script: KakaoScript) -> Mock {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let v = violations.clone();
    let issued: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let polls = AtomicUsize::new(0);
    let server = Server::start(move |r: &Req| {
        let path = r.path.split('?').next().unwrap_or("").to_owned();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let unauthorized = || {
            Resp::json(
                401,
                json!({"code": 401, "message": "The request you have made requires authentication."}),
            )
        };
        if r.method == "POST" && parts == ["identity", "v3", "auth", "tokens"] {
            let body = match json_body(r) {
                Ok(b) => b,
                Err(e) => return violation(&v, r, &e, Resp::json(400, json!({"message": e}))),
            };
            let ident = &body["auth"]["identity"];
            if ident["methods"] != json!(["application_credential"]) {
                return violation(
                    &v,
                    r,
                    "methods must be [application_credential]",
                    unauthorized(),
                );
            }
            let cred = &ident["application_credential"];
            if cred["id"] != KC_ID || cred["secret"] != KC_SECRET {
                return violation(&v, r, "wrong application credential", unauthorized());
            }
            let n = issued.lock().unwrap().len();
            let token = format!("gAAAA-kc-token-{n}-SECRETTOKEN");
            issued.lock().unwrap().push(token.clone());
            let exp = if script.expires_soon {
                "2000-01-01T00:00:00Z"
            } else {
                "2999-01-01T00:00:00Z"
            };
            return Resp::json(
                201,
                json!({"token": {"expires_at": exp, "methods": ["application_credential"]}}),
            )
            .with_header("X-Subject-Token", &token);
        }
        let token_ok = r
            .header("x-auth-token")
            .is_some_and(|t| issued.lock().unwrap().iter().any(|i| i == t));
        if !token_ok {
            return violation(&v, r, "no or unknown X-Auth-Token", unauthorized());
        }
        match (r.method.as_str(), parts.as_slice()) {
            ("POST", ["api", "v1", "volumes", "vol-1", "image"]) => {
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(e) => return violation(&v, r, &e, Resp::json(400, json!({"message": e}))),
                };
                let image = &body["image"];
                if let Err(e) = need_str(image, "name")
                    .and_then(|_| opt_type(image, "description", Value::is_string, "a string"))
                {
                    return violation(
                        &v,
                        r,
                        &format!("image.{e}"),
                        Resp::json(400, json!({"message": e})),
                    );
                }
                Resp::json(
                    202,
                    json!({"image": {"id": "img-9", "name": image["name"]}}),
                )
            }
            ("GET", ["api", "v1", "images", "img-9"]) => {
                let i = polls.fetch_add(1, Ordering::SeqCst);
                if i == 0 {
                    return Resp::json(429, json!({})).with_header("Retry-After", "0");
                }
                let status = if i >= 3 { script.end_status } else { "saving" };
                Resp::json(
                    200,
                    json!({"image": {"id": "img-9", "status": status, "os_info": {"type": "linux"}}}),
                )
            }
            _ => violation(
                &v,
                r,
                "no such endpoint",
                Resp::json(404, json!({"message": "not found"})),
            ),
        }
    });
    Mock {
        server,
        violations,
        received: Arc::new(Mutex::new(None)),
    }
}

/// An image host for DigitalOcean's URL import: answers HEAD (or refuses
/// it) and GET with `body`.
pub fn image_host(head_ok: bool, body: Vec<u8>) -> Server {
    Server::start(move |r: &Req| match (r.method.as_str(), head_ok) {
        ("HEAD", true) => Resp::Reply(
            200,
            vec![("Content-Length".into(), body.len().to_string())],
            vec![],
        ),
        ("HEAD", false) => Resp::json(405, json!({"message": "HEAD not allowed"})),
        ("GET", _) => match r.header("range").and_then(parse_range) {
            Some((a, b)) if a < body.len() as u64 => {
                let b = b.min(body.len() as u64 - 1);
                let (a, b) = (usize::try_from(a).unwrap(), usize::try_from(b).unwrap());
                Resp::Reply(
                    206,
                    vec![(
                        "Content-Range".into(),
                        format!("bytes {a}-{b}/{}", body.len()),
                    )],
                    body[a..=b].to_vec(),
                )
            }
            Some(_) => Resp::Reply(416, vec![], vec![]),
            None => Resp::Reply(200, vec![], body.clone()),
        },
        _ => Resp::json(405, json!({})),
    })
}

/// `bytes=A-B` or `bytes=A-`.
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let a = a.parse().ok()?;
    let b = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().ok()?
    };
    Some((a, b))
}
