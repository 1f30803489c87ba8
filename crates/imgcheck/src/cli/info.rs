//! `imgcheck info`.

use std::process::ExitCode;

use imgcheck::{Error, Input};
use serde_json::{Value, json};

use super::args::{InfoArgs, OpenArgs};
use super::output::human_size;

/// Turns the shared flags into library options.
pub fn open_options(a: &OpenArgs) -> imgcheck::OpenOptions {
    imgcheck::OpenOptions {
        format: a.format,
        dependencies: if a.allow_external {
            imgcheck::disk::DependencyPolicy::AllowExternal
        } else {
            imgcheck::disk::DependencyPolicy::SameDirectory
        },
        progress: super::output::decompress_progress(),
        ..Default::default()
    }
}

/// The JSON document: keys and types as in `qemu-img info --output=json`,
/// plus imgcheck's own (`compression`, `subformat`, `external-references`).
pub fn info_json(input: &Input) -> Value {
    let info = input.disk.info();
    let mut o = serde_json::Map::new();
    o.insert("filename".into(), json!(input.location));
    o.insert("format".into(), json!(info.format.as_str()));
    o.insert("virtual-size".into(), json!(info.virtual_size));
    if let Some(a) = input.allocated_size {
        o.insert("actual-size".into(), json!(a));
    }
    o.insert("file-size".into(), json!(input.file_size));
    if let Some(c) = info.cluster_size {
        o.insert("cluster-size".into(), json!(c));
    }
    if let Some(b) = &info.backing_file {
        o.insert("backing-filename".into(), json!(b));
    }
    o.insert("dirty-flag".into(), json!(info.dirty));
    o.insert(
        "compression".into(),
        json!(input.container.map(|c| c.as_str())),
    );
    if let Some(s) = &info.subformat {
        o.insert("subformat".into(), json!(s));
    }
    if !info.external_refs.is_empty() {
        o.insert("external-references".into(), json!(info.external_refs));
    }
    if !info.format_specific.is_empty() {
        o.insert(
            "format-specific".into(),
            json!({"type": info.format.as_str(), "data": Value::Object(info.format_specific.clone())}),
        );
    }
    Value::Object(o)
}

/// Runs the command.
pub fn run(a: &InfoArgs) -> Result<ExitCode, Error> {
    let input = imgcheck::open(&a.image, &open_options(&a.open))?;
    let info = input.disk.info();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info_json(&input)).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("image: {}", input.location);
    println!("file format: {}", info.format);
    if let Some(c) = input.container {
        println!("compression: {c}");
    }
    if let Some(s) = &info.subformat {
        println!("subformat: {s}");
    }
    println!("virtual size: {}", human_size(info.virtual_size));
    println!("file size: {}", human_size(input.file_size));
    if let Some(a) = input.allocated_size {
        println!("disk size: {}", human_size(a));
    }
    if let Some(c) = info.cluster_size {
        println!("cluster_size: {c}");
    }
    if let Some(b) = &info.backing_file {
        println!("backing file: {b} (not opened)");
    }
    for r in &info.external_refs {
        println!(
            "{}: {}{}",
            r.kind,
            r.name,
            if r.opened { "" } else { " (not opened)" }
        );
    }
    if !info.format_specific.is_empty() {
        println!("Format specific information:");
        for (k, v) in &info.format_specific {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("    {k}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
