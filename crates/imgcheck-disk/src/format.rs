//! Names of the formats and containers imgcheck knows.

use std::fmt;
use std::str::FromStr;

/// A disk-image format imgcheck reads. Names are qemu-img's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// A plain disk: guest byte N is file byte N.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// Hyper-V virtual hard disk v2.
    Vhdx,
    /// VirtualBox disk image.
    Vdi,
    /// VMware virtual disk (sparse, stream-optimized, flat, split).
    Vmdk,
}

impl Format {
    /// Every format, in detection order of their magics.
    pub const ALL: [Format; 5] = [
        Format::Qcow2,
        Format::Vhdx,
        Format::Vdi,
        Format::Vmdk,
        Format::Raw,
    ];

    /// The qemu-img name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Vmdk => "vmdk",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown format {s:?} (expected one of raw, qcow2, vhdx, vdi, vmdk)")
            })
    }
}

/// A compression or archive container around a disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Container {
    /// gzip (RFC 1952), single or multi-member.
    Gzip,
    /// bzip2, single or multi-stream.
    Bzip2,
    /// xz (LZMA2).
    Xz,
    /// Zstandard.
    Zstd,
    /// ZIP archive.
    Zip,
    /// POSIX tar archive (an OVA is a tar).
    Tar,
}

impl Container {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Container::Gzip => "gzip",
            Container::Bzip2 => "bzip2",
            Container::Xz => "xz",
            Container::Zstd => "zstd",
            Container::Zip => "zip",
            Container::Tar => "tar",
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
