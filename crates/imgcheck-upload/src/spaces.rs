//! DigitalOcean Spaces (S3 API): the bucket a local file goes through on
//! its way to a DigitalOcean custom image.
//!
//! DigitalOcean imports images only from a URL. Packer's digitalocean-import
//! uploads the file to Spaces with ACL `public-read` and imports from the
//! public URL (providers.md §1.4); here the object stays private and the
//! importer gets a *presigned* GET URL that expires after
//! [`PRESIGN_EXPIRY`]. The object is deleted once the image is available.
//!
//! Requests are signed by `rusty-s3` (sans-IO: it only builds presigned
//! URLs, SigV4 in the query string) and sent with the shared client
//! ([`Api`], retry policy of [`imgcheck_source::net`]). Every such URL holds
//! a signature, so none is ever printed unredacted.
//!
//! Large files go up as a multipart upload: parts of [`PART_SIZE`] (more
//! for files over 10,000 parts, S3's part limit), [`PARALLEL_PARTS`] at a
//! time, each read with `pread` so the workers share one file. A failed
//! multipart upload is aborted so its parts do not linger (and cost).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rusty_s3::actions::CreateMultipartUpload;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::{Api, Auth, Event, RetryPolicy, UploadError};

/// Access key variables (the names first, then Packer's).
pub const KEY_VARS: &[&str] = &["SPACES_ACCESS_KEY_ID", "DIGITALOCEAN_SPACES_ACCESS_KEY"];
/// Secret key variables.
pub const SECRET_VARS: &[&str] = &["SPACES_SECRET_ACCESS_KEY", "DIGITALOCEAN_SPACES_SECRET_KEY"];
/// Endpoint override (tests, other S3-compatible stores); the default is
/// `https://{region}.digitaloceanspaces.com`.
pub const ENDPOINT_VAR: &str = "IMGCHECK_SPACES_ENDPOINT";
/// Part size of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: u64 = 16 << 20;
/// Parts in flight at once.
pub const PARALLEL_PARTS: usize = 4;
/// Lifetime of the presigned GET given to DigitalOcean's importer: long
/// enough for it to fetch a large image, short enough that a leaked URL is
/// soon useless.
pub const PRESIGN_EXPIRY: Duration = Duration::from_secs(30 * 60);
/// Lifetime of the URLs this module signs for its own requests.
const REQUEST_EXPIRY: Duration = Duration::from_secs(3600);

/// A Spaces bucket with credentials.
pub struct Spaces {
    bucket: Bucket,
    creds: Credentials,
    /// Retry policy of every request.
    pub retry: RetryPolicy,
    /// Part size (tests use smaller parts to exercise the multipart path).
    pub part_size: u64,
}

impl std::fmt::Debug for Spaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spaces")
            .field("bucket", &self.bucket.name())
            .field("region", &self.bucket.region())
            .finish_non_exhaustive()
    }
}

/// The endpoint for `region`: [`ENDPOINT_VAR`] when set.
pub fn endpoint(region: &str) -> String {
    crate::base_url(
        ENDPOINT_VAR,
        &format!("https://{region}.digitaloceanspaces.com"),
    )
}

