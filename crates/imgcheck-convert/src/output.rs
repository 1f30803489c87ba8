//! Output files that appear only when complete.
//!
//! The data goes to `.NAME.imgcheck-PID.part` in the target's directory
//! (same filesystem, so the final step is a rename, never a copy). On
//! commit the file is fsynced first, so a crash right after the rename
//! cannot leave a finished-looking file with missing data. Without
//! `force`, the final step is a hard link (fails if the target appeared
//! meanwhile, unlike rename which would silently replace it) followed by
//! removing the temporary name.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::ConvertError;

/// A file written under a temporary name next to its target and renamed
/// over it by [`commit`](AtomicOutput::commit). Dropped without commit, the
/// temporary file is removed.
#[derive(Debug)]
pub struct AtomicOutput {
    force: bool,
    sync: bool,
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
            force,
            sync: false,
            target: target.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    /// Also `fsync` the file before it is moved into place, so a finished
    /// name survives a power cut with its data. Off by default, as in
    /// `qemu-img convert` (its default cache mode does not flush either):
    /// flushing a multi-GiB image costs seconds of disk writes, and the
    /// rename alone already keeps an interrupted run from leaving a
    /// finished-looking file.
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
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

    /// Syncs (if asked) and moves the file into place (without replacing a
    /// file that appeared meanwhile unless `force`).
    pub fn commit(mut self) -> Result<(), ConvertError> {
        let file = self.file.take().expect("commit runs once");
        let werr = |source| ConvertError::Write {
            path: self.target.clone(),
            source,
        };
        if self.sync {
            file.sync_all().map_err(werr)?;
        }
        drop(file);
        if self.force {
            std::fs::rename(&self.temp, &self.target).map_err(werr)?;
            return Ok(());
        }
        match std::fs::hard_link(&self.temp, &self.target) {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.temp);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&self.temp);
                Err(ConvertError::Exists(self.target.clone()))
            }
            // Filesystems without hard links: the create-time check is the
            // best we can do.
            Err(_) => std::fs::rename(&self.temp, &self.target).map_err(werr),
        }
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn commit_does_not_clobber_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("out.img");
        let mut o = AtomicOutput::create(&t, false).unwrap();
        // Someone else creates the target while we write.
        std::fs::write(&t, b"theirs").unwrap();
        o.file.as_mut().unwrap().write_all(b"ours").unwrap();
        assert!(matches!(o.commit(), Err(ConvertError::Exists(_))));
        assert_eq!(std::fs::read(&t).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut o = AtomicOutput::create(&t, true).unwrap();
        o.file.as_mut().unwrap().write_all(b"ours").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"ours");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn drop_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let o = AtomicOutput::create(&dir.path().join("x"), false).unwrap();
        assert!(o.temp_path().exists());
        drop(o);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
