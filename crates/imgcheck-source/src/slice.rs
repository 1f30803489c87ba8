//! A window onto part of another source (a partition inside a disk).

use std::sync::Arc;

use crate::{Access, ByteSource, SourceError, check_range};

/// Bytes `start..start + len` of an inner source, addressed from 0.
#[derive(Debug, Clone)]
pub struct SliceSource {
    name: String,
    inner: Arc<dyn ByteSource>,
    start: u64,
    len: u64,
}

impl SliceSource {
    /// A window of `len` bytes at `start`. The window is clamped to the inner
    /// source, so a partition entry that points past the end of the disk
    /// yields a shorter (possibly empty) slice rather than reads that fail
    /// later in confusing places.
    pub fn new(inner: Arc<dyn ByteSource>, start: u64, len: u64, name: impl Into<String>) -> Self {
        let avail = inner.len().saturating_sub(start);
        Self {
            name: name.into(),
            inner,
            start,
            len: len.min(avail),
        }
    }

    /// Offset of the window in the inner source.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl ByteSource for SliceSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        check_range(&self.name, offset, buf.len(), self.len)?;
        // Cannot overflow: offset + buf.len() <= len <= inner.len() - start.
        self.inner.read_exact_at(self.start + offset, buf)
    }

    fn access(&self) -> Access {
        self.inner.access()
    }

    fn bytes_fetched(&self) -> u64 {
        self.inner.bytes_fetched()
    }
}
