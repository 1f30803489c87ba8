//! `imgcheck::upload`: the check as preflight, the conversion a provider
//! needs, then the provider's backend (imgcheck-upload).
//!
//! The preflight judges **what will be uploaded**: the guest of the input,
//! as the file the provider will receive. For Linode an input that is not
//! raw inside gzip is converted, so the check judges its guest as a raw +
//! gzip image (the input's own format is not the question), and once the
//! `.img.gz` exists its real compressed size is judged again against
//! Linode's 5 GB. [`upload`] runs in this order, so that nothing slow or
//! costly happens before a cheap check could have refused:
//!
//! 1. flags the provider would refuse (label, tags, distribution, region
//!    slugs);
//! 2. credentials (all of them, named in the error);
//! 3. for Linode, the region (one GET) before any conversion;
//! 4. the check of the input's guest as the output;
//! 5. the conversion (Linode), then the size rules on the real output;
//! 6. the provider's requests.
//!
//! `dry_run` stops after step 4 with the plan: no credentials are read,
//! nothing is written, nothing is sent.
//!
//! * DigitalOcean imports from a URL; a local file goes to a Spaces bucket
//!   first and is imported from a presigned GET URL, then deleted.
//! * Linode takes a gzip-compressed raw image, converted to a temporary
//!   `.img.gz` next to the input when needed (kept with `keep`).
//! * KakaoCloud creates images from a root volume: the local image is
//!   checked and its derived `os_info`/`min_disk` are returned.

use std::path::{Path, PathBuf};

use imgcheck_convert::{AtomicOutput, Compress, OutputFormat};
use imgcheck_disk::{Container, Format};
use imgcheck_guest::GuestReport;
use imgcheck_rules::{CheckInput, Finding, ImageFacts, ImageFormat, Provider, Severity};
use imgcheck_upload::{
    Event, Flow, PollOptions, UploadError, digitalocean, kakaocloud, linode, spaces,
};
use serde::Serialize;

use crate::{CheckOptions, Error, OpenOptions, Report};

/// Where a DigitalOcean image comes from.
#[derive(Debug, Clone)]
pub enum DoSource {
    /// A URL DigitalOcean fetches (`request.url`).
    Url,
    /// A local file, uploaded to a Spaces bucket and imported from a
    /// presigned URL.
    File {
        /// Local image.
        image: String,
        /// Bucket (must exist).
        bucket: String,
        /// Spaces region (`nyc3`, `ams3`, ...).
        spaces_region: String,
        /// Keep the object after the import.
        keep_object: bool,
    },
}

/// Where and how to upload.
#[derive(Debug, Clone)]
pub enum UploadTarget {
    /// DigitalOcean import.
    DigitalOcean {
        /// URL or local file.
        source: DoSource,
        /// Name, region, ...; `url` is filled for a local file, and
        /// `distribution` from the guest when not given.
        request: digitalocean::ImportRequest,
    },
    /// Linode upload of the local image at `image`.
    Linode {
        /// Local image, any format imgcheck reads.
        image: String,
        /// Label, region, description, tags.
        request: linode::UploadRequest,
        /// `cloud_init` as the user set it; `None`: from the guest's
        /// cloud-init version.
        cloud_init: Option<bool>,
    },
    /// KakaoCloud image from a root volume; `image` is the local image the
    /// volume was written from (checked, and its os_info reported).
    KakaoCloud {
        /// Local image.
        image: String,
        /// Root volume id.
        volume_id: String,
        /// Image name.
        name: String,
        /// Description.
        description: Option<String>,
    },
}

impl UploadTarget {
    /// The provider.
    pub fn provider(&self) -> Provider {
        match self {
            UploadTarget::DigitalOcean { .. } => Provider::DigitalOcean,
            UploadTarget::Linode { .. } => Provider::Linode,
            UploadTarget::KakaoCloud { .. } => Provider::KakaoCloud,
        }
    }

    /// What the preflight checks: the URL or the file.
    pub fn location(&self) -> &str {
        match self {
            UploadTarget::DigitalOcean {
                source: DoSource::Url,
                request,
            } => &request.url,
            UploadTarget::DigitalOcean {
                source: DoSource::File { image, .. },
                ..
            }
            | UploadTarget::Linode { image, .. }
            | UploadTarget::KakaoCloud { image, .. } => image,
        }
    }
}

