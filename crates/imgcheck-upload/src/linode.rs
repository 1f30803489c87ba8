//! Linode (Akamai) image upload.
//!
//! Two steps (providers.md §2.2): `POST /v4/images/upload` with the label,
//! region and flags returns an image (`pending_upload`) and an `upload_to`
//! URL; the raw-disk `.img.gz` is then `PUT` there as
//! `application/octet-stream` without credentials. The image goes
//! `pending_upload → creating → available`; a failed one is deleted (the
//! reason is in the account events). Linode takes only gzip-compressed raw
//! images: at most 5 GB compressed and 6 GB uncompressed.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::{Api, Auth, Outcome, PollOptions, UploadError, base_url, token_from_env};

/// Default API base (override with `IMGCHECK_LINODE_API_URL`).
pub const DEFAULT_API: &str = "https://api.linode.com";
/// Token variables (linodego/Terraform, linode-cli).
pub const TOKEN_VARS: &[&str] = &["LINODE_TOKEN", "LINODE_CLI_TOKEN"];
/// Largest compressed upload (linode-cli checks 5 GiB).
pub const MAX_COMPRESSED: u64 = 5 * 1024 * 1024 * 1024;
/// Largest uncompressed image ("Maximum image size is 6GB").
pub const MAX_UNCOMPRESSED: u64 = 6 * 1024 * 1024 * 1024;

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
    /// Whether the image supports cloud-init (from the check).
    pub cloud_init: bool,
}

/// What a finished upload returns besides the image.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The image object once `available`.
    pub image: Value,
    /// MD5 of the uploaded bytes, hex (Terraform's `file_hash`).
    pub md5: String,
    /// Bytes sent.
    pub bytes: u64,
}

/// An API client from the environment.
pub fn client_from_env() -> Result<Api, UploadError> {
    let token = token_from_env(TOKEN_VARS)?;
    Ok(Api::new(
        &base_url("IMGCHECK_LINODE_API_URL", DEFAULT_API),
        Auth::Bearer(token),
    ))
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

/// Uploads `gz` (a gzip-compressed raw image of `uncompressed` bytes) and
/// waits for the image to become `available`. `progress` is called with
/// the bytes sent so far.
pub fn upload(
    api: &Api,
    req: &UploadRequest,
    gz: &Path,
    uncompressed: u64,
    poll: &PollOptions,
    dry_run: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Outcome, Option<Uploaded>), UploadError> {
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
    let body = request_body(req);
    let create = api.url("/v4/images/upload");
    if dry_run {
        return Ok((
            Outcome::DryRun(vec![
                api.describe("POST", &create, Some(&body)),
                format!(
                    "PUT {{upload_to}} [Content-Type: application/octet-stream, Content-Length: {size}] <{}>",
                    gz.display()
                ),
                api.describe("GET", &api.url("/v4/images/{id}"), None)
                    + " (until status is available)",
            ]),
            None,
        ));
    }
    let reply = api.json("POST", &create, Some(&body))?;
    let upload_to = reply
        .json
        .get("upload_to")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = reply
        .json
        .pointer("/image/id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (Some(upload_to), Some(id)) = (upload_to, id) else {
        return Err(UploadError::Protocol {
            url: create,
            message: "reply lacks upload_to or image.id".into(),
        });
    };

    // The PUT goes to a presigned URL: no credentials. Each retry re-reads
    // the file from the start, so the MD5 is that of the attempt that
    // succeeded, computed on the way out (no second pass over the file).
    let mut host = Api::new("", Auth::None);
    host.retry = api.retry.clone();
    let headers = [
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Content-Length", size.to_string()),
    ];
    let mut attempt = 0u32;
    let (md5, bytes) = loop {
        attempt += 1;
        let file = File::open(gz).map_err(|source| UploadError::Io {
            path: gz.display().to_string(),
            source,
        })?;
        let mut reader = HashingReader {
            inner: file,
            digest: Md5::new(),
            sent: 0,
            progress,
        };
        let result = host.once(
            "PUT",
            &upload_to,
            &headers,
            ureq::SendBody::from_reader(&mut reader),
            false,
        )?;
        match host.next_step("PUT", &upload_to, result, attempt)? {
            crate::api::Step::Done(_) => {
                break (format!("{:x}", reader.digest.finalize()), reader.sent);
            }
            crate::api::Step::RetryAfter(wait) => std::thread::sleep(wait),
        }
    };
    if bytes != size {
        return Err(UploadError::Protocol {
            url: upload_to,
            message: format!(
                "sent {bytes} bytes but the file has {size}: it changed during the upload"
            ),
        });
    }

    let get = api.url(&format!("/v4/images/{id}"));
    let image = api.poll(&format!("Linode image {id}"), poll, || {
        match api.json("GET", &get, None) {
            Ok(r) => {
                let status = r.json.get("status").and_then(Value::as_str).unwrap_or("").to_owned();
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
    Ok((
        Outcome::Image(image.clone()),
        Some(Uploaded { image, md5, bytes }),
    ))
}

/// Reads the file, hashing and counting what goes out.
struct HashingReader<'a> {
    inner: File,
    digest: Md5,
    sent: u64,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.sent += n as u64;
        (self.progress)(self.sent);
        Ok(n)
    }
}
