//! `imgcheck packer`: a Packer `shell-local` post-processor hook.
//!
//! Packer's `manifest` post-processor writes `packer-manifest.json` with one
//! entry per build and the run's uuid in `last_run_uuid`. This command
//! checks every artifact file of the builds of that run (file names are
//! relative to the directory Packer ran in, which is where the manifest
//! lives unless told otherwise) and exits non-zero when one fails, which
//! fails the Packer build. With `--upload`, passing artifacts are uploaded
//! to Linode (the provider that takes a local file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imgcheck::providers::linode;
use imgcheck::{CheckOptions, Error, Provider, UploadOptions, UploadTarget};
use serde_json::{Value, json};

use super::args::PackerArgs;
use super::info::open_options;

/// Largest manifest read (Packer's are a few KiB).
const MAX_MANIFEST: u64 = 16 << 20;

/// Files in a manifest that are not disk images (OVF descriptors,
/// checksums, VMDK extent files read through their descriptor).
fn is_artifact_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let skip_ext = [
        ".ovf", ".mf", ".json", ".txt", ".log", ".sha256", ".sha512", ".md5", ".sig", ".asc",
    ];
    if skip_ext.iter().any(|e| lower.ends_with(e)) {
        return false;
    }
    let stem = lower.strip_suffix(".vmdk").unwrap_or("");
    let extent = stem.ends_with("-flat")
        || stem.rsplit_once('-').is_some_and(|(_, t)| {
            t.len() == 4
                && (t.starts_with('s') || t.starts_with('f'))
                && t[1..].bytes().all(|b| b.is_ascii_digit())
        });
    !extent
}

/// The artifact files of the last run.
pub fn artifacts(manifest: &Path) -> Result<Vec<PathBuf>, Error> {
    let name = manifest.display().to_string();
    let meta = std::fs::metadata(manifest)
        .map_err(|source| imgcheck::source::SourceError::open(&name, source))?;
    if meta.len() > MAX_MANIFEST {
        return Err(Error::Usage(format!(
            "{name}: {} bytes is too large for a Packer manifest",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(manifest)
        .map_err(|source| imgcheck::source::SourceError::open(&name, source))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{name}: not a Packer manifest: {e}")))?;
    let last = v.get("last_run_uuid").and_then(Value::as_str).unwrap_or("");
    let dir = manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for b in v
        .get("builds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !last.is_empty() && b.get("packer_run_uuid").and_then(Value::as_str) != Some(last) {
            continue;
        }
        for f in b
            .get("files")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = f.get("name").and_then(Value::as_str) {
                if is_artifact_image(n) {
                    let p = Path::new(n);
                    out.push(if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        dir.join(p)
                    });
                }
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "{name}: no artifact files for the last run ({last})"
        )));
    }
    Ok(out)
}

/// Runs the command: 0 when every artifact passes, 1 when one fails.
pub fn run(a: &PackerArgs) -> Result<ExitCode, Error> {
    let files = artifacts(&a.manifest)?;
    let providers = if a.providers.is_empty() {
        Provider::ALL.to_vec()
    } else {
        a.providers.clone()
    };
    if a.upload && a.region.is_none() {
        return Err(Error::Usage(
            "--upload needs --region (Linode region for the upload)".into(),
        ));
    }
    let mut all_pass = true;
    let mut results = Vec::new();
    for f in &files {
        let loc = f.display().to_string();
        let report = imgcheck::check(
            &loc,
            &CheckOptions {
                providers: providers.clone(),
                open: open_options(&a.open),
            },
        )?;
        let pass = report.pass();
        all_pass &= pass;
        if !a.json {
            println!("imgcheck: {loc}: {}", if pass { "PASS" } else { "FAIL" });
            for v in &report.verdicts {
                for fd in v
                    .findings
                    .iter()
                    .filter(|x| x.severity == imgcheck::Severity::Error)
                {
                    println!("  {} {}: {}", v.provider, fd.code, fd.message);
                }
            }
        }
        let mut uploaded = Value::Null;
        if pass && a.upload {
            let target = UploadTarget::Linode {
                image: loc.clone(),
                request: linode::UploadRequest {
                    label: a.label.clone().unwrap_or_else(|| {
                        f.file_stem()
                            .map_or("image".into(), |s| s.to_string_lossy().into_owned())
                    }),
                    region: a.region.clone().unwrap_or_default(),
                    ..Default::default()
                },
            };
            let r = imgcheck::upload(
                &target,
                &UploadOptions {
                    dry_run: a.dry_run,
                    skip_check: true,
                    ..Default::default()
                },
            )?;
            if !a.json {
                for l in &r.dry_run {
                    println!("  dry run: {l}");
                }
                if let Some(img) = &r.image {
                    println!(
                        "  uploaded to Linode: {}",
                        img.get("id").unwrap_or(&Value::Null)
                    );
                }
            }
            uploaded = serde_json::to_value(&r).unwrap_or(Value::Null);
        }
        results.push(json!({"file": loc, "pass": pass, "report": report, "upload": uploaded}));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    }
    Ok(if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::is_artifact_image;

    #[test]
    fn extents_and_sidecars_are_not_artifacts() {
        assert!(is_artifact_image("out/disk.qcow2"));
        assert!(is_artifact_image("disk.vmdk"));
        assert!(!is_artifact_image("disk-flat.vmdk"));
        assert!(!is_artifact_image("disk-s001.vmdk"));
        assert!(!is_artifact_image("disk-f012.vmdk"));
        assert!(!is_artifact_image("box.ovf"));
        assert!(!is_artifact_image("SHA256SUMS.sha256"));
    }
}
