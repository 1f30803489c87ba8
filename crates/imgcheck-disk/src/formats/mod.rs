//! One module per disk format.
//!
//! Each module exposes `open(&OpenContext) -> Result<Arc<dyn DiskImage>, DiskError>`
//! and a type implementing [`DiskImage`](crate::DiskImage) that answers
//! mappings. Modules parse untrusted bytes: every count and offset read from
//! the file is checked against [`Limits`](crate::Limits) and the file size
//! before it is used, and all offset arithmetic is checked.

pub mod qcow2;
pub mod raw;
pub mod vdi;
pub mod vhdx;
pub mod vmdk;
