//! DigitalOcean custom images: import from a URL.
//!
//! DigitalOcean has no byte-upload endpoint: `POST /v2/images` with
//! `{name, url, region, ...}` returns 202 and an image in status `NEW`; the
//! importer then fetches the URL (its host must answer HEAD) and the image
//! becomes `available`, or `deleted` with `error_message` set
//! (providers.md §1.2). A local file goes through a Spaces bucket first
//! ([`crate::spaces`]); the URL given to the importer is then a presigned
//! GET, which S3-style servers refuse to HEAD, so [`preflight_url`] accepts
//! a ranged GET for it instead.
//!
//! After the import, `--regions` copies the image with one `transfer`
//! action per region (`POST /v2/images/{id}/actions`), as Packer's
//! `image_regions` does.

use serde_json::{Value, json};

use crate::{Api, Auth, Event, Flow, UploadError, base_url, token_from_env};

/// Default API base (override with `IMGCHECK_DIGITALOCEAN_API_URL`).
pub const DEFAULT_API: &str = "https://api.digitalocean.com";
/// Token variables, in the order doctl and Terraform read them.
pub const TOKEN_VARS: &[&str] = &["DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN"];

/// DigitalOcean's `distribution` values (openapi
/// `shared/attributes/distribution.yml`; providers.md §1, fact 4). Any other
/// value is stored as `Unknown`, so a user's value is checked against this.
pub const DISTRIBUTIONS: &[&str] = &[
    "Arch Linux",
    "CentOS",
    "CoreOS",
    "Debian",
    "Fedora",
    "Fedora Atomic",
    "FreeBSD",
    "Gentoo",
    "openSUSE",
    "RancherOS",
    "Rocky Linux",
    "Ubuntu",
    "Unknown",
];

/// A URL import.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    /// Image name.
    pub name: String,
    /// Where DigitalOcean fetches the image.
    pub url: String,
    /// Region slug (e.g. `nyc3`).
    pub region: String,
    /// Distribution (one of [`DISTRIBUTIONS`]).
    pub distribution: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Further regions to transfer the image to once it is available.
    pub regions: Vec<String>,
    /// The URL is presigned for GET (HEAD is refused by design): the
    /// preflight uses a ranged GET.
    pub presigned: bool,
}

/// An API client from the environment.
pub fn client_from_env() -> Result<Api, UploadError> {
    let token = token_from_env(TOKEN_VARS)?;
    Ok(Api::new(&api_base(), Auth::Bearer(token)))
}

/// The API base: `IMGCHECK_DIGITALOCEAN_API_URL`, else [`DEFAULT_API`].
pub fn api_base() -> String {
    base_url("IMGCHECK_DIGITALOCEAN_API_URL", DEFAULT_API)
}

/// DigitalOcean's distribution for an os-release `ID`, `Unknown` when it has
/// none.
pub fn distribution_for_os(os_id: &str) -> &'static str {
    match os_id.to_ascii_lowercase().as_str() {
        "arch" | "archarm" => "Arch Linux",
        "centos" => "CentOS",
        // Flatcar is the continuation of CoreOS Container Linux.
        "coreos" | "flatcar" => "CoreOS",
        "debian" => "Debian",
        "fedora" => "Fedora",
        "freebsd" => "FreeBSD",
        "gentoo" => "Gentoo",
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "opensuse-microos" => "openSUSE",
        "rancheros" => "RancherOS",
        "rocky" => "Rocky Linux",
        "ubuntu" => "Ubuntu",
        _ => "Unknown",
    }
}

/// A user's distribution, matched case-insensitively to [`DISTRIBUTIONS`];
/// an error listing them otherwise (DigitalOcean would silently store
/// `Unknown`).
pub fn validate_distribution(value: &str) -> Result<&'static str, UploadError> {
    DISTRIBUTIONS
        .iter()
        .find(|d| d.eq_ignore_ascii_case(value.trim()))
        .copied()
        .ok_or_else(|| {
            UploadError::Invalid(format!(
                "DigitalOcean has no distribution {value:?}; use one of: {}",
                DISTRIBUTIONS.join(", ")
            ))
        })
}

