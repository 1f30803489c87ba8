//! Linode (Akamai) image upload.
//!
//! Two steps (providers.md §2.2): `POST /v4/images/upload` with the label,
//! region and flags returns an image (`pending_upload`) and an `upload_to`
//! URL; the raw-disk `.img.gz` is then `PUT` there as
//! `application/octet-stream` without credentials. The image goes
//! `pending_upload → creating → available`; a failed one is deleted (the
//! reason is in the account events). Linode takes only gzip-compressed raw
//! images: at most 5 GB compressed and 6 GB uncompressed.
//!
//! `upload_to` is a presigned URL: it is a credential for 24 hours and is
//! never printed (errors carry it redacted). A PUT that fails for good
//! leaves a `pending_upload` image behind, which this module deletes.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::api::Step;
use crate::{Api, Auth, Event, Flow, UploadError, base_url, token_from_env};

/// Default API base (override with `IMGCHECK_LINODE_API_URL`).
pub const DEFAULT_API: &str = "https://api.linode.com";
/// Token variables (linodego/Terraform, linode-cli).
pub const TOKEN_VARS: &[&str] = &["LINODE_TOKEN", "LINODE_CLI_TOKEN"];
/// Largest compressed upload (linode-cli checks 5 GiB).
pub const MAX_COMPRESSED: u64 = 5 * 1024 * 1024 * 1024;
/// Largest uncompressed image ("Maximum image size is 6GB").
pub const MAX_UNCOMPRESSED: u64 = 6 * 1024 * 1024 * 1024;

/// The oldest cloud-init taken to support Linode's Metadata service (the
/// `cloud_init` capability of an uploaded image). The Akamai datasource it
/// needs is in cloud-init's docs from the 23.3 series on
/// (<https://docs.cloud-init.io/en/23.3.3/reference/datasources/akamai.html>,
/// found with the search tool), and Linode's guide "Using Metadata and
/// cloud-init on any distribution" names 23.3.1 (providers.md, Additions;
/// which point release first had it is UNCONFIRMED, so the later one is
/// used). An older cloud-init cannot read the Metadata service, so the image
/// is uploaded with `cloud_init: false` unless the user overrides it.
pub const MIN_CLOUD_INIT_FOR_METADATA: &str = "23.3.1";

/// An image upload.
#[derive(Debug, Clone, Default)]
pub struct UploadRequest {
    /// Image label.
    pub label: String,
    /// Region (a core region with Object Storage).
    pub region: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether the image supports cloud-init (Linode's Metadata service).
    pub cloud_init: bool,
}

/// What a finished upload returns.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The image object: `available`, or as the provider last showed it
    /// when not waiting.
    pub image: Value,
    /// MD5 of the uploaded bytes, hex (Terraform's `file_hash`).
    pub md5: String,
    /// Bytes sent.
    pub bytes: u64,
}

/// An API client from the environment.
pub fn client_from_env() -> Result<Api, UploadError> {
    let token = token_from_env(TOKEN_VARS)?;
    Ok(Api::new(&api_base(), Auth::Bearer(token)))
}

/// The API base: `IMGCHECK_LINODE_API_URL`, else [`DEFAULT_API`].
pub fn api_base() -> String {
    base_url("IMGCHECK_LINODE_API_URL", DEFAULT_API)
}

/// Checks a label as Linode's API does: 1 to 50 characters, each a letter,
/// a digit or one of `,.?-_ '` (linode/manager
/// `packages/validation/src/images.schema.ts`; providers.md, Additions).
pub fn validate_label(label: &str) -> Result<(), String> {
    let n = label.chars().count();
    if n == 0 || n > 50 {
        return Err(format!(
            "label {label:?} has {n} characters; Linode takes 1 to 50"
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ",.?-_ '".contains(*c)))
    {
        return Err(format!(
            "label {label:?} contains {c:?}; Linode labels take letters, digits and , . ? - _ ' and spaces"
        ));
    }
    Ok(())
}

/// Checks a tag: 3 to 100 characters (the API reference's tags field).
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let n = tag.chars().count();
    if !(3..=100).contains(&n) {
        return Err(format!(
            "tag {tag:?} has {n} characters; Linode tags take 3 to 100"
        ));
    }
    Ok(())
}

/// A file name split into its stem and its image and compression
/// extensions (`debian-12.2-amd64.img.gz` → `debian-12.2-amd64`,
/// `.img.gz`); dots inside the stem are kept.
pub fn split_extensions(file_name: &str) -> (&str, &str) {
    let mut stem = file_name;
    loop {
        let lower = stem.to_ascii_lowercase();
        let ext = [
            ".gz", ".bz2", ".xz", ".img", ".raw", ".qcow2", ".vhdx", ".vdi", ".vmdk", ".vhd",
        ]
        .iter()
        .find(|e| lower.ends_with(*e) && lower.len() > e.len());
        match ext {
            Some(e) => stem = &stem[..stem.len() - e.len()],
            None => break,
        }
    }
    file_name.split_at(stem.len())
}

