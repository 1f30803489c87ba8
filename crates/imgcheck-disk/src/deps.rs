//! The gate for files an image names: backing files, external data files,
//! VMDK extents.
//!
//! Those names come from untrusted headers. A qcow2 whose backing file is
//! `/etc/shadow`, or a VMDK descriptor whose extent is `../../home/x/.ssh/id_rsa`,
//! must never make imgcheck read that file (CVE-2024-32498 was exactly this in
//! OpenStack). So:
//!
//! * backing files and qcow2 data files are never opened; they are reported;
//! * files a format needs to read at all (VMDK extents) are opened only when
//!   the name is a plain file name in the image's own directory: no path
//!   separator, not absolute, not `.`/`..`, no NUL;
//! * [`DependencyPolicy::AllowExternal`] lifts the plain-name rule, for users
//!   who pass `--allow-external` on images they trust.

use std::sync::Arc;

use imgcheck_source::ByteSource;

use crate::error::DiskError;

/// Whether names outside the image's directory may be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DependencyPolicy {
    /// Only plain names next to the image (the default).
    #[default]
    SameDirectory,
    /// Any name the image gives, resolved against the image's directory.
    AllowExternal,
}

/// Why `name` is not a plain file name, or `None` if it is.
pub fn unsafe_name_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the name is empty")
    } else if name.starts_with('/')
        || name.starts_with('\\')
        || name.as_bytes().get(1) == Some(&b':')
    {
        Some("it is an absolute path")
    } else if name == "." || name == ".." || name.split(['/', '\\']).any(|c| c == "..") {
        Some("it leaves the image's directory")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if name.contains('\0') || name.contains("://") {
        Some("it is not a plain file name")
    } else {
        None
    }
}

/// Opens the file `name` that the image `image` refers to as `kind`, if the
/// policy allows it.
pub fn open_dependency(
    image: &dyn ByteSource,
    kind: &str,
    name: &str,
    policy: DependencyPolicy,
) -> Result<Arc<dyn ByteSource>, DiskError> {
    if policy == DependencyPolicy::SameDirectory {
        if let Some(why) = unsafe_name_reason(name) {
            return Err(DiskError::ExternalReference {
                file: image.name().to_owned(),
                kind: kind.to_owned(),
                name: name.to_owned(),
                why: why.to_owned(),
            });
        }
    }
    Ok(image.open_sibling(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        assert_eq!(unsafe_name_reason("disk-flat.vmdk"), None);
        assert_eq!(unsafe_name_reason("disk s001.vmdk"), None);
        assert!(unsafe_name_reason("/etc/passwd").is_some());
        assert!(unsafe_name_reason("../x").is_some());
        assert!(unsafe_name_reason("a/../../x").is_some());
        assert!(unsafe_name_reason("sub/x.vmdk").is_some());
        assert!(unsafe_name_reason("C:\\x").is_some());
        assert!(unsafe_name_reason("..").is_some());
        assert!(unsafe_name_reason("").is_some());
        assert!(unsafe_name_reason("http://h/x").is_some());
    }
}
