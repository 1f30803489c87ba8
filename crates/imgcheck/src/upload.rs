//! `imgcheck::upload`: the check as preflight, the conversion a provider
//! needs, then the provider's backend (imgcheck-upload).
//!
//! * DigitalOcean imports from a URL: the check runs over that URL (the
//!   image is read in place through Range requests or one streaming pass),
//!   then the import is created and awaited.
//! * Linode takes a gzip-compressed raw image: an input that is already raw
//!   inside gzip is sent as is; anything else is converted to a temporary
//!   `.img.gz` next to it (the only full-size temporary file; removed
//!   afterwards), then uploaded with its MD5 computed on the way.
//! * KakaoCloud creates images from a root volume: the local image is
//!   checked and its derived `os_info`/`min_disk` are returned with the
//!   image object.
//!
//! A failed verdict stops the upload unless `skip_check` is set.

use std::path::{Path, PathBuf};

use imgcheck_convert::{AtomicOutput, Compress, OutputFormat};
use imgcheck_disk::{Container, Format};
use imgcheck_rules::Provider;
use imgcheck_upload::{Outcome, PollOptions, digitalocean, kakaocloud, linode};
use serde::Serialize;

use crate::{CheckOptions, Error, OpenOptions, Report, check};

/// Where and how to upload.
#[derive(Debug, Clone)]
pub enum UploadTarget {
    /// DigitalOcean URL import.
    DigitalOcean(digitalocean::ImportRequest),
    /// Linode upload of the local image at `image`.
    Linode {
        /// Local image, any format imgcheck reads.
        image: String,
        /// Label, region, description, tags (`cloud_init` is set from the
        /// check when it ran).
        request: linode::UploadRequest,
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
            UploadTarget::DigitalOcean(_) => Provider::DigitalOcean,
            UploadTarget::Linode { .. } => Provider::Linode,
            UploadTarget::KakaoCloud { .. } => Provider::KakaoCloud,
        }
    }

    /// What the preflight checks: the URL for DigitalOcean, else the file.
    pub fn location(&self) -> &str {
        match self {
            UploadTarget::DigitalOcean(r) => &r.url,
            UploadTarget::Linode { image, .. } | UploadTarget::KakaoCloud { image, .. } => image,
        }
    }
}

/// Options for [`upload`].
pub struct UploadOptions<'a> {
    /// Upload even when the check fails (loudly: the caller should say so).
    pub skip_check: bool,
    /// Print the requests instead of sending them.
    pub dry_run: bool,
    /// Poll pace and timeout.
    pub poll: PollOptions,
    /// How to open the image.
    pub open: OpenOptions,
    /// Progress of long steps: (what, done bytes, total bytes).
    pub progress: &'a (dyn Fn(&str, u64, u64) + Sync),
}

impl Default for UploadOptions<'_> {
    fn default() -> Self {
        Self {
            skip_check: false,
            dry_run: false,
            poll: PollOptions::default(),
            open: OpenOptions::default(),
            progress: &|_, _, _| {},
        }
    }
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadResult {
    /// The provider.
    pub provider: Provider,
    /// The preflight report (absent with `skip_check`).
    pub check: Option<Report>,
    /// The provider's final image object (absent in a dry run).
    pub image: Option<serde_json::Value>,
    /// The requests a dry run would send.
    pub dry_run: Vec<String>,
    /// MD5 of the uploaded bytes (Linode; Terraform's `file_hash`).
    pub md5: Option<String>,
    /// The temporary `.img.gz` written for Linode when the input was not
    /// one (removed once the upload ended).
    pub converted: Option<PathBuf>,
}

/// Runs the preflight check, converts if the provider needs it, uploads and
/// waits for the provider to finish.
pub fn upload(target: &UploadTarget, options: &UploadOptions<'_>) -> Result<UploadResult, Error> {
    let provider = target.provider();
    let report = if options.skip_check {
        None
    } else {
        let r = check(
            target.location(),
            &CheckOptions {
                providers: vec![provider],
                open: options.open.clone(),
            },
        )?;
        if let Some(v) = r
            .verdicts
            .iter()
            .find(|v| v.provider == provider && !v.pass)
        {
            let codes = v
                .findings
                .iter()
                .filter(|f| f.severity == crate::Severity::Error)
                .map(|f| f.code.to_owned())
                .collect();
            return Err(Error::CheckFailed {
                provider: provider.to_string(),
                codes,
            });
        }
        Some(r)
    };
    let mut result = UploadResult {
        provider,
        check: report,
        image: None,
        dry_run: Vec::new(),
        md5: None,
        converted: None,
    };
    let outcome = match target {
        UploadTarget::DigitalOcean(req) => {
            let api = digitalocean::client_from_env()?;
            digitalocean::import(&api, req, &options.poll, options.dry_run)?
        }
        UploadTarget::Linode { image, request } => {
            let mut request = request.clone();
            if let Some(g) = result.check.as_ref().and_then(|r| r.guest.as_ref()) {
                request.cloud_init =
                    g.cloud_init.installed || !g.cloud_init.alternatives.is_empty();
            }
            let api = linode::client_from_env()?;
            let (gz, uncompressed, temp) = linode_input(image, options)?;
            let sent = |n: u64| (options.progress)("uploading", n, 0);
            let r = linode::upload(
                &api,
                &request,
                &gz,
                uncompressed,
                &options.poll,
                options.dry_run,
                &sent,
            );
            if let Some(t) = &temp {
                // Removed whatever happened: a stray multi-GB file is worse
                // than converting again on a retry.
                let _ = std::fs::remove_file(t);
            }
            let (outcome, uploaded) = r?;
            result.md5 = uploaded.map(|u| u.md5);
            result.converted = temp;
            outcome
        }
        UploadTarget::KakaoCloud {
            volume_id,
            name,
            description,
            ..
        } => {
            let cred = kakaocloud::Credential::from_env()?;
            let mut session = kakaocloud::Session::new(cred, kakaocloud::Endpoints::from_env());
            kakaocloud::create_from_volume(
                &mut session,
                volume_id,
                name,
                description.as_deref(),
                &options.poll,
                options.dry_run,
            )?
        }
    };
    match outcome {
        Outcome::DryRun(lines) => result.dry_run = lines,
        Outcome::Image(v) => result.image = Some(v),
    }
    Ok(result)
}

/// The `.img.gz` to send to Linode: the input itself when it is raw inside
/// gzip, else a conversion written next to the input. Returns (path,
/// uncompressed size, temporary file to remove).
fn linode_input(
    image: &str,
    options: &UploadOptions<'_>,
) -> Result<(PathBuf, u64, Option<PathBuf>), Error> {
    let input = crate::open(image, &options.open)?;
    let size = input.disk.virtual_size();
    if input.container == Some(Container::Gzip) && input.disk.info().format == Format::Raw {
        return Ok((PathBuf::from(image), size, None));
    }
    if options.dry_run {
        return Ok((PathBuf::from(format!("{image}.img.gz")), size, None));
    }
    let p = Path::new(image);
    let stem = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let target = p.with_file_name(format!(".{stem}.imgcheck-upload.img.gz"));
    let out = AtomicOutput::create(&target, true)?;
    let tick = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        let done = tick.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        (options.progress)("compressing", done, size);
    };
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
