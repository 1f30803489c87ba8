//! `imgcheck upload`: preflight check, conversion, provider API.

use std::process::ExitCode;
use std::time::Duration;

use imgcheck::providers::{PollOptions, digitalocean, linode};
use imgcheck::{Error, Provider, UploadOptions, UploadResult, UploadTarget};

use super::args::UploadArgs;
use super::info::open_options;
use super::output::progress_bar;

/// Builds the target from the flags, or a usage error naming what is missing.
fn target(a: &UploadArgs) -> Result<UploadTarget, Error> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| Error::Usage(format!("--provider {} needs {flag}", a.provider)))
    };
    Ok(match a.provider {
        Provider::DigitalOcean => UploadTarget::DigitalOcean(digitalocean::ImportRequest {
            url: need(&a.url, "--url URL (DigitalOcean imports from a URL)")?,
            region: need(&a.region, "--region SLUG")?,
            name: need(&a.name, "--name NAME")?,
            distribution: a.distribution.clone(),
            description: a.description.clone(),
            tags: a.tags.clone(),
        }),
        Provider::Linode => {
            let image = need(&a.image, "an IMAGE file")?;
            let label = a.name.clone().unwrap_or_else(|| {
                std::path::Path::new(&image)
                    .file_name()
                    .map(|n| {
                        n.to_string_lossy()
                            .split('.')
                            .next()
                            .unwrap_or("image")
                            .to_owned()
                    })
                    .unwrap_or_else(|| "image".into())
            });
            UploadTarget::Linode {
                image,
                request: linode::UploadRequest {
                    label,
                    region: need(&a.region, "--region REGION")?,
                    description: a.description.clone(),
                    tags: a.tags.clone(),
                    cloud_init: false,
                },
            }
        }
        Provider::KakaoCloud => UploadTarget::KakaoCloud {
            image: need(
                &a.image,
                "an IMAGE file (the image the volume was written from)",
            )?,
            volume_id: need(
                &a.volume_id,
                "--volume-id ID (KakaoCloud creates images from a root volume)",
            )?,
            name: need(&a.name, "--name NAME")?,
            description: a.description.clone(),
        },
    })
}

/// Runs the command.
pub fn run(a: &UploadArgs) -> Result<ExitCode, Error> {
    let target = target(a)?;
    if a.skip_check {
        eprintln!(
            "imgcheck: warning: --skip-check: uploading WITHOUT checking the image against {}",
            a.provider
        );
    }
    let pb = progress_bar(0, a.json, "uploading");
    let progress = |what: &str, done: u64, total: u64| {
        if total > 0 {
            pb.set_length(total);
        }
        pb.set_message(what.to_owned());
        pb.set_position(done);
    };
    let options = UploadOptions {
        skip_check: a.skip_check,
        dry_run: a.dry_run,
        poll: PollOptions {
            interval: Duration::from_secs(a.poll_interval.max(1)),
            timeout: Duration::from_secs(a.timeout),
        },
        open: open_options(&a.open),
        progress: &progress,
    };
    let result = imgcheck::upload(&target, &options);
    pb.finish_and_clear();
    let result = result?;
    print(a, &result);
    Ok(ExitCode::SUCCESS)
}

fn print(a: &UploadArgs, r: &UploadResult) {
    if a.json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        return;
    }
    if !r.dry_run.is_empty() {
        println!("dry run: would send");
        for l in &r.dry_run {
            println!("  {l}");
        }
    }
    if let Some(img) = &r.image {
        let id = img
            .get("id")
            .map(|v| v.to_string().trim_matches('"').to_owned())
            .unwrap_or_default();
        let status = img.get("status").and_then(|v| v.as_str()).unwrap_or("");
        println!("{}: image {id} is {status}", r.provider);
    }
    if let Some(m) = &r.md5 {
        println!("md5: {m}");
    }
    if r.provider == Provider::KakaoCloud {
        if let Some(k) = r
            .check
            .as_ref()
            .and_then(|c| c.guest.as_ref())
            .map(|g| &g.kakaocloud)
        {
            println!(
                "os_info: type={} distro={} architecture={} admin_user={}; min_disk: {} GB",
                k.os_type.as_deref().unwrap_or("unknown"),
                k.distro.as_deref().unwrap_or("unknown"),
                k.architecture.as_deref().unwrap_or("unknown"),
                k.admin_user.as_deref().unwrap_or("unknown"),
                k.min_disk_gb
            );
        }
    }
}
