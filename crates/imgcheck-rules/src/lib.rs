//! Provider rule profiles: findings and verdicts for DigitalOcean, Linode
//! and KakaoCloud.
//!
//! Input is a [`CheckInput`]: facts about the image file ([`ImageFacts`],
//! filled by the caller) and the guest report of imgcheck-guest when the
//! guest could be read. Output is one [`Verdict`] per [`Provider`]: pass or
//! fail, and the [`Finding`]s behind it. A verdict fails when it has at least
//! one [`Severity::Error`] finding; warnings and infos never fail it.
//!
//! Every finding has a stable [`code`](Finding::code) (see [`codes`]), and a
//! [`doc`](Finding::doc) URL of the provider page the rule comes from. A rule
//! we could not confirm from a provider's own documentation is a warning and
//! says `UNCONFIRMED` in its message (all KakaoCloud rules but the integrity
//! ones).
//!
//! This crate reads no bytes: it judges facts. The facts come from
//! `imgcheck::check`, or from hand-built values in tests.

pub mod codes;
mod common;
mod digitalocean;
mod facts;
mod kakaocloud;
mod linode;
pub mod version;

pub use facts::{CheckInput, ImageError, ImageErrorKind, ImageFacts, ImageFormat};

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A provider with a rule profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// DigitalOcean custom images.
    DigitalOcean,
    /// Linode / Akamai image upload.
    Linode,
    /// KakaoCloud (images from root volumes).
    KakaoCloud,
}

impl Provider {
    /// Every provider, in output order.
    pub const ALL: [Provider; 3] = [
        Provider::DigitalOcean,
        Provider::Linode,
        Provider::KakaoCloud,
    ];

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::DigitalOcean => "digitalocean",
            Provider::Linode => "linode",
            Provider::KakaoCloud => "kakaocloud",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    /// Accepts the names and the common short forms (`do`, `akamai`,
    /// `kakao`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "digitalocean" | "do" => Ok(Provider::DigitalOcean),
            "linode" | "akamai" => Ok(Provider::Linode),
            "kakaocloud" | "kakao" => Ok(Provider::KakaoCloud),
            _ => Err(format!(
                "unknown provider {s:?} (expected one of digitalocean, linode, kakaocloud)"
            )),
        }
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The provider documents this as a requirement: the verdict fails.
    Error,
    /// Likely trouble, or a rule we could not confirm; never fails a verdict.
    Warning,
    /// Worth knowing; never fails a verdict.
    Info,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier, e.g. `size.too_large` (see [`codes`]).
    pub code: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// What is wrong, with the numbers.
    pub message: String,
    /// How to fix it, if we know.
    pub hint: Option<String>,
    /// The provider document the rule comes from.
    pub doc: &'static str,
}

/// A provider's judgement of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Which provider.
    pub provider: Provider,
    /// True when no finding is an error.
    pub pass: bool,
    /// Findings, errors first, then warnings, then infos; rule order within
    /// a severity.
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// Builds a verdict from findings (sorting them, deriving `pass`).
    fn new(provider: Provider, mut findings: Vec<Finding>) -> Self {
        findings.sort_by_key(|f| f.severity);
        let pass = !findings.iter().any(|f| f.severity == Severity::Error);
        Self {
            provider,
            pass,
            findings,
        }
    }

    /// The finding codes, in order (handy for tests and summaries).
    pub fn codes(&self) -> Vec<&'static str> {
        self.findings.iter().map(|f| f.code).collect()
    }

    /// Number of findings of `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Runs `provider`'s profile on `input`.
pub fn check(provider: Provider, input: &CheckInput<'_>) -> Verdict {
    let mut out = common::Out::default();
    match provider {
        Provider::DigitalOcean => digitalocean::profile(input, &mut out),
        Provider::Linode => linode::profile(input, &mut out),
        Provider::KakaoCloud => kakaocloud::profile(input, &mut out),
    }
    Verdict::new(provider, out.findings)
}