/// Options for [`upload`].
pub struct UploadOptions<'a> {
    /// Upload even when the check fails (loudly: the caller should say so).
    pub skip_check: bool,
    /// Print the plan instead of doing it: no credentials, no writes, no
    /// requests.
    pub dry_run: bool,
    /// Wait until the provider finished processing (false: return once the
    /// provider accepted the image).
    pub wait: bool,
    /// Keep the `.img.gz` converted for Linode (named after the input, next
    /// to it) so a failed upload can be retried without converting again.
    pub keep: bool,
    /// Poll pace and timeout.
    pub poll: PollOptions,
    /// How to open the image.
    pub open: OpenOptions,
    /// Progress of long steps: (what, done bytes, total bytes).
    pub progress: &'a (dyn Fn(&str, u64, u64) + Sync),
    /// A status line (what the provider is doing).
    pub status: &'a (dyn Fn(&str) + Sync),
}

impl Default for UploadOptions<'_> {
    fn default() -> Self {
        Self {
            skip_check: false,
            dry_run: false,
            wait: true,
            keep: false,
            poll: PollOptions::default(),
            open: OpenOptions::default(),
            progress: &|_, _, _| {},
            status: &|_| {},
        }
    }
}

/// What an upload did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct UploadResult {
    /// The provider.
    pub provider: Provider,
    /// The preflight report (absent with `skip_check`).
    pub check: Option<Report>,
    /// Warnings of the provider's verdict (the upload went ahead).
    pub warnings: Vec<Finding>,
    /// The provider's last image object (absent in a dry run).
    pub image: Option<serde_json::Value>,
    /// A dry run's plan: the steps and requests, credentials redacted.
    pub dry_run: Vec<String>,
    /// MD5 of the uploaded bytes (Linode; Terraform's `file_hash`).
    pub md5: Option<String>,
    /// The `.img.gz` converted for Linode, when it was kept (`keep`).
    pub converted: Option<PathBuf>,
    /// The file sent (the input, or its conversion).
    pub uploaded_file: Option<String>,
    /// Derived request fields: Linode `cloud_init`, DigitalOcean
    /// `distribution`.
    pub derived: serde_json::Value,
    /// What happened to temporary objects (Spaces object deleted or kept).
    pub notes: Vec<String>,
}

