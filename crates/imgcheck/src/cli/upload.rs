//! `imgcheck upload`: preflight check, conversion, provider API. The same
//! path serves `imgcheck packer --upload` ([`upload_one`]).
//!
//! Output: the result on stdout (human lines or `--json`), progress bars
//! and status lines on stderr (status lines only when they change; none
//! with `--quiet` or `--json`), warnings of the verdict on stderr before
//! the upload starts. A refused image exits 1 with its findings.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use imgcheck::providers::{PollOptions, digitalocean, linode};
use imgcheck::{DoSource, Error, OpenOptions, Provider, UploadOptions, UploadResult, UploadTarget};

use super::args::{UploadArgs, UploadFlags};
use super::info::open_options;
use super::output::{print_findings, print_out, progress_bar};

/// Builds the target from the flags, or a usage error naming what is
/// missing.
pub fn target(
    provider: Provider,
    image: Option<&str>,
    url: Option<&str>,
    f: &UploadFlags,
) -> Result<UploadTarget, Error> {
    let need = |v: Option<&str>, flag: &str| {
        v.map(str::to_owned)
            .ok_or_else(|| Error::Usage(format!("--provider {provider} needs {flag}")))
    };
    let file_name = |image: &str| {
        std::path::Path::new(image)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into())
    };
    Ok(match provider {
        Provider::DigitalOcean => {
            let region = need(f.region.as_deref(), "--region SLUG")?;
            // A URL given as the IMAGE is a URL import.
            let (image, url) = match image {
                Some(i)
                    if url.is_none() && (i.starts_with("http://") || i.starts_with("https://")) =>
                {
                    (None, Some(i))
                }
                _ => (image, url),
            };
            let (source, url, default_name) = match (url, image) {
                (Some(u), None) => (
                    DoSource::Url,
                    u.to_owned(),
                    u.split(['?', '#'])
                        .next()
                        .and_then(|p| p.rsplit('/').next())
                        .unwrap_or("image")
                        .to_owned(),
                ),
                (None, Some(img)) => (
                    DoSource::File {
                        image: img.to_owned(),
                        bucket: need(
                            f.spaces_bucket.as_deref(),
                            "--spaces-bucket BUCKET for a local file (it is uploaded to Spaces, then imported)",
                        )?,
                        spaces_region: f.spaces_region.clone().unwrap_or_else(|| region.clone()),
                        keep_object: f.keep_object,
                    },
                    String::new(),
                    file_name(img),
                ),
                (Some(_), Some(_)) => {
                    return Err(Error::Usage(
                        "give either an IMAGE file or --url, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(Error::Usage(
                        "--provider digitalocean needs an IMAGE file or --url URL".into(),
                    ));
                }
            };
            UploadTarget::DigitalOcean {
                source,
                request: digitalocean::ImportRequest {
                    name: f
                        .name
                        .clone()
                        .unwrap_or_else(|| linode::default_label(&default_name)),
                    url,
                    region,
                    distribution: f.distribution.clone(),
                    description: f.description.clone(),
                    tags: f.tags.clone(),
                    regions: f.regions.clone(),
                    presigned: false,
                },
            }
        }
        Provider::Linode => {
            if url.is_some() {
                return Err(Error::Usage(
                    "--provider linode uploads a local file; --url is for DigitalOcean".into(),
                ));
            }
            let image = need(image, "an IMAGE file")?;
            let label = f
                .name
                .clone()
                .unwrap_or_else(|| linode::default_label(&file_name(&image)));
            UploadTarget::Linode {
                request: linode::UploadRequest {
                    label,
                    region: need(f.region.as_deref(), "--region REGION")?,
                    description: f.description.clone(),
                    tags: f.tags.clone(),
                    cloud_init: false,
                },
                image,
                cloud_init: f.cloud_init,
            }
        }
        Provider::KakaoCloud => UploadTarget::KakaoCloud {
            image: need(
                image,
                "an IMAGE file (the image the volume was written from)",
            )?,
            volume_id: need(
                f.volume_id.as_deref(),
                "--volume-id ID (KakaoCloud creates images from a root volume)",
            )?,
            name: need(f.name.as_deref(), "--name NAME")?,
            description: f.description.clone(),
        },
    })
}

