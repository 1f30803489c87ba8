//! `imgcheck convert`: `-O raw|qcow2`, `--compress gzip|bzip2`, or
//! `--for linode|digitalocean` to pick what the provider takes.
//!
//! Provider choices (providers.md):
//! * Linode accepts only gzip-compressed raw: `NAME.img.gz`.
//! * DigitalOcean accepts raw/qcow2/vhdx/vdi/vmdk, optionally gzip/bzip2.
//!   We pick gzip-compressed qcow2 with zero clusters left out
//!   (`NAME.qcow2.gz`): qcow2 drops free space entirely (a raw `.img.gz`
//!   still encodes every zero, about 1 MiB per GiB of empty space), and
//!   gzip then shrinks the data that is there (binaries, text, filesystem
//!   metadata: typically 2-3x). Only data that does not compress at all
//!   (already-compressed files) makes `.qcow2.gz` larger than `.qcow2`, by
//!   about 0.1%. bzip2 would be a little smaller still but 5-10x slower to
//!   make, and qcow2 + bzip2 is not supported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imgcheck::Error;
use imgcheck::convert::{AtomicOutput, Compress, Options, OutputFormat, convert};
use serde_json::json;

use super::args::{CompressArg, ConvertArgs, OutFormat, Provider};
use super::info::open_options;
use super::output::progress_bar;

/// Extensions stripped from the input name when naming the output.
const IMAGE_EXTS: &[&str] = &[
    "raw", "img", "qcow2", "qcow", "vmdk", "vhdx", "vdi", "vhd", "bin",
];

/// What to write, from the flags.
fn plan(a: &ConvertArgs) -> (OutputFormat, Compress) {
    match a.provider {
        Some(p) => provider_plan(p),
        None => (
            match a.out_format.unwrap_or(OutFormat::Raw) {
                OutFormat::Raw => OutputFormat::Raw,
                OutFormat::Qcow2 => OutputFormat::Qcow2,
            },
            match a.compress.unwrap_or(CompressArg::None) {
                CompressArg::None => Compress::None,
                CompressArg::Gzip => Compress::Gzip,
                CompressArg::Bzip2 => Compress::Bzip2,
            },
        ),
    }
}

/// What `--for P` writes.
fn provider_plan(p: Provider) -> (OutputFormat, Compress) {
    match p {
        Provider::Linode => (OutputFormat::Raw, Compress::Gzip),
        Provider::Digitalocean => (OutputFormat::Qcow2, Compress::Gzip),
    }
}

/// `NAME.EXT[.gz|.bz2]` next to the input, NAME being the input's file name
/// without its image extension.
fn default_output(input: &str, format: OutputFormat, compress: Compress) -> PathBuf {
    let p = Path::new(input);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = match name.rsplit_once('.') {
        Some((s, ext))
            if !s.is_empty() && IMAGE_EXTS.contains(&ext.to_ascii_lowercase().as_str()) =>
        {
            s.to_owned()
        }
        _ => name,
    };
    let ext = match format {
        OutputFormat::Raw => "img",
        OutputFormat::Qcow2 => "qcow2",
    };
    let z = match compress {
        Compress::None => "",
        Compress::Gzip => ".gz",
        Compress::Bzip2 => ".bz2",
    };
    p.with_file_name(format!("{stem}.{ext}{z}"))
}

fn format_name(format: OutputFormat, compress: Compress) -> String {
    let f = match format {
        OutputFormat::Raw => "raw",
        OutputFormat::Qcow2 => "qcow2",
    };
    match compress {
        Compress::None => f.to_owned(),
        Compress::Gzip => format!("{f}+gzip"),
        Compress::Bzip2 => format!("{f}+bzip2"),
    }
}

/// Runs the command.
pub fn run(a: &ConvertArgs) -> Result<ExitCode, Error> {
    let (format, compress) = plan(a);
    if format == OutputFormat::Qcow2 && compress == Compress::Bzip2 {
        return Err(Error::Usage(
            "qcow2 output cannot be bzip2-compressed: use --compress gzip, or -O raw --compress bzip2"
                .into(),
        ));
    }
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| default_output(&a.input, format, compress));
    if same_file(Path::new(&a.input), &output) {
        return Err(Error::Usage(format!(
            "{}: output would overwrite the input",
            output.display()
        )));
    }
    let input = imgcheck::open(&a.input, &open_options(&a.open))?;
    let out = AtomicOutput::create(&output, a.force)?.with_sync(a.sync);
    let pb = progress_bar(input.disk.virtual_size(), a.quiet || a.json, "converting");
    let tick = |n: u64| pb.inc(n);
    let options = Options {
        threads: a.threads,
        level: a.level,
    };
    let result = convert(&input.disk, &out, format, compress, &options, &tick);
    pb.finish_and_clear();
    let stats = result?;
    out.commit()?;
    let fmt = format_name(format, compress);
    if a.json {
        println!(
            "{}",
            json!({
                "input": a.input, "output": output, "format": fmt,
                "provider": a.provider.map(provider_name),
                "virtual-size": stats.virtual_size, "bytes-read": stats.bytes_read,
                "bytes-written": stats.bytes_written,
            })
        );
    } else if !a.quiet {
        println!("{} ({fmt})", output.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The provider's name as `--for` spells it.
pub fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Linode => "linode",
        Provider::Digitalocean => "digitalocean",
    }
}

/// Writes what `imgcheck convert --for P INPUT` would write, into `dir`
/// (same name, so a check of it says what the real output would get), and
/// returns its path and the path `convert` would have written it to.
/// The output is byte-identical to the real one (same encoder, same level;
/// the thread count does not change the bytes), so its MD5 is the real one's.
pub fn convert_for(
    input: &str,
    p: Provider,
    dir: &Path,
    open: &super::args::OpenArgs,
) -> Result<(PathBuf, String), Error> {
    let (format, compress) = provider_plan(p);
    let named = default_output(input, format, compress);
    let path = dir.join(named.file_name().unwrap_or_default());
    let disk = imgcheck::open(input, &open_options(open))?;
    let out = AtomicOutput::create(&path, false)?;
    convert(
        &disk.disk,
        &out,
        format,
        compress,
        &Options::default(),
        &|_| {},
    )?;
    out.commit()?;
    Ok((path, named.to_string_lossy().into_owned()))
}

/// True when both paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