/// Runs the preflight check, converts if the provider needs it, uploads and
/// (unless told not to) waits for the provider to finish. See the module
/// docs for the order.
pub fn upload(target: &UploadTarget, options: &UploadOptions<'_>) -> Result<UploadResult, Error> {
    let provider = target.provider();
    validate(target)?;
    let clients = if options.dry_run {
        None
    } else {
        Some(Clients::from_env(target)?)
    };
    if let (Some(Clients::Linode(api)), UploadTarget::Linode { request, .. }) = (&clients, target) {
        linode::check_region(api, &request.region)?;
    }

    // The preflight: the input's guest, judged as the file to upload.
    let (input_facts, report) = preflight(target, options)?;
    let warnings = report
        .as_ref()
        .and_then(|r| r.verdicts.iter().find(|v| v.provider == provider))
        .map(|v| {
            v.findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let guest = report.as_ref().and_then(|r| r.guest.as_ref());
    let mut result = UploadResult {
        provider,
        check: None,
        warnings,
        image: None,
        dry_run: Vec::new(),
        md5: None,
        converted: None,
        uploaded_file: None,
        derived: serde_json::Value::Null,
        notes: Vec::new(),
    };
    let events = |e: Event<'_>| match e {
        Event::Sent { done, total } => (options.progress)("uploading", done, total),
        Event::Status(s) => (options.status)(s),
    };
    let flow = Flow {
        poll: &options.poll,
        wait: options.wait,
        events: &events,
    };

    match target {
        UploadTarget::DigitalOcean { source, request } => {
            let mut request = request.clone();
            request.presigned |= is_presigned(&request.url);
            request.distribution = Some(match &request.distribution {
                Some(d) => digitalocean::validate_distribution(d)?.to_owned(),
                None => guest
                    .and_then(|g| g.os.id.as_deref())
                    .map_or("Unknown", digitalocean::distribution_for_os)
                    .to_owned(),
            });
            result.derived = serde_json::json!({"distribution": request.distribution});
            match source {
                DoSource::Url => {
                    if options.dry_run {
                        result.dry_run = plan_header(&report, target.location(), None);
                        result.dry_run.extend(digitalocean::plan(&request));
                    } else if let Some(Clients::DigitalOcean(api, _)) = &clients {
                        result.image = Some(digitalocean::import(api, &request, &flow)?);
                    }
                }
                DoSource::File {
                    image,
                    bucket,
                    spaces_region,
                    keep_object,
                } => {
                    // One object is one file: an image made of several
                    // (VMDK extents) would arrive without its data.
                    if let Some(f) = &input_facts
                        && !f.external_refs.is_empty()
                    {
                        return Err(Error::Usage(format!(
                            "{image} keeps its data in other files ({} of them); convert it to one file first: imgcheck convert --for digitalocean {image}",
                            f.external_refs.len()
                        )));
                    }
                    let key = object_key(&request.name, image);
                    request.presigned = true;
                    if options.dry_run {
                        let url = format!(
                            "{}/{bucket}/{key}",
                            spaces::endpoint(spaces_region).trim_end_matches('/')
                        );
                        result.dry_run = plan_header(&report, image, None);
                        result.dry_run.push(format!(
                            "PUT {url} (S3 multipart upload, {} MiB parts, {} in parallel; signed with SPACES_ACCESS_KEY_ID)",
                            spaces::PART_SIZE >> 20,
                            spaces::PARALLEL_PARTS
                        ));
                        request.url = format!(
                            "{url}?X-Amz-Expires={}&X-Amz-Signature=***",
                            spaces::PRESIGN_EXPIRY.as_secs()
                        );
                        result.dry_run.extend(digitalocean::plan(&request));
                        if !keep_object {
                            result.dry_run.push(format!("DELETE {url}"));
                        }
                    } else if let Some(Clients::DigitalOcean(api, Some(sp))) = &clients {
                        result.uploaded_file = Some(image.clone());
                        (options.status)(&format!(
                            "uploading {image} to Spaces bucket {bucket} ({spaces_region})"
                        ));
                        sp.upload(&key, Path::new(image), &events)?;
                        request.url = sp.presign_get(&key, spaces::PRESIGN_EXPIRY);
                        let r = digitalocean::import(api, &request, &flow);
                        // The importer needs the object until the image is
                        // available: with --no-wait it stays.
                        let keep = *keep_object || (!options.wait && r.is_ok());
                        let object = sp.object_url(&key);
                        if keep {
                            result.notes.push(format!("Spaces object kept: {object}"));
                        } else {
                            match sp.delete(&key) {
                                Ok(()) => result
                                    .notes
                                    .push(format!("Spaces object deleted: {object}")),
                                Err(e) => result.notes.push(format!(
                                    "Spaces object {object} could not be deleted: {e}"
                                )),
                            }
                        }
                        result.image = Some(r?);
                    }
                }
            }
        }
        UploadTarget::Linode {
            image,
            request,
            cloud_init,
        } => {
            let mut request = request.clone();
            request.cloud_init = cloud_init
                .unwrap_or_else(|| guest.is_some_and(|g| linode_cloud_init(&g.cloud_init)));
            result.derived = serde_json::json!({"cloud_init": request.cloud_init});
            // A remote .img.gz is fetched by converting it (the PUT needs
            // a local file).
            let is_gz = input_facts.as_ref().is_some_and(is_raw_gzip) && !is_url(image);
            if options.dry_run {
                let (file, size) = if is_gz {
                    (image.clone(), Some(file_len(image)?))
                } else {
                    (
                        linode_output_path(image, options.keep)
                            .display()
                            .to_string(),
                        None,
                    )
                };
                result.dry_run = plan_header(&report, image, (!is_gz).then_some(file.as_str()));
                result.dry_run.extend(linode::plan(&request, &file, size));
            } else if let Some(Clients::Linode(api)) = &clients {
                let (gz, uncompressed, temp) = linode_input(image, is_gz, options)?;
                let r = (|| -> Result<linode::Uploaded, Error> {
                    if temp.is_some() && !options.skip_check {
                        judge_output(&gz, uncompressed, &report, options)?;
                    }
                    Ok(linode::upload(api, &request, &gz, uncompressed, &flow)?)
                })();
                if let Some(t) = &temp {
                    if options.keep {
                        result.converted = Some(t.clone());
                    } else {
                        // A stray multi-GB file is worse than converting
                        // again (--keep keeps it for a retry).
                        let _ = std::fs::remove_file(t);
                    }
                }
                let up = r?;
                result.uploaded_file = Some(gz.display().to_string());
                result.md5 = Some(up.md5);
                result.image = Some(up.image);
            }
        }
        UploadTarget::KakaoCloud {
            volume_id,
            name,
            description,
            image,
        } => {
            if options.dry_run {
                result.dry_run = plan_header(&report, image, None);
                result.dry_run.extend(kakaocloud::plan(
                    &kakaocloud::Endpoints::from_env(),
                    volume_id,
                    name,
                    description.as_deref(),
                ));
            } else if let Some(Clients::KakaoCloud(cred)) = &clients {
                let mut session =
                    kakaocloud::Session::new(cred.clone(), kakaocloud::Endpoints::from_env());
                result.image = Some(kakaocloud::create_from_volume(
                    &mut session,
                    volume_id,
                    name,
                    description.as_deref(),
                    &flow,
                )?);
            }
        }
    }
    result.check = report;
    Ok(result)
}

/// The clients of a target, built from the environment before anything
/// else happens, so that a missing variable is reported first.
enum Clients {
    DigitalOcean(imgcheck_upload::Api, Option<Box<spaces::Spaces>>),
    Linode(imgcheck_upload::Api),
    KakaoCloud(kakaocloud::Credential),
}

impl Clients {
    fn from_env(target: &UploadTarget) -> Result<Self, Error> {
        Ok(match target {
            UploadTarget::DigitalOcean { source, .. } => {
                let token = digitalocean::client_from_env();
                let sp = match source {
                    DoSource::Url => Ok(None),
                    DoSource::File {
                        bucket,
                        spaces_region,
                        ..
                    } => spaces::Spaces::from_env(bucket, spaces_region).map(|s| Some(Box::new(s))),
                };
                // Name every missing variable at once.
                match (token, sp) {
                    (Ok(api), Ok(sp)) => Clients::DigitalOcean(api, sp),
                    (t, s) => {
                        let mut missing = Vec::new();
                        if t.is_err() {
                            missing.push(digitalocean::TOKEN_VARS.join(" or "));
                        }
                        if !imgcheck_upload::env_set(spaces::KEY_VARS) {
                            missing.push(spaces::KEY_VARS.join(" or "));
                        }
                        if !imgcheck_upload::env_set(spaces::SECRET_VARS) {
                            missing.push(spaces::SECRET_VARS.join(" or "));
                        }
                        if missing.is_empty() {
                            // Not a missing variable (a bad endpoint, ...).
                            return Err(match (t, s) {
                                (Err(e), _) | (_, Err(e)) => e.into(),
                                _ => Error::Usage("credentials".into()),
                            });
                        }
                        return Err(UploadError::MissingCredentials {
                            vars: missing.join(", and "),
                        }
                        .into());
                    }
                }
            }
            UploadTarget::Linode { .. } => Clients::Linode(linode::client_from_env()?),
            UploadTarget::KakaoCloud { .. } => {
                Clients::KakaoCloud(kakaocloud::Credential::from_env()?)
            }
        })
    }
}

/// Step 1: what the provider would refuse in the flags.
fn validate(target: &UploadTarget) -> Result<(), Error> {
    match target {
        UploadTarget::DigitalOcean { request, .. } => {
            // The URL is filled later for a local file.
            let mut r = request.clone();
            if r.name.trim().is_empty() {
                return Err(Error::Usage("--name is empty".into()));
            }
            r.url = "x".into();
            digitalocean::validate(&r)?;
        }
        UploadTarget::Linode { request, .. } => linode::validate(request)?,
        UploadTarget::KakaoCloud { name, .. } => {
            if name.trim().is_empty() {
                return Err(Error::Usage("--name is empty".into()));
            }
        }
    }
    Ok(())
}

/// A URL presigned for GET (S3 SigV4 or SigV2 query signature).
fn is_presigned(location: &str) -> bool {
    is_url(location)
        && location.split_once('?').is_some_and(|(_, q)| {
            q.split('&').any(|kv| {
                let k = kv.split('=').next().unwrap_or("");
                k.eq_ignore_ascii_case("X-Amz-Signature") || k.eq_ignore_ascii_case("Signature")
            })
        })
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

fn is_raw_gzip(f: &ImageFacts) -> bool {
    f.compression == Some(Container::Gzip) && f.format == Some(ImageFormat::Disk(Format::Raw))
}

/// Step 4: the check of the input's guest as the file to upload. Returns
/// the input's own facts (as read) and the report (`None` with
/// `skip_check`); a failing verdict is [`Error::CheckFailed`].
fn preflight(
    target: &UploadTarget,
    options: &UploadOptions<'_>,
) -> Result<(Option<ImageFacts>, Option<Report>), Error> {
    let provider = target.provider();
    let location = target.location();
    if options.skip_check {
        // Still needed: whether the input is already raw + gzip (Linode),
        // whether it is one file (DigitalOcean through Spaces).
        let facts = match target {
            UploadTarget::Linode { .. }
            | UploadTarget::DigitalOcean {
                source: DoSource::File { .. },
                ..
            } => {
                let input = crate::open(location, &options.open)?;
                let info = input.disk.info();
                Some(ImageFacts {
                    format: Some(ImageFormat::Disk(info.format)),
                    compression: input.container,
                    external_refs: info.external_refs.clone(),
                    ..Default::default()
                })
            }
            _ => None,
        };
        return Ok((facts, None));
    }
    let seen = std::sync::Mutex::new(None::<ImageFacts>);
    let presigned = is_presigned(location);
    let adjust = |f: &mut ImageFacts| {
        if let Ok(mut s) = seen.lock() {
            *s = Some(f.clone());
        }
        if presigned {
            // A URL presigned for GET refuses HEAD by design; the upload's
            // own preflight fetches its first byte instead.
            f.head_supported = None;
        }
        if provider == Provider::Linode && !is_raw_gzip(f) {
            // Judged as what will be sent: raw inside gzip. The compressed
            // size is known only after the conversion (judged then).
            f.format = Some(ImageFormat::Disk(Format::Raw));
            f.subformat = None;
            f.compression = Some(Container::Gzip);
            f.file_size = 0;
        }
    };
    let report = crate::check::check_with(
        location,
        &CheckOptions {
            providers: vec![provider],
            open: options.open.clone(),
        },
        &adjust,
    )?;
    let mut report = report;
    // The location may be a presigned URL: it is printed (--json).
    report.image.path = imgcheck_upload::redact_url(&report.image.path);
    let facts = seen.into_inner().ok().flatten();
    refuse_on_failure(provider, &report.verdicts)?;
    Ok((facts, Some(report)))
}

fn refuse_on_failure(
    provider: Provider,
    verdicts: &[imgcheck_rules::Verdict],
) -> Result<(), Error> {
    if let Some(v) = verdicts.iter().find(|v| v.provider == provider && !v.pass) {
        return Err(Error::CheckFailed {
            provider: provider.to_string(),
            findings: v.findings.clone(),
        });
    }
    Ok(())
}

/// Step 5: the provider's rules on the converted file itself (its real
/// compressed size), with the guest as the preflight saw it.
fn judge_output(
    gz: &Path,
    uncompressed: u64,
    report: &Option<Report>,
    options: &UploadOptions<'_>,
) -> Result<(), Error> {
    let Some(report) = report else { return Ok(()) };
    let _ = options;
    let facts = ImageFacts {
        path: gz.display().to_string(),
        format: Some(ImageFormat::Disk(Format::Raw)),
        compression: Some(Container::Gzip),
        virtual_size: Some(uncompressed),
        file_size: file_len(&gz.display().to_string())?,
        ..report.image.clone()
    };
    let guest = match (&report.partitions, &report.guest) {
        (Some(p), Some(g)) => Some(GuestReport {
            partitions: p.clone(),
            filesystems: report.filesystems.clone(),
            root: report.root,
            root_undetermined: report.root_undetermined.clone(),
            guest: g.clone(),
            notes: report.notes.clone(),
        }),
        _ => None,
    };
    let verdicts = imgcheck_rules::check_all(
        &[Provider::Linode],
        &CheckInput {
            image: &facts,
            guest: guest.as_ref(),
        },
    );
    refuse_on_failure(Provider::Linode, &verdicts)
}

fn file_len(path: &str) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| imgcheck_source::SourceError::open(path, source).into())
}

