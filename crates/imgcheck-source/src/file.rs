//! Local files, read with positional reads (`pread`).
//!
//! `pread` keeps the source `Sync` without a lock and costs one syscall per
//! read; the disk layer reads metadata in table-sized pieces and data in
//! multi-MiB pieces, so the syscall count stays small. An mmap path was left
//! out on purpose: it turns a file truncated under us into SIGBUS, and for
//! our large sequential reads the kernel's read-ahead already gives pread the
//! page cache's speed.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ByteSource, SourceError, check_range};

/// A read-only local file.
#[derive(Debug)]
pub struct FileSource {
    name: String,
    path: PathBuf,
    file: File,
    len: u64,
    allocated: u64,
    fetched: AtomicU64,
}

impl FileSource {
    /// Opens `path` for reading. Directories and other non-regular files
    /// (except block devices) are refused with a clear error.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let open_err = |source| SourceError::open(&name, source);
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_dir() {
            return Err(open_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory",
            )));
        }
        let len = if meta.file_type().is_file() {
            meta.len()
        } else {
            // Block devices report 0 in metadata; seek to the end instead.
            use std::io::{Seek, SeekFrom};
            let mut f = &file;
            f.seek(SeekFrom::End(0)).map_err(open_err)?
        };
        Ok(Self {
            name,
            path: path.to_path_buf(),
            file,
            len,
            allocated: meta.blocks().saturating_mul(512),
            fetched: AtomicU64::new(0),
        })
    }

    /// The path this source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ByteSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        check_range(&self.name, offset, buf.len(), self.len)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| SourceError::io(&self.name, offset, buf.len() as u64, source))?;
        self.fetched.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    fn allocated_size(&self) -> Option<u64> {
        Some(self.allocated)
    }

    /// Resolves `name` against this file's directory. Whether `name` may be
    /// followed at all (absolute paths, `..`) is the disk layer's decision,
    /// made before it calls this.
    fn open_sibling(&self, name: &str) -> Result<Arc<dyn ByteSource>, SourceError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let target = dir.join(name);
        Ok(Arc::new(FileSource::open(target)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_exact_ranges_and_refuses_past_end() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(b"0123456789").unwrap();
        let src = FileSource::open(tmp.path()).unwrap();
        assert_eq!(src.len(), 10);
        let mut buf = [0u8; 4];
        src.read_exact_at(3, &mut buf).unwrap();
        assert_eq!(&buf, b"3456");
        assert_eq!(src.bytes_fetched(), 4);
        let err = src.read_exact_at(8, &mut buf).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Truncated, "{err}");
        assert_eq!(err.offset, Some(8), "{err}");
        assert!(
            err.to_string()
                .contains("read of 4 bytes at offset 8: runs past the end (10 bytes)"),
            "{err}"
        );
        assert!(src.read_exact_at(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileSource::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