/// Runs every profile in `providers` (all of them when empty), in the order
/// given, without duplicates.
pub fn check_all(providers: &[Provider], input: &CheckInput<'_>) -> Vec<Verdict> {
    let mut seen = Vec::new();
    let list: &[Provider] = if providers.is_empty() {
        &Provider::ALL
    } else {
        providers
    };
    for &p in list {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen.into_iter().map(|p| check(p, input)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!("DO".parse::<Provider>(), Ok(Provider::DigitalOcean));
        assert!("aws".parse::<Provider>().is_err());
    }

    #[test]
    fn verdict_fails_only_on_errors_and_sorts() {
        let f = |code, severity| Finding {
            code,
            severity,
            message: String::new(),
            hint: None,
            doc: "",
        };
        let v = Verdict::new(
            Provider::Linode,
            vec![f("a", Severity::Info), f("b", Severity::Warning)],
        );
        assert!(v.pass);
        assert_eq!(v.codes(), ["b", "a"]);
        let v = Verdict::new(
            Provider::Linode,
            vec![f("a", Severity::Info), f("c", Severity::Error)],
        );
        assert!(!v.pass);
        assert_eq!(v.codes(), ["c", "a"]);
        assert_eq!(v.count(Severity::Error), 1);
    }

    #[test]
    fn check_all_defaults_and_dedups() {
        let image = ImageFacts::default();
        let input = CheckInput {
            image: &image,
            guest: None,
        };
        let all: Vec<_> = check_all(&[], &input).iter().map(|v| v.provider).collect();
        assert_eq!(all, Provider::ALL);
        let two: Vec<_> = check_all(
            &[Provider::Linode, Provider::DigitalOcean, Provider::Linode],
            &input,
        )
        .iter()
        .map(|v| v.provider)
        .collect();
        assert_eq!(two, [Provider::Linode, Provider::DigitalOcean]);
    }
}

/// Hand-built facts for the profile tests: a good image and guest that pass
/// every profile, and broken variants.
#[cfg(test)]
mod testutil {
    use imgcheck_disk::Format;
    use imgcheck_guest::{
        Filesystem, FsKind, GuestReport, Partition, PartitionRole, PartitionTable, TableKind,
    };

    use crate::{ImageError, ImageErrorKind, ImageFacts, ImageFormat};

    /// A 2 GiB raw image that opened fine.
    pub(crate) fn raw_image() -> ImageFacts {
        ImageFacts {
            path: "disk.img".into(),
            format: Some(ImageFormat::Disk(Format::Raw)),
            virtual_size: Some(2 << 30),
            file_size: 2 << 30,
            ..Default::default()
        }
    }

    /// A qcow2 whose header is damaged.
    pub(crate) fn corrupt_image() -> ImageFacts {
        ImageFacts {
            path: "disk.qcow2".into(),
            format: Some(ImageFormat::Disk(Format::Qcow2)),
            file_size: 1 << 20,
            error: Some(ImageError {
                kind: ImageErrorKind::Corrupt,
                message: "disk.qcow2: qcow2 header at offset 0: cluster_bits 0 is out of range"
                    .into(),
                hint: None,
                uncompressed_at_least: None,
            }),
            ..Default::default()
        }
    }

    /// An image imgcheck could not open for `why`.
    pub(crate) fn unreadable_image(why: &str) -> ImageFacts {
        ImageFacts {
            path: "disk.bin".into(),
            file_size: 1 << 20,
            error: Some(ImageError {
                kind: ImageErrorKind::Unsupported,
                message: why.into(),
                hint: None,
                uncompressed_at_least: None,
            }),
            ..Default::default()
        }
    }

    /// Debian 12 on an MBR disk: a small FAT partition, then an ext4 root;
    /// cloud-init 22.4.2, sshd enabled, BIOS boot, one kernel.
    pub(crate) fn good_guest() -> GuestReport {
        let mut g = GuestReport {
            partitions: PartitionTable {
                kind: TableKind::Mbr,
                sector_size: 512,
                entries: vec![
                    Partition {
                        number: 1,
                        start: 1 << 20,
                        size: 64 << 20,
                        type_id: "0x0c".into(),
                        role: PartitionRole::Other,
                        ..Default::default()
                    },
                    Partition {
                        number: 2,
                        start: 65 << 20,
                        size: 1900 << 20,
                        type_id: "0x83".into(),
                        role: PartitionRole::Linux,
                        bootable: true,
                        ..Default::default()
                    },
                ],
                problems: vec![],
            },
            filesystems: vec![
                Filesystem {
                    partition: Some(1),
                    offset: 1 << 20,
                    size: 64 << 20,
                    kind: FsKind::Vfat,
                    ..Default::default()
                },
                Filesystem {
                    partition: Some(2),
                    offset: 65 << 20,
                    size: 1900 << 20,
                    kind: FsKind::Ext4,
                    ..Default::default()
                },
            ],
            root: Some(1),
            ..Default::default()
        };
        let f = &mut g.guest;
        f.os.kind = "linux".into();
        f.os.id = Some("debian".into());
        f.os.version_id = Some("12".into());
        f.os.pretty_name = Some("Debian GNU/Linux 12 (bookworm)".into());
        f.os.architecture = Some("x86_64".into());
        f.cloud_init.installed = true;
        f.cloud_init.version = Some("22.4.2".into());
        f.cloud_init.version_source = Some("/var/lib/dpkg/status".into());
        f.sshd.installed = true;
        f.sshd.binary = Some("/usr/sbin/sshd".into());
        f.sshd.enabled = Some(true);
        f.sshd.init_system = Some("systemd".into());
        f.boot.bios = true;
        f.boot.kernels = vec!["vmlinuz-6.1.0-13-amd64".into()];
        f.kakaocloud.os_type = Some("linux".into());
        f.kakaocloud.distro = Some("debian".into());
        f.kakaocloud.architecture = Some("x86_64".into());
        f.kakaocloud.admin_user = Some("debian".into());
        f.kakaocloud.min_disk_gb = 3;
        g
    }
}