/// Validates the request before anything is sent.
pub fn validate(req: &ImportRequest) -> Result<(), UploadError> {
    if req.name.trim().is_empty() {
        return Err(UploadError::Invalid("--name is empty".into()));
    }
    for r in std::iter::once(&req.region).chain(&req.regions) {
        let ok = !r.is_empty()
            && r.len() <= 8
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(UploadError::Invalid(format!(
                "{r:?} is not a DigitalOcean region slug (like nyc3, ams3, sgp1)"
            )));
        }
    }
    if let Some(d) = &req.distribution {
        validate_distribution(d)?;
    }
    Ok(())
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

/// The requests an import sends, for `--dry-run` (no credentials needed).
pub fn plan(req: &ImportRequest) -> Vec<String> {
    let api = Api::new(&api_base(), Auth::Bearer(crate::Secret::new("")));
    let mut lines = vec![
        if req.presigned {
            format!(
                "GET {} [Range: bytes=0-0] (a presigned URL refuses HEAD)",
                crate::redact_url(&req.url)
            )
        } else {
            format!("HEAD {}", crate::redact_url(&req.url))
        },
        api.describe("POST", &api.url("/v2/images"), Some(&request_body(req))),
        api.describe("GET", &api.url("/v2/images/{id}"), None) + " (until status is available)",
    ];
    for r in &req.regions {
        lines.push(api.describe(
            "POST",
            &api.url("/v2/images/{id}/actions"),
            Some(&json!({"type": "transfer", "region": r})),
        ));
    }
    lines
}

/// Checks the image URL the way DigitalOcean's importer will fetch it:
/// HEAD must succeed (a CDN that refuses HEAD makes the import fail). A
/// presigned GET URL refuses HEAD by design (the signature covers the
/// method), so for one a `GET` of the first byte must succeed instead.
/// Returns the size when the server gives one.
pub fn preflight_url(
    url: &str,
    presigned: bool,
    retry: &crate::RetryPolicy,
) -> Result<Option<u64>, UploadError> {
    let mut host = Api::new("", Auth::None);
    host.retry = retry.clone();
    let shown = crate::redact_url(url);
    if presigned {
        let reply = host
            .send(
                "GET",
                url,
                &[("Range", "bytes=0-0".to_owned())],
                || Ok(Vec::new()),
                false,
            )
            .map_err(|e| match e {
                UploadError::Http { status, .. } => UploadError::Refused(format!(
                    "{shown}: a ranged GET answered HTTP {status}; DigitalOcean's importer could not fetch the image"
                )),
                other => other,
            })?;
        return Ok(reply
            .header("content-range")
            .and_then(|v| v.rsplit('/').next()?.trim().parse().ok()));
    }
    let reply = host
        .send("HEAD", url, &[], || Ok(Vec::new()), false)
        .map_err(|e| match e {
            UploadError::Http { status, .. } => UploadError::Refused(format!(
                "{shown}: HEAD answered HTTP {status}; DigitalOcean's importer needs HEAD to work on the image host"
            )),
            other => other,
        })?;
    Ok(reply.header("content-length").and_then(|v| v.parse().ok()))
}

fn image_id(v: &Value) -> Option<String> {
    v.as_u64()
        .map(|n| n.to_string())
        .or_else(|| v.as_str().map(str::to_owned))
}

