//! Flags, as clap types.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use imgcheck_disk::Format;

/// Check cloud VM images against provider rules before you upload them.
#[derive(Debug, Parser)]
#[command(name = "imgcheck", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands. A first argument that is not one of them is an image to
/// check (`imgcheck disk.img` = `imgcheck check disk.img`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show an image's format, sizes and format-specific fields.
    Info(InfoArgs),
    /// Convert an image to another format.
    Convert(ConvertArgs),
    /// Check images against provider rules (the default command:
    /// `imgcheck IMAGE...`).
    Check(CheckArgs),
    /// Check an image for a provider, convert it if needed, and upload it.
    Upload(UploadArgs),
    /// Packer post-processor hook: check the artifacts in packer-manifest.json.
    Packer(PackerArgs),
    /// Terraform `external` data source: reads {"image","provider"[,"for","strict"]}
    /// as JSON on stdin, prints the result as a flat JSON map of strings.
    Terraform(TerraformArgs),
}

/// Options shared by every command that opens an image.
#[derive(Debug, Args, Clone)]
pub struct OpenArgs {
    /// Read the input as this format instead of detecting it.
    #[arg(long = "format", short = 'f', value_parser = parse_format)]
    pub format: Option<Format>,
    /// Follow references (VMDK extents) outside the image's directory.
    #[arg(long)]
    pub allow_external: bool,
}

/// `imgcheck info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Image path.
    pub image: String,
    /// Print JSON (keys as in `qemu-img info --output=json`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Output formats of `convert`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    /// Raw disk image, sparse.
    Raw,
    /// qcow2 v3 (64 KiB clusters), zero clusters left out.
    Qcow2,
}

/// Compression around the output of `convert`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CompressArg {
    /// No compression.
    None,
    /// gzip (one member, compressed on all cores).
    Gzip,
    /// bzip2 (concatenated streams, compressed on all cores).
    Bzip2,
}

/// Providers `convert --for` knows the upload format of.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Provider {
    /// Linode/Akamai: raw + gzip (`NAME.img.gz`).
    Linode,
    /// DigitalOcean: gzip-compressed qcow2, zero clusters left out
    /// (`NAME.qcow2.gz`).
    #[value(alias = "do")]
    Digitalocean,
}

/// `imgcheck convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input image.
    pub input: String,
    /// Output path (default: next to the input, named after it and the
    /// output format, e.g. `disk.img.gz`).
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(
        short = 'O',
        long = "output-format",
        value_enum,
        conflicts_with = "provider"
    )]
    pub out_format: Option<OutFormat>,
    /// Compress the output.
    #[arg(long, value_enum, conflicts_with = "provider")]
    pub compress: Option<CompressArg>,
    /// Pick the smallest output this provider accepts.
    #[arg(long = "for", value_enum)]
    pub provider: Option<Provider>,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Compression level (gzip 1-9, default 6; bzip2 1-9, default 9).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub level: Option<u32>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
    /// fsync the output before moving it into place (durable across a
    /// power cut; slower, and not what qemu-img does by default).
    #[arg(long)]
    pub sync: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// `imgcheck check` (also `imgcheck IMAGE...`).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("inputs").required(true).multiple(true).args(["images", "from"])))]
