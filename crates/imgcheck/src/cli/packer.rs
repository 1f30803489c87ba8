//! `imgcheck packer`: a Packer `shell-local` post-processor hook.
//!
//! Packer's `manifest` post-processor writes `packer-manifest.json` with one
//! entry per build and the run's uuid in `last_run_uuid`. This command
//! checks every artifact file of the builds of that run (file names are
//! relative to the directory Packer ran in, which is where the manifest
//! lives unless told otherwise) and exits non-zero when one fails, which
//! fails the Packer build. With `--upload --provider P`, each passing
//! artifact is uploaded to P exactly as `imgcheck upload --provider P FILE`
//! would (check of what is uploaded, conversion, the provider's API).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imgcheck::{CheckOptions, Error, Provider};
use serde_json::{Value, json};

use super::args::PackerArgs;
use super::info::open_options;
use super::output::print_out;

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
            if let Some(n) = f.get("name").and_then(Value::as_str)
                && is_artifact_image(n)
            {
                let p = Path::new(n);
                out.push(if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                });
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
    let upload_to = match (a.upload, a.providers.as_slice()) {
        (false, _) => None,
        (true, [p]) => Some(*p),
        (true, _) => {
            return Err(Error::Usage(
                "--upload needs exactly one --provider: the provider to upload to".into(),
            ));
        }
    };
    if let Some(p) = upload_to {
        // Usage errors before any check runs.
        for f in &files {
            super::upload::target(p, Some(&f.display().to_string()), None, &a.flags)?;
        }
    }
    let mut all_pass = true;
    let mut results = Vec::new();
    for f in &files {
        let loc = f.display().to_string();
        if let Some(p) = upload_to {
            // The upload's preflight is the check: it judges the guest as
            // the file the provider gets (a qcow2 converted for Linode is
            // not refused for being qcow2).
            let target = super::upload::target(p, Some(&loc), None, &a.flags)?;
            match super::upload::upload_one(&target, &a.flags, open_options(&a.open), a.json) {
                Ok(r) => {
                    if !a.json {
                        print_out(&format!("imgcheck: {loc}: PASS\n"));
                        print_out(&super::upload::human(&r, "  "));
                    }
                    results
                        .push(json!({"file": loc, "pass": true, "report": r.check, "upload": r}));
                }
                Err(Error::CheckFailed { provider, findings }) => {
                    all_pass = false;
                    if !a.json {
                        print_out(&format!("imgcheck: {loc}: FAIL\n"));
                        super::output::print_findings(&provider, &findings);
                    }
                    results.push(
                        json!({"file": loc, "pass": false, "findings": findings, "upload": null}),
                    );
                }
                Err(e) => return Err(e),
            }
            continue;
        }
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
            let mut text = format!("imgcheck: {loc}: {}\n", if pass { "PASS" } else { "FAIL" });
            for v in &report.verdicts {
                for fd in &v.findings {
                    if fd.severity == imgcheck::Severity::Info {
                        continue;
                    }
                    text.push_str(&format!(
                        "  {} {} {}: {}\n",
                        v.provider, fd.severity, fd.code, fd.message
                    ));
                }
            }
            print_out(&text);
        }
        results.push(json!({"file": loc, "pass": pass, "report": report, "upload": null}));
    }
    if a.json {
        print_out(&(serde_json::to_string_pretty(&results).unwrap_or_default() + "\n"));
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