impl Spaces {
    /// A bucket at `endpoint` (path-style URLs, which Spaces and every
    /// S3-compatible server take).
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        key: &str,
        secret: &str,
    ) -> Result<Self, UploadError> {
        let url = endpoint
            .parse()
            .map_err(|e| UploadError::Invalid(format!("Spaces endpoint {endpoint:?}: {e}")))?;
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_owned(), region.to_owned())
            .map_err(|e| UploadError::Invalid(format!("Spaces bucket {bucket:?}: {e:?}")))?;
        Ok(Self {
            bucket,
            creds: Credentials::new(key, secret),
            retry: RetryPolicy::default(),
            part_size: PART_SIZE,
        })
    }

    /// From [`KEY_VARS`] / [`SECRET_VARS`] and [`endpoint`].
    pub fn from_env(bucket: &str, region: &str) -> Result<Self, UploadError> {
        let key = crate::token_from_env(KEY_VARS)?;
        let secret = crate::token_from_env(SECRET_VARS)?;
        Self::new(
            &endpoint(region),
            bucket,
            region,
            key.expose(),
            secret.expose(),
        )
    }

    /// The object's URL, unsigned (for plans and messages).
    pub fn object_url(&self, key: &str) -> String {
        self.bucket.object_url(key).to_string()
    }

    /// A GET URL for `key` valid for `expiry`.
    pub fn presign_get(&self, key: &str, expiry: Duration) -> String {
        self.bucket
            .get_object(Some(&self.creds), key)
            .sign(expiry)
            .to_string()
    }

    fn client(&self) -> Api {
        let mut api = Api::new("", Auth::None);
        api.retry = self.retry.clone();
        api
    }

    /// Deletes the object.
    pub fn delete(&self, key: &str) -> Result<(), UploadError> {
        let url = self
            .bucket
            .delete_object(Some(&self.creds), key)
            .sign(REQUEST_EXPIRY);
        self.client()
            .send("DELETE", url.as_str(), &[], || Ok(Vec::new()), false)
            .map_err(spaces_error)?;
        Ok(())
    }

    /// Uploads `path` as `key`: one PUT for a file up to one part, else a
    /// multipart upload with parallel parts. Returns the bytes sent.
    pub fn upload(
        &self,
        key: &str,
        path: &Path,
        events: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<u64, UploadError> {
        let io = |source| UploadError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        // S3 allows 10,000 parts: larger files get larger parts.
        let part = self.part_size.max(size.div_ceil(10_000)).max(1);
        if size <= part {
            let url = self
                .bucket
                .put_object(Some(&self.creds), key)
                .sign(REQUEST_EXPIRY);
            let body = read_part(&file, 0, size).map_err(io)?;
            self.client()
                .send(
                    "PUT",
                    url.as_str(),
                    &[("Content-Type", "application/octet-stream".to_owned())],
                    || Ok(body.clone()),
                    false,
                )
                .map_err(spaces_error)?;
            events(Event::Sent {
                done: size,
                total: size,
            });
            return Ok(size);
        }
        let create = self
            .bucket
            .create_multipart_upload(Some(&self.creds), key)
            .sign(REQUEST_EXPIRY);
        let reply = self
            .client()
            .send("POST", create.as_str(), &[], || Ok(Vec::new()), false)
            .map_err(spaces_error)?;
        let created = CreateMultipartUpload::parse_response(&reply.text).map_err(|e| {
            UploadError::Spaces(format!("CreateMultipartUpload answer not understood: {e}"))
        })?;
        let upload_id = created.upload_id().to_owned();
        match self.upload_parts(key, &upload_id, &file, size, part, events) {
            Ok(etags) => {
                let complete = self.bucket.complete_multipart_upload(
                    Some(&self.creds),
                    key,
                    &upload_id,
                    etags.iter().map(String::as_str),
                );
                let url = complete.sign(REQUEST_EXPIRY);
                let body = complete.body();
                let r = self.client().send(
                    "POST",
                    url.as_str(),
                    &[("Content-Type", "application/xml".to_owned())],
                    || Ok(body.clone().into_bytes()),
                    false,
                );
                match r {
                    // S3 can answer 200 with an <Error> body here.
                    Ok(reply) if !reply.text.contains("<Error>") => Ok(size),
                    Ok(reply) => {
                        self.abort(key, &upload_id);
                        Err(UploadError::Spaces(format!(
                            "CompleteMultipartUpload failed: {}",
                            crate::redact_text(&reply.text.chars().take(300).collect::<String>())
                        )))
                    }
                    Err(e) => {
                        self.abort(key, &upload_id);
                        Err(spaces_error(e))
                    }
                }
            }
            Err(e) => {
                self.abort(key, &upload_id);
                Err(e)
            }
        }
    }

    /// Best effort: a failed abort leaves parts the bucket's lifecycle
    /// rules clean up; the upload's own error is what matters.
    fn abort(&self, key: &str, upload_id: &str) {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, upload_id)
            .sign(REQUEST_EXPIRY);
        let _ = self
            .client()
            .send("DELETE", url.as_str(), &[], || Ok(Vec::new()), false);
    }

    /// Sends every part, [`PARALLEL_PARTS`] at a time; returns the ETags in
    /// part order.
    fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &File,
        size: u64,
        part: u64,
        events: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<Vec<String>, UploadError> {
        let count = usize::try_from(size.div_ceil(part))
            .map_err(|_| UploadError::Spaces("too many parts".into()))?;
        let next = AtomicUsize::new(0);
        let sent = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let etags: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; count]);
        let first_error: Mutex<Option<UploadError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_PARTS.min(count) {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        match self.upload_part(key, upload_id, file, i, size, part) {
                            Ok((etag, n)) => {
                                if let Ok(mut e) = etags.lock()
                                    && let Some(slot) = e.get_mut(i)
                                {
                                    *slot = Some(etag);
                                }
                                let done = sent.fetch_add(n, Ordering::Relaxed) + n;
                                events(Event::Sent { done, total: size });
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                if let Ok(mut f) = first_error.lock() {
                                    f.get_or_insert(e);
                                }
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
        etags
            .into_inner()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                e.ok_or_else(|| UploadError::Spaces(format!("part {} has no ETag", i + 1)))
            })
            .collect()
    }

    /// One part: PUT (retried by the policy: PUT is idempotent); returns
    /// its ETag and length.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        file: &File,
        index: usize,
        size: u64,
        part: u64,
    ) -> Result<(String, u64), UploadError> {
        let start = index as u64 * part;
        let len = part.min(size - start);
        let number = u16::try_from(index + 1)
            .map_err(|_| UploadError::Spaces("more than 65535 parts".into()))?;
        let url = self
            .bucket
            .upload_part(Some(&self.creds), key, number, upload_id)
            .sign(REQUEST_EXPIRY);
        let body = read_part(file, start, len).map_err(|source| UploadError::Io {
            path: format!("part {number}"),
            source,
        })?;
        let reply = self
            .client()
            .send("PUT", url.as_str(), &[], || Ok(body.clone()), false)
            .map_err(spaces_error)?;
        let etag = reply
            .header("etag")
            .map(str::to_owned)
            .ok_or_else(|| UploadError::Spaces(format!("part {number}: no ETag in the answer")))?;
        Ok((etag, len))
    }
}

fn read_part(file: &File, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let n = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// An S3 error as a Spaces error (its URL is already redacted by [`Api`]).
fn spaces_error(e: UploadError) -> UploadError {
    UploadError::Spaces(e.to_string())
}
