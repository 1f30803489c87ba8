//! vmdk: not yet implemented (placeholder until its reader lands).

use std::sync::Arc;

use crate::disk::DiskImage;
use crate::error::{DiskError, unsupported};
use crate::open::OpenContext;

/// Opens `ctx.source` as vmdk.
pub fn open(ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>, DiskError> {
    Err(unsupported(
        ctx.name(),
        "the vmdk format (reader not written yet)",
        None,
    ))
}
