//! imgcheck: check cloud VM images against provider rules, convert them,
//! and ship them.
//!
//! This crate is the facade over the layers, in data-flow order:
//!
//! ```text
//! imgcheck-source   bytes: file, memory, http(s), gzip/bzip2 streams
//!   → imgcheck-disk   formats: raw, qcow2, vhdx, vdi, vmdk → VirtualDisk
//!     → imgcheck-guest  partitions, filesystems, facts from the root fs
//!       → imgcheck-rules  provider profiles → findings, verdicts
//!         → imgcheck-convert | imgcheck-upload
//! ```
//!
//! [`open`] is the one call that turns a path into a [`VirtualDisk`],
//! unwrapping compression on the way. [`check`] opens an image, inspects the
//! guest and returns every provider's verdict as one [`Report`].

mod check;
mod error;
mod input;
mod upload;

pub use check::{CHECK_MAX_UNCOMPRESSED, CheckOptions, Report, Stats, check};
pub use error::Error;
pub use input::{Input, OpenOptions, open};
pub use upload::{
    DoSource, UploadOptions, UploadResult, UploadTarget, digitalocean_distribution,
    linode_cloud_init, upload,
};

pub use imgcheck_convert as convert;
pub use imgcheck_disk as disk;
pub use imgcheck_guest as guest;
pub use imgcheck_rules as rules;
pub use imgcheck_rules::{Finding, Provider, Severity, Verdict};
pub use imgcheck_source as source;
pub use imgcheck_upload as providers;
