//! An in-memory source: for tests, fuzzing and small decoded buffers.

use crate::{ByteSource, SourceError, check_range};

/// A byte source over an owned buffer.
#[derive(Debug, Clone)]
pub struct MemSource {
    name: String,
    data: Vec<u8>,
}

impl MemSource {
    /// Wraps `data`; `name` appears in error messages.
    pub fn new(name: impl Into<String>, data: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            data,
        }
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl ByteSource for MemSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let end = check_range(&self.name, offset, buf.len(), self.len())?;
        // Both bounds fit in usize: `end <= data.len()`.
        let (start, end) = (offset as usize, end as usize);
        buf.copy_from_slice(&self.data[start..end]);
        Ok(())
    }
}
