//! raw: guest byte N is file byte N.

use std::sync::Arc;

use imgcheck_source::ByteSource;

use crate::context::OpenContext;
use crate::disk::{DiskImage, DiskInfo, MapKind, Mapping};
use crate::error::DiskError;
use crate::format::Format;

/// A raw image.
#[derive(Debug)]
pub struct RawImage {
    source: Arc<dyn ByteSource>,
    info: DiskInfo,
}

/// Opens `ctx.source` as raw. Never fails: every byte string is a raw disk.
pub fn open(ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>, DiskError> {
    let info = DiskInfo::new(Format::Raw, ctx.source.len());
    Ok(Arc::new(RawImage {
        source: ctx.source.clone(),
        info,
    }))
}

impl DiskImage for RawImage {
    fn info(&self) -> &DiskInfo {
        &self.info
    }

    fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError> {
        Ok(Mapping {
            kind: MapKind::Data {
                file: 0,
                host_offset: guest_offset,
            },
            len: max_len,
        })
    }

    fn host_file(&self, index: usize) -> Option<&dyn ByteSource> {
        (index == 0).then_some(self.source.as_ref())
    }
}
