//! Disk-image formats behind one virtual-disk view.
//!
//! Data flow: a [`ByteSource`](imgcheck_source::ByteSource) (file, URL,
//! decompressed stream) → [`detect`] picks the format by magic bytes →
//! [`open`] hands it to the format's module in [`formats`] → the format
//! answers mappings ([`DiskImage::map`]) → [`VirtualDisk`] reads guest bytes,
//! lists extents, and is itself a `ByteSource` for the guest layer above.
//!
//! Every format module treats the file as hostile: see [`Limits`] and
//! [`deps`] for what is bounded and what is never opened.

mod cache;
mod context;
pub mod deps;
pub mod detect;
mod disk;
mod error;
mod format;
pub mod formats;
mod limits;
mod open;
mod parse;
#[cfg(test)]
mod testutil;

pub use context::OpenContext;
pub use deps::DependencyPolicy;
pub use detect::{Detected, detect};
pub use disk::{
    DiskImage, DiskInfo, Extent, ExtentIter, ExternalRef, MapKind, Mapping, VirtualDisk,
};
pub use error::{DiskError, corrupt, limit, unsupported};
pub use format::{Container, Format};
pub use limits::Limits;
pub use open::{Found, OpenFailure, OpenOptions, Opened, open, open_image};