/// The first lines of a dry run's plan: the check's result and the
/// conversion, if any.
fn plan_header(report: &Option<Report>, input: &str, convert_to: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    let input = imgcheck_upload::redact_url(input);
    let input = input.as_str();
    match report {
        Some(r) => {
            let warnings: usize = r
                .verdicts
                .iter()
                .map(|v| {
                    v.findings
                        .iter()
                        .filter(|f| f.severity == Severity::Warning)
                        .count()
                })
                .sum();
            lines.push(format!(
                "check {input}: PASS ({warnings} warning{})",
                if warnings == 1 { "" } else { "s" }
            ));
        }
        None => lines.push(format!("check {input}: skipped (--skip-check)")),
    }
    if let Some(out) = convert_to {
        lines.push(format!("convert {input} -> {out} (raw, gzip)"));
    }
    lines
}

/// The Spaces key for a local file: the image name, a timestamp, and the
/// file's extensions (DigitalOcean's importer goes by them).
fn object_key(name: &str, image: &str) -> String {
    let file = Path::new(image)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // DigitalOcean's importer goes by the extensions (`.qcow2.gz`).
    let ext = linode::split_extensions(&file).1;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("imgcheck-import/{safe}-{now}{ext}")
}

/// Where the converted `.img.gz` goes: next to the input, hidden and
/// temporary, or (with `keep`) named after the input for a retry.
fn linode_output_path(image: &str, keep: bool) -> PathBuf {
    // A URL's conversion goes to the temporary directory (its "next to"
    // is on the server).
    let local;
    let p = if is_url(image) {
        let name = image
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or("image");
        local = std::env::temp_dir().join(name);
        local.as_path()
    } else {
        Path::new(image)
    };
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    if keep {
        p.with_file_name(format!("{}.img.gz", linode::default_label(&name)))
    } else {
        p.with_file_name(format!(".{name}.imgcheck-upload.img.gz"))
    }
}