/// Imports the image and, when `flow.wait`, waits until it is `available`
/// and transfers it to `req.regions`. Returns the last image object seen.
pub fn import(api: &Api, req: &ImportRequest, flow: &Flow<'_>) -> Result<Value, UploadError> {
    validate(req)?;
    preflight_url(&req.url, req.presigned, &api.retry)?;
    let create = api.url("/v2/images");
    let reply = api.json("POST", &create, Some(&request_body(req)))?;
    let image = reply.json.get("image").cloned().unwrap_or(Value::Null);
    let id = image
        .get("id")
        .and_then(image_id)
        .ok_or_else(|| UploadError::Protocol {
            url: create.clone(),
            message: "no image.id in the reply".into(),
        })?;
    (flow.events)(Event::Status(&format!(
        "DigitalOcean image {id} created (NEW); DigitalOcean is fetching the URL"
    )));
    if !flow.wait {
        return Ok(image);
    }
    let image = wait_available(api, &id, flow)?;
    for region in &req.regions {
        transfer(api, &id, region, flow)?;
    }
    if req.regions.is_empty() {
        return Ok(image);
    }
    let r = api.json("GET", &api.url(&format!("/v2/images/{id}")), None)?;
    Ok(r.json.get("image").cloned().unwrap_or(image))
}

/// Polls `GET /v2/images/{id}` until `available`; `deleted`/`retired` or an
/// `error_message` is the provider's failure.
pub fn wait_available(api: &Api, id: &str, flow: &Flow<'_>) -> Result<Value, UploadError> {
    let get = api.url(&format!("/v2/images/{id}"));
    api.poll(&format!("DigitalOcean image {id}"), flow.poll, || {
        let r = api.json("GET", &get, None)?;
        let image = r.json.get("image").cloned().unwrap_or(Value::Null);
        let status = image
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        (flow.events)(Event::Status(&format!("DigitalOcean image {id}: {status}")));
        let error = image
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or("");
        match status.as_str() {
            "available" => Ok((Some(image), status)),
            "deleted" | "retired" => Err(UploadError::Provider {
                provider: "DigitalOcean",
                id: id.to_owned(),
                message: if error.is_empty() {
                    format!("status {status}")
                } else {
                    api.redact(error)
                },
            }),
            _ if !error.is_empty() => Err(UploadError::Provider {
                provider: "DigitalOcean",
                id: id.to_owned(),
                message: api.redact(error),
            }),
            _ => Ok((None, status)),
        }
    })
}

/// Transfers the image to `region` and waits for the action to complete.
fn transfer(api: &Api, id: &str, region: &str, flow: &Flow<'_>) -> Result<(), UploadError> {
    let url = api.url(&format!("/v2/images/{id}/actions"));
    let reply = api.json(
        "POST",
        &url,
        Some(&json!({"type": "transfer", "region": region})),
    )?;
    let action = reply
        .json
        .pointer("/action/id")
        .and_then(image_id)
        .ok_or_else(|| UploadError::Protocol {
            url: url.clone(),
            message: "no action.id in the reply".into(),
        })?;
    let get = api.url(&format!("/v2/images/{id}/actions/{action}"));
    api.poll(
        &format!("transfer of image {id} to {region}"),
        flow.poll,
        || {
            let r = api.json("GET", &get, None)?;
            let status = r
                .json
                .pointer("/action/status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            (flow.events)(Event::Status(&format!(
                "DigitalOcean image {id}: transfer to {region} {status}"
            )));
            match status.as_str() {
                "completed" => Ok((Some(()), status)),
                "errored" => Err(UploadError::Provider {
                    provider: "DigitalOcean",
                    id: id.to_owned(),
                    message: format!("the transfer to {region} errored"),
                }),
                _ => Ok((None, status)),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions() {
        assert_eq!(distribution_for_os("debian"), "Debian");
        assert_eq!(distribution_for_os("rocky"), "Rocky Linux");
        assert_eq!(distribution_for_os("opensuse-leap"), "openSUSE");
        assert_eq!(distribution_for_os("alpine"), "Unknown");
        assert_eq!(validate_distribution("ubuntu").unwrap(), "Ubuntu");
        assert_eq!(validate_distribution("arch linux").unwrap(), "Arch Linux");
        let e = validate_distribution("Debain").unwrap_err().to_string();
        assert!(e.contains("Debian") && e.contains("Debain"), "{e}");
    }
}