/// Runs one upload with progress on stderr (unless `quiet`).
pub fn upload_one(
    target: &UploadTarget,
    f: &UploadFlags,
    open: OpenOptions,
    quiet: bool,
) -> Result<UploadResult, Error> {
    if f.skip_check {
        eprintln!(
            "imgcheck: warning: --skip-check: uploading WITHOUT checking the image against {}",
            target.provider()
        );
    }
    let pb = progress_bar(0, quiet, "uploading");
    let progress = |what: &str, done: u64, total: u64| {
        pb.set_length(total);
        pb.set_message(what.to_owned());
        pb.set_position(done);
    };
    let last = Mutex::new(String::new());
    let status = |s: &str| {
        if quiet {
            return;
        }
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if *last != s {
            *last = s.to_owned();
            pb.suspend(|| eprintln!("imgcheck: {s}"));
        }
    };
    let options = UploadOptions {
        skip_check: f.skip_check,
        dry_run: f.dry_run,
        wait: !f.no_wait,
        keep: f.keep,
        poll: PollOptions {
            interval: Duration::from_secs(f.poll_interval.max(1)),
            timeout: Duration::from_secs(f.timeout),
        },
        open,
        progress: &progress,
        status: &status,
    };
    let result = imgcheck::upload(target, &options);
    pb.finish_and_clear();
    let result = result?;
    if !quiet && !result.warnings.is_empty() {
        eprintln!(
            "imgcheck: {} accepts the image, with warnings:",
            result.provider
        );
        print_findings(result.provider.as_str(), &result.warnings);
    }
    Ok(result)
}

/// Runs the command.
pub fn run(a: &UploadArgs) -> Result<ExitCode, Error> {
    let target = target(a.provider, a.image.as_deref(), a.url.as_deref(), &a.flags)?;
    let result = upload_one(&target, &a.flags, open_options(&a.open), a.quiet || a.json)?;
    if a.json {
        print_out(&(serde_json::to_string_pretty(&result).unwrap_or_default() + "\n"));
    } else {
        print_out(&human(&result, ""));
    }
    Ok(ExitCode::SUCCESS)
}

/// The result as lines for a person, each prefixed with `indent`.
pub fn human(r: &UploadResult, indent: &str) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(indent);
        out.push_str(&s);
        out.push('\n');
    };
    if !r.dry_run.is_empty() {
        line("dry run: would do".into());
        for l in &r.dry_run {
            line(format!("  {l}"));
        }
    }
    if let Some(img) = &r.image {
        let id = img
            .get("id")
            .map(|v| v.to_string().trim_matches('"').to_owned())
            .unwrap_or_default();
        let status = img.get("status").and_then(|v| v.as_str()).unwrap_or("");
        line(format!("{}: image {id} is {status}", r.provider));
    }
    if let Some(m) = &r.md5 {
        line(format!("md5: {m}"));
    }
    if let Some(d) = r.derived.as_object() {
        for (k, v) in d {
            line(format!("{k}: {v}"));
        }
    }
    if let Some(c) = &r.converted {
        line(format!("kept: {}", c.display()));
    }
    for n in &r.notes {
        line(n.clone());
    }
    if r.provider == Provider::KakaoCloud
        && let Some(k) = r
            .check
            .as_ref()
            .and_then(|c| c.guest.as_ref())
            .map(|g| &g.kakaocloud)
    {
        line(format!(
            "os_info: type={} distro={} architecture={} admin_user={}; min_disk: {} GB",
            k.os_type.as_deref().unwrap_or("unknown"),
            k.distro.as_deref().unwrap_or("unknown"),
            k.architecture.as_deref().unwrap_or("unknown"),
            k.admin_user.as_deref().unwrap_or("unknown"),
            k.min_disk_gb
        ));
    }
    out
}
