//! The parsing toolkit every format uses: integers at offsets of a
//! structure read from the image, and the map of metadata regions that
//! must not overlap.
//!
//! Hand-written (no zerocopy/binrw) because the needs are this small and
//! the one behaviour that matters is shared: a field outside its structure
//! is an error naming the file, the structure and the offset, never a zero
//! and never a panic.

use crate::error::{DiskError, corrupt};

/// A field outside its structure. Becomes a [`DiskError`] (corrupt, naming
/// the file, structure and offset) with `?`; code that collects reasons as
/// text (a header slot that may be the damaged one of two) gets the reason.
#[derive(Debug)]
pub(crate) struct FieldError {
    file: String,
    structure: String,
    at: u64,
    reason: String,
}

impl From<FieldError> for DiskError {
    fn from(e: FieldError) -> Self {
        corrupt(&e.file, &e.structure, e.at, e.reason)
    }
}

impl From<FieldError> for String {
    fn from(e: FieldError) -> Self {
        format!("{} at offset {}: {}", e.structure, e.at, e.reason)
    }
}

/// A structure read from the image: its bytes, where they came from, and
/// checked accessors for the fields in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    file: &'a str,
    structure: &'a str,
    /// File offset of `bytes[0]`.
    base: u64,
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    /// `bytes`, read from `file` at `base`, hold `structure`.
    pub(crate) fn new(file: &'a str, structure: &'a str, base: u64, bytes: &'a [u8]) -> Self {
        Self {
            file,
            structure,
            base,
            bytes,
        }
    }

    /// `N` bytes at `off`, or an error naming the structure and offset.
    pub(crate) fn array<const N: usize>(&self, off: usize) -> Result<[u8; N], FieldError> {
        off.checked_add(N)
            .and_then(|end| self.bytes.get(off..end))
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or_else(|| {
                let at = u64::try_from(off)
                    .ok()
                    .and_then(|o| self.base.checked_add(o))
                    .unwrap_or(u64::MAX);
                self.error(
                    at,
                    format!(
                        "a {N}-byte field at +{off} lies outside the {}-byte structure",
                        self.bytes.len()
                    ),
                )
            })
    }

    fn error(&self, at: u64, reason: String) -> FieldError {
        FieldError {
            file: self.file.to_owned(),
            structure: self.structure.to_owned(),
            at,
            reason,
        }
    }

    /// A GUID (16 raw bytes) at `off`.
    pub(crate) fn guid(&self, off: usize) -> Result<[u8; 16], FieldError> {
        self.array(off)
    }

    /// Little-endian u16 at `off`.
    pub(crate) fn le16(&self, off: usize) -> Result<u16, FieldError> {
        self.array(off).map(u16::from_le_bytes)
    }

    /// Little-endian u32 at `off`.
    pub(crate) fn le32(&self, off: usize) -> Result<u32, FieldError> {
        self.array(off).map(u32::from_le_bytes)
    }

    /// Little-endian u64 at `off`.
    pub(crate) fn le64(&self, off: usize) -> Result<u64, FieldError> {
        self.array(off).map(u64::from_le_bytes)
    }

    /// Big-endian u32 at `off`.
    pub(crate) fn be32(&self, off: usize) -> Result<u32, FieldError> {
        self.array(off).map(u32::from_be_bytes)
    }

    /// Big-endian u64 at `off`.
    pub(crate) fn be64(&self, off: usize) -> Result<u64, FieldError> {
        self.array(off).map(u64::from_be_bytes)
    }
}

/// Metadata regions of one host file, for the rule qemu enforces with its
/// `QCOW2_OL_*` checks: no two metadata structures share a byte (a table on
/// top of the header, or two tables on top of each other, is damage and is
/// read as garbage otherwise).
#[derive(Debug, Default, Clone)]
pub(crate) struct Regions {
    /// `(start, end, name)`, `end` exclusive.
    claimed: Vec<(u64, u64, String)>,
}

impl Regions {
    /// No regions yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Claims `len` bytes at `start` for `what`; an overlap with a region
    /// claimed before is [`corrupt`] (structure `what`, at `start`).
    pub(crate) fn claim(
        &mut self,
        file: &str,
        what: &str,
        start: u64,
        len: u64,
    ) -> Result<(), DiskError> {
        self.check(file, what, start, len)?;
        if len > 0 {
            // check() proved start + len does not overflow.
            self.claimed
                .push((start, start.saturating_add(len), what.to_owned()));
        }
        Ok(())
    }

    /// The name of a claimed region that `len` bytes at `start` overlap.
    pub(crate) fn overlap(&self, start: u64, len: u64) -> Option<&str> {
        let end = start.saturating_add(len);
        self.claimed
            .iter()
            .find(|(s, e, _)| start < *e && *s < end)
            .map(|(_, _, what)| what.as_str())
    }

    /// Like [`claim`](Regions::claim) without recording the region (for
    /// many small structures checked against the few big ones).
    pub(crate) fn check(
        &self,
        file: &str,
        what: &str,
        start: u64,
        len: u64,
    ) -> Result<(), DiskError> {
        let end = start.checked_add(len).ok_or_else(|| {
            corrupt(
                file,
                what,
                start,
                format!("{len} bytes at {start} overflow the file offset range"),
            )
        })?;
        if len == 0 {
            return Ok(());
        }
        match self.claimed.iter().find(|(s, e, _)| start < *e && *s < end) {
            None => Ok(()),
            Some((s, e, other)) => Err(corrupt(
                file,
                what,
                start,
                format!(
                    "{what} ({len} bytes at {start}) overlaps the {other} at {s}..{e}; metadata structures must not overlap"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_out_of_range_are_errors_naming_the_structure() {
        let b = [1u8, 0, 0, 0, 0, 0, 0, 2];
        let f = Fields::new("f", "hdr", 512, &b);
        assert_eq!(f.le32(0).unwrap(), 1);
        assert_eq!(f.be32(4).unwrap(), 2);
        assert_eq!(f.le16(6).unwrap(), 0x0200);
        let e = DiskError::from(f.le64(1).unwrap_err());
        assert!(e.is_corrupt());
        assert_eq!(
            e.to_string(),
            "f: hdr at offset 513: a 8-byte field at +1 lies outside the 8-byte structure"
        );
        assert!(f.be64(usize::MAX).is_err());
    }

    #[test]
    fn overlapping_regions_are_corrupt() {
        let mut r = Regions::new();
        r.claim("f", "header", 0, 65536).unwrap();
        r.claim("f", "L1 table", 65536, 8).unwrap();
        let e = r.claim("f", "refcount table", 65536 + 7, 8).unwrap_err();
        assert!(
            e.is_corrupt() && e.to_string().contains("overlaps the L1 table"),
            "{e}"
        );
        assert!(r.check("f", "L2 table", 0, 512).is_err());
        assert!(r.check("f", "L2 table", u64::MAX, 2).is_err());
        r.check("f", "empty", 0, 0).unwrap();
    }
}