pub struct CheckArgs {
    /// Image paths or http(s) URLs; several are checked in parallel.
    pub images: Vec<String>,
    /// Also check the paths/URLs listed in FILE, one per line (`-`: stdin;
    /// blank lines and lines starting with `#` are skipped).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Print one JSON object per line for each image as soon as its check
    /// finishes (completion order), and a summary line on stderr.
    #[arg(long, conflicts_with = "json")]
    pub jsonl: bool,
    /// Check at most N images at once (default: one per core).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Check against this provider only: digitalocean, linode or kakaocloud
    /// (repeatable or comma-separated; default: all three).
    #[arg(long = "provider", short = 'p', value_delimiter = ',', value_parser = parse_provider)]
    pub providers: Vec<imgcheck::Provider>,
    /// Print the report as JSON: one object per image, an array for
    /// several (schema in docs/check-json.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Where `imgcheck upload` and `imgcheck packer --upload` read credentials
/// and API overrides (shown by `--help`).
pub const UPLOAD_ENV_HELP: &str = "\
Credentials (read from the environment only, never from flags):
  DigitalOcean  DIGITALOCEAN_ACCESS_TOKEN or DIGITALOCEAN_TOKEN
                for a local file also SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY
                (or DIGITALOCEAN_SPACES_ACCESS_KEY / DIGITALOCEAN_SPACES_SECRET_KEY)
  Linode        LINODE_TOKEN or LINODE_CLI_TOKEN
  KakaoCloud    KAKAOCLOUD_APPLICATION_CREDENTIAL_ID and KAKAOCLOUD_APPLICATION_CREDENTIAL_SECRET
API base overrides (tests, private endpoints):
  IMGCHECK_DIGITALOCEAN_API_URL, IMGCHECK_SPACES_ENDPOINT, IMGCHECK_LINODE_API_URL,
  IMGCHECK_KAKAOCLOUD_IAM_URL, IMGCHECK_KAKAOCLOUD_VOLUME_URL, IMGCHECK_KAKAOCLOUD_IMAGE_URL
--dry-run needs no credentials. Exit codes: 0 uploaded, 1 the check refused the image, 2 error.";

/// How to upload: the flags `upload` and `packer --upload` share.
#[derive(Debug, Args, Clone, Default)]
pub struct UploadFlags {
    /// Region slug (DigitalOcean: import region; Linode: upload region).
    #[arg(long)]
    pub region: Option<String>,
    /// Image name (Linode: label; default the file name without its
    /// extensions).
    #[arg(long, alias = "label")]
    pub name: Option<String>,
    /// DigitalOcean distribution (one of DigitalOcean's list, e.g. Ubuntu,
    /// Debian; default from the image's os-release).
    #[arg(long)]
    pub distribution: Option<String>,
    /// Image description.
    #[arg(long)]
    pub description: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// KakaoCloud root volume id to create the image from.
    #[arg(long)]
    pub volume_id: Option<String>,
    /// DigitalOcean, local file: the Spaces bucket to upload through (must
    /// exist).
    #[arg(long)]
    pub spaces_bucket: Option<String>,
    /// DigitalOcean, local file: the bucket's region (default: --region).
    #[arg(long)]
    pub spaces_region: Option<String>,
    /// DigitalOcean, local file: keep the Spaces object after the import.
    #[arg(long)]
    pub keep_object: bool,
    /// DigitalOcean: transfer the image to these regions afterwards
    /// (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Linode: mark the image as supporting cloud-init (Metadata service);
    /// default: true when the image's cloud-init is 23.3.1 or later.
    #[arg(long, value_name = "true|false")]
    pub cloud_init: Option<bool>,
    /// Linode: keep the converted .img.gz (next to the input) to retry
    /// without converting again.
    #[arg(long)]
    pub keep: bool,
    /// Return once the provider accepted the image; do not wait for it to
    /// become available.
    #[arg(long)]
    pub no_wait: bool,
    /// Upload even if the check fails (not recommended).
    #[arg(long)]
    pub skip_check: bool,
    /// Print the plan (check, conversion, requests) without credentials,
    /// without writing or sending anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Give up waiting for the provider after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Seconds between status polls.
    #[arg(long, default_value_t = 5)]
    pub poll_interval: u64,
}

/// `imgcheck upload`.
#[derive(Debug, Args)]
#[command(after_help = UPLOAD_ENV_HELP)]
pub struct UploadArgs {
    /// digitalocean, linode or kakaocloud.
    #[arg(long, short = 'p', value_parser = parse_provider)]
    pub provider: imgcheck::Provider,
    /// Local image (DigitalOcean: uploaded through a Spaces bucket; Linode;
    /// KakaoCloud: the image the root volume was written from).
    pub image: Option<String>,
    /// DigitalOcean: image URL to import from (its host must answer HEAD).
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub flags: UploadFlags,
    /// Print the result (and the check) as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar or status lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// `imgcheck packer`.
#[derive(Debug, Args)]
#[command(after_help = UPLOAD_ENV_HELP)]
pub struct PackerArgs {
    /// The manifest written by Packer's manifest post-processor.
    #[arg(long, default_value = "packer-manifest.json")]
    pub manifest: PathBuf,
    /// Providers to check for (repeatable; default all three). With
    /// --upload, exactly one: the provider to upload to.
    #[arg(long = "provider", short = 'p', value_delimiter = ',', value_parser = parse_provider)]
    pub providers: Vec<imgcheck::Provider>,
    /// Upload passing artifacts to the provider (as `imgcheck upload`).
    #[arg(long)]
    pub upload: bool,
    #[command(flatten)]
    pub flags: UploadFlags,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// `imgcheck terraform` (the query comes on stdin).
#[derive(Debug, Args)]
pub struct TerraformArgs {
    #[command(flatten)]
    pub open: OpenArgs,
}

fn parse_provider(s: &str) -> Result<imgcheck::Provider, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

const SUBCOMMANDS: &[&str] = &[
    "info",
    "convert",
    "check",
    "upload",
    "packer",
    "terraform",
    "help",
];

/// Inserts `check` when the first argument is an image rather than a
/// subcommand or a top-level flag.
pub fn with_default_command(mut argv: Vec<OsString>) -> Vec<OsString> {
    if let Some(first) = argv.get(1).and_then(|a| a.to_str()) {
        let is_top_flag = matches!(first, "-h" | "--help" | "-V" | "--version");
        if !is_top_flag && !SUBCOMMANDS.contains(&first) && SUBCOMMANDS.contains(&"check") {
            argv.insert(1, OsString::from("check"));
        }
    }
    argv
}
