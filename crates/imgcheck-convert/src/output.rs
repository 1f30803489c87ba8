//! Output files that appear only when complete.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::ConvertError;

/// A file written under a temporary name next to its target and renamed
/// over it by [`commit`](AtomicOutput::commit). Dropped without commit, the
/// temporary file is removed.
#[derive(Debug)]
pub struct AtomicOutput {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl AtomicOutput {
    /// Creates the temporary file for `target`. Fails if `target` exists
    /// and `force` is false.
    pub fn create(target: &Path, force: bool) -> Result<Self, ConvertError> {
        if !force && target.exists() {
            return Err(ConvertError::Exists(target.to_path_buf()));
        }
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{base}.imgcheck-{}.part", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|source| ConvertError::Write {
                path: temp.clone(),
                source,
            })?;
        Ok(Self {
            target: target.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("file is present until commit")
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary path (for error messages).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Flushes and renames the file into place.
    pub fn commit(mut self) -> Result<(), ConvertError> {
        let file = self.file.take().expect("commit runs once");
        let werr = |source| ConvertError::Write {
            path: self.target.clone(),
            source,
        };
        file.sync_all().map_err(werr)?;
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(werr)?;
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