/// A label made from a file name: its stem ([`split_extensions`]), with
/// characters Linode refuses replaced by `-`, cut to 50.
pub fn default_label(file_name: &str) -> String {
    let label: String = split_extensions(file_name)
        .0
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ",.?-_ '".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    if label.is_empty() {
        "image".into()
    } else {
        label
    }
}

/// The body of `POST /v4/images/upload`.
pub fn request_body(req: &UploadRequest) -> Value {
    let mut body =
        json!({ "label": req.label, "region": req.region, "cloud_init": req.cloud_init });
    if let Some(d) = &req.description {
        body["description"] = json!(d);
    }
    if !req.tags.is_empty() {
        body["tags"] = json!(req.tags);
    }
    body
}

/// Validates the request before anything is sent or converted.
pub fn validate(req: &UploadRequest) -> Result<(), UploadError> {
    validate_label(&req.label).map_err(UploadError::Invalid)?;
    for t in &req.tags {
        validate_tag(t).map_err(UploadError::Invalid)?;
    }
    if req.region.trim().is_empty() {
        return Err(UploadError::Invalid("--region is empty".into()));
    }
    Ok(())
}

/// Asks the API whether `region` exists and takes uploads (`GET
/// /v4/regions/{id}`), before anything is converted. Uploads go to core
/// regions with Object Storage (providers.md §2.1).
pub fn check_region(api: &Api, region: &str) -> Result<(), UploadError> {
    let url = api.url(&format!("/v4/regions/{region}"));
    match api.json("GET", &url, None) {
        Ok(r) => {
            let caps: Vec<&str> = r
                .json
                .get("capabilities")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !caps.is_empty() && !caps.contains(&"Object Storage") {
                return Err(UploadError::Invalid(format!(
                    "Linode region {region} has no Object Storage; image uploads go to a core region that has it"
                )));
            }
            Ok(())
        }
        Err(UploadError::Http { status: 404, .. }) => Err(UploadError::Invalid(format!(
            "Linode has no region {region:?} (see `linode-cli regions list`)"
        ))),
        Err(e) => Err(e),
    }
}

/// The requests an upload sends, for `--dry-run` (no credentials needed).
pub fn plan(req: &UploadRequest, file: &str, size: Option<u64>) -> Vec<String> {
    let api = Api::new(&api_base(), Auth::Bearer(crate::Secret::new("")));
    let len = size.map_or("size known after conversion".to_owned(), |n| {
        format!("Content-Length: {n}")
    });
    vec![
        api.describe(
            "GET",
            &api.url(&format!("/v4/regions/{}", req.region)),
            None,
        ),
        api.describe(
            "POST",
            &api.url("/v4/images/upload"),
            Some(&request_body(req)),
        ),
        format!("PUT {{upload_to}} [Content-Type: application/octet-stream, {len}] <{file}>"),
        api.describe("GET", &api.url("/v4/images/{id}"), None) + " (until status is available)",
    ]
}

/// Uploads `gz` (a gzip-compressed raw image of `uncompressed` bytes) and,
/// unless `flow.wait` is false, waits for the image to become `available`.
/// A PUT that fails for good deletes the `pending_upload` image it was for.
pub fn upload(
    api: &Api,
    req: &UploadRequest,
    gz: &Path,
    uncompressed: u64,
    flow: &Flow<'_>,
) -> Result<Uploaded, UploadError> {
    validate(req)?;
    let size = std::fs::metadata(gz)
        .map_err(|source| UploadError::Io {
            path: gz.display().to_string(),
            source,
        })?
        .len();
    if size > MAX_COMPRESSED {
        return Err(UploadError::Refused(format!(
            "{}: {size} bytes compressed; Linode accepts at most {MAX_COMPRESSED} (5 GB)",
            gz.display()
        )));
    }
    if uncompressed > MAX_UNCOMPRESSED {
        return Err(UploadError::Refused(format!(
            "{}: {uncompressed} bytes uncompressed; Linode accepts at most {MAX_UNCOMPRESSED} (6 GB)",
            gz.display()
        )));
    }
    let create = api.url("/v4/images/upload");
    let reply = api.json("POST", &create, Some(&request_body(req)))?;
    let upload_to = reply
        .json
        .get("upload_to")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let image = reply.json.get("image").cloned().unwrap_or(Value::Null);
    let id = image.get("id").and_then(Value::as_str).map(str::to_owned);
    let (Some(upload_to), Some(id)) = (upload_to, id) else {
        return Err(UploadError::Protocol {
            url: create,
            message: "reply lacks upload_to or image.id".into(),
        });
    };
    (flow.events)(Event::Status(&format!(
        "Linode image {id} created (pending_upload); uploading {size} bytes"
    )));
    let (md5, bytes) = match put_file(api, &upload_to, gz, size, flow) {
        Ok(v) => v,
        Err(e) => return Err(delete_pending(api, &id, e)),
    };
    if !flow.wait {
        return Ok(Uploaded { image, md5, bytes });
    }
    let get = api.url(&format!("/v4/images/{id}"));
    let image = api.poll(&format!("Linode image {id}"), flow.poll, || {
        match api.json("GET", &get, None) {
            Ok(r) => {
                let status = r.json.get("status").and_then(Value::as_str).unwrap_or("").to_owned();
                (flow.events)(Event::Status(&format!("Linode image {id}: {status}")));
                Ok(((status == "available").then(|| r.json.clone()), status))
            }
            Err(UploadError::Http { status: 404, .. }) => Err(UploadError::Provider {
                provider: "Linode",
                id: id.clone(),
                message: "the image was deleted while processing (see GET /v4/account/events for the reason)".into(),
            }),
            Err(e) => Err(e),
        }
    })?;
    Ok(Uploaded { image, md5, bytes })
}

