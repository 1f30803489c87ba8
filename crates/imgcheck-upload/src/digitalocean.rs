//! DigitalOcean custom images: import from a URL.
//!
//! DigitalOcean has no byte-upload endpoint: `POST /v2/images` with
//! `{name, url, region, ...}` returns 202 and an image in status `NEW`; the
//! importer then fetches the URL (its host must answer HEAD) and the image
//! becomes `available`, or `deleted` with `error_message` set
//! (providers.md §1.2).

use serde_json::{Value, json};

use crate::{Api, Auth, Outcome, PollOptions, UploadError, base_url, token_from_env};

/// Default API base (override with `IMGCHECK_DIGITALOCEAN_API_URL`).
pub const DEFAULT_API: &str = "https://api.digitalocean.com";
/// Token variables, in the order doctl and Terraform read them.
pub const TOKEN_VARS: &[&str] = &["DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN"];

/// A URL import.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    /// Image name.
    pub name: String,
    /// Where DigitalOcean fetches the image.
    pub url: String,
    /// Region slug (e.g. `nyc3`).
    pub region: String,
    /// Distribution name (DigitalOcean stores unknown values as `Unknown`).
    pub distribution: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// An API client from the environment.
pub fn client_from_env() -> Result<Api, UploadError> {
    let token = token_from_env(TOKEN_VARS)?;
    Ok(Api::new(
        &base_url("IMGCHECK_DIGITALOCEAN_API_URL", DEFAULT_API),
        Auth::Bearer(token),
    ))
}

/// The request body of `POST /v2/images`.
pub fn request_body(req: &ImportRequest) -> Value {
    let mut body = json!({ "name": req.name, "url": req.url, "region": req.region });
    if let Some(d) = &req.distribution {
        body["distribution"] = json!(d);
    }
    if let Some(d) = &req.description {
        body["description"] = json!(d);
    }
    if !req.tags.is_empty() {
        body["tags"] = json!(req.tags);
    }
    body
}

/// Checks the image URL the way DigitalOcean's importer will: HEAD must
/// succeed (a CDN that refuses HEAD makes the import fail). Returns the
/// Content-Length when the server gives one.
pub fn preflight_url(url: &str, retry: &crate::RetryPolicy) -> Result<Option<u64>, UploadError> {
    let mut host = Api::new("", Auth::None);
    host.retry = retry.clone();
    let reply = host.send("HEAD", url, &[], || Ok(Vec::new()), false).map_err(|e| match e {
        UploadError::Http { status, .. } => UploadError::Refused(format!(
            "{url}: HEAD answered HTTP {status}; DigitalOcean's importer needs HEAD to work on the image host"
        )),
        other => other,
    })?;
    Ok(reply.header("content-length").and_then(|v| v.parse().ok()))
}

/// Imports the image and waits until it is `available`.
pub fn import(
    api: &Api,
    req: &ImportRequest,
    poll: &PollOptions,
    dry_run: bool,
) -> Result<Outcome, UploadError> {
    let body = request_body(req);
    let create = api.url("/v2/images");
    if dry_run {
        return Ok(Outcome::DryRun(vec![
            format!("HEAD {}", req.url),
            api.describe("POST", &create, Some(&body)),
            api.describe("GET", &api.url("/v2/images/{id}"), None)
                + " (every "
                + &poll.interval.as_secs().to_string()
                + " s until status is available)",
        ]));
    }
    preflight_url(&req.url, &api.retry)?;
    let reply = api.json("POST", &create, Some(&body))?;
    let id = reply
        .json
        .pointer("/image/id")
        .and_then(|v| {
            v.as_u64()
                .map(|n| n.to_string())
                .or_else(|| v.as_str().map(str::to_owned))
        })
        .ok_or_else(|| UploadError::Protocol {
            url: create.clone(),
            message: "no image.id in the reply".into(),
        })?;
    let get = api.url(&format!("/v2/images/{id}"));
    let image = api.poll(&format!("DigitalOcean image {id}"), poll, || {
        let r = api.json("GET", &get, None)?;
        let image = r.json.get("image").cloned().unwrap_or(Value::Null);
        let status = image
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let error = image
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or("");
        match status.as_str() {
            "available" => Ok((Some(image), status)),
            "deleted" | "retired" => Err(UploadError::Provider {
                provider: "DigitalOcean",
                id: id.clone(),
                message: if error.is_empty() {
                    format!("status {status}")
                } else {
                    api.redact(error)
                },
            }),
            _ if !error.is_empty() => Err(UploadError::Provider {
                provider: "DigitalOcean",
                id: id.clone(),
                message: api.redact(error),
            }),
            _ => Ok((None, status)),
        }
    })?;
    Ok(Outcome::Image(image))
}