/// The `.img.gz` to send to Linode: the input itself when it is raw inside
/// gzip, else a conversion written next to the input. Returns (path,
/// uncompressed size, converted file).
fn linode_input(
    image: &str,
    is_gz: bool,
    options: &UploadOptions<'_>,
) -> Result<(PathBuf, u64, Option<PathBuf>), Error> {
    let input = crate::open(image, &options.open)?;
    let size = input.disk.virtual_size();
    if is_gz {
        return Ok((PathBuf::from(image), size, None));
    }
    let target = linode_output_path(image, options.keep);
    // A kept file is never overwritten; the temporary one is ours.
    let out = AtomicOutput::create(&target, !options.keep)?;
    let tick = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        let done = tick.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        (options.progress)("converting", done, size);
    };
    (options.status)(&format!(
        "converting {image} to {} (raw, gzip)",
        target.display()
    ));
    imgcheck_convert::convert(
        &input.disk,
        &out,
        OutputFormat::Raw,
        Compress::Gzip,
        &imgcheck_convert::Options::default(),
        &progress,
    )?;
    out.commit()?;
    Ok((target.clone(), size, Some(target)))
}

/// Linode's `cloud_init` capability of an image (its guest's cloud-init can
/// read Linode's Metadata service): a cloud-init at least
/// [`linode::MIN_CLOUD_INIT_FOR_METADATA`] and, when the image configures a
/// datasource list (a config file or the kernel command line), one that
/// names `Akamai` (Linode's guide adds it; cloud-init tries only listed
/// sources). Used by `upload` and `imgcheck terraform` alike.
pub fn linode_cloud_init(ci: &imgcheck_guest::CloudInitFacts) -> bool {
    if !ci.installed {
        return false;
    }
    // Debian ordering, epoch and distribution revision dropped, as every
    // cloud-init version rule compares.
    let new_enough = ci.version.as_deref().is_some_and(|v| {
        imgcheck_rules::version::at_least(v, linode::MIN_CLOUD_INIT_FOR_METADATA) == Some(true)
    });
    let configured = matches!(
        ci.datasource_decided_by.as_deref(),
        Some("config" | "ds_identify_config" | "kernel_cmdline")
    );
    let lists_akamai = !configured
        || ci
            .datasource_list
            .as_ref()
            .is_none_or(|l| l.iter().any(|d| d.eq_ignore_ascii_case("akamai")));
    new_enough && lists_akamai
}

/// DigitalOcean's `distribution` for an os-release `ID` (`Unknown` when
/// there is none or DigitalOcean has no such name).
pub fn digitalocean_distribution(os_id: Option<&str>) -> &'static str {
    os_id.map_or("Unknown", digitalocean::distribution_for_os)
}