/// Deletes the `pending_upload` image a failed PUT leaves behind, and
/// returns the PUT's error; when the delete fails too, the error says which
/// image to delete and how.
fn delete_pending(api: &Api, id: &str, put_error: UploadError) -> UploadError {
    let url = api.url(&format!("/v4/images/{id}"));
    match api.json("DELETE", &url, None) {
        Ok(_) => UploadError::Cleanup {
            error: Box::new(put_error),
            note: format!("the pending_upload image {id} was deleted"),
        },
        Err(e) => UploadError::Cleanup {
            error: Box::new(put_error),
            note: format!(
                "the pending_upload image {id} is left behind ({e}); delete it with `linode-cli images delete {id}`"
            ),
        },
    }
}

/// PUTs the file to the presigned `upload_to` URL (no credentials), with
/// the shared retry policy (PUT is idempotent). Each retry re-reads the file
/// from the start, so the MD5 is that of the attempt that succeeded,
/// computed on the way out.
fn put_file(
    api: &Api,
    upload_to: &str,
    gz: &Path,
    size: u64,
    flow: &Flow<'_>,
) -> Result<(String, u64), UploadError> {
    let mut host = Api::new("", Auth::None);
    host.retry = api.retry.clone();
    let headers = [
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Content-Length", size.to_string()),
    ];
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let file = File::open(gz).map_err(|source| UploadError::Io {
            path: gz.display().to_string(),
            source,
        })?;
        let mut reader = HashingReader {
            inner: file,
            digest: Md5::new(),
            sent: 0,
            total: size,
            events: flow.events,
        };
        let result = host.once(
            "PUT",
            upload_to,
            &headers,
            ureq::SendBody::from_reader(&mut reader),
            false,
        )?;
        match host.next_step("PUT", upload_to, result, attempt)? {
            Step::Done(_) => {
                let (md5, bytes) = (format!("{:x}", reader.digest.finalize()), reader.sent);
                if bytes != size {
                    return Err(UploadError::Protocol {
                        url: imgcheck_source::net::redact_url(upload_to),
                        message: format!(
                            "sent {bytes} bytes but the file has {size}: it changed during the upload"
                        ),
                    });
                }
                return Ok((md5, bytes));
            }
            Step::RetryAfter(wait) => std::thread::sleep(wait),
        }
    }
}

/// Reads the file, hashing and counting what goes out.
struct HashingReader<'a> {
    inner: File,
    digest: Md5,
    sent: u64,
    total: u64,
    events: &'a (dyn Fn(Event<'_>) + Sync),
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.sent += n as u64;
        (self.events)(Event::Sent {
            done: self.sent,
            total: self.total,
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            default_label("debian-12.2-amd64.img.gz"),
            "debian-12.2-amd64"
        );
        assert_eq!(default_label("disk.qcow2"), "disk");
        assert_eq!(default_label("a+b.img"), "a-b");
        assert_eq!(default_label(&"x".repeat(80)).len(), 50);
        assert!(validate_label("debian-12.2 amd64, v1?").is_ok());
        assert!(validate_label("").is_err());
        assert!(validate_label(&"x".repeat(51)).is_err());
        assert!(validate_label("a/b").is_err());
        assert!(validate_tag("ab").is_err());
        assert!(validate_tag("abc").is_ok());
    }
}
