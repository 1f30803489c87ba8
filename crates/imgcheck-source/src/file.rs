//! Local files, read with positional reads (`pread`).
//!
//! `pread` keeps the source `Sync` without a lock and costs one syscall per
//! read; the disk layer reads metadata in table-sized pieces and data in
//! multi-MiB pieces, so the syscall count stays small. An mmap path was left
//! out on purpose: it turns a file truncated under us into SIGBUS, and for
//! our large sequential reads the kernel's read-ahead already gives pread the
//! page cache's speed.
//!
//! Holes of sparse files are reported with `lseek(SEEK_DATA/SEEK_HOLE)`
//! ([`ByteSource::sparse_run`]), so a raw image of a few GiB with a few
//! hundred MB of data is read (and converted) for its data only.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ByteSource, SourceError, SparseRun, check_range};

/// A read-only local file.
#[derive(Debug)]
pub struct FileSource {
    name: String,
    path: PathBuf,
    file: File,
    len: u64,
    allocated: u64,
    fetched: AtomicU64,
    /// A regular file (holes can be asked for); not a block device.
    regular: bool,
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
        let regular = meta.file_type().is_file();
        let len = if regular {
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
            regular,
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

    /// `SEEK_DATA` from `offset`: at `offset` means data (which ends at the
    /// next `SEEK_HOLE`), further on means a hole up to there, `ENXIO`
    /// means a hole up to the end. Filesystems without hole support report
    /// the whole file as data, which is right. The answers are absolute
    /// offsets, so threads sharing the descriptor's position do not matter.
    fn sparse_run(&self, offset: u64) -> Option<SparseRun> {
        use rustix::fs::{SeekFrom, seek};
        if !self.regular || offset >= self.len {
            return None;
        }
        let run = match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(d) if d <= offset => {
                let hole = seek(&self.file, SeekFrom::Hole(offset)).ok()?;
                SparseRun {
                    data: true,
                    end: hole,
                }
            }
            Ok(d) => SparseRun {
                data: false,
                end: d,
            },
            Err(rustix::io::Errno::NXIO) => SparseRun {
                data: false,
                end: self.len,
            },
            Err(_) => return None,
        };
        // A file changed under us can answer past our length or behind
        // `offset`; keep the run inside 1..=len-offset bytes.
        Some(SparseRun {
            data: run.data,
            end: run.end.clamp(offset + 1, self.len),
        })
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
