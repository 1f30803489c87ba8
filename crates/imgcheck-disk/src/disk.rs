//! The virtual-disk seam.
//!
//! A format driver ([`DiskImage`]) does not read guest data. It answers one
//! question: *where does guest offset X live?* ([`DiskImage::map`]): stored
//! verbatim at a host offset, stored encoded (compressed cluster or grain),
//! explicitly zero, or unallocated. [`VirtualDisk`] turns those answers into
//! reads, an allocation map and (in imgcheck-convert) conversion, once for
//! every format. Nothing above this module knows which format it reads.

use std::fmt;
use std::sync::{Arc, OnceLock};

use imgcheck_source::{Access, ByteSource, SourceError};

use crate::error::{DiskError, corrupt};
use crate::format::Format;

/// Where a run of guest bytes lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Stored verbatim in host file number `file` (see
    /// [`DiskImage::host_file`]) starting at `host_offset`.
    Data {
        /// Index of the host file (0 is the image itself; VMDK extents and
        /// others follow).
        file: usize,
        /// Host offset of the first byte of the run.
        host_offset: u64,
    },
    /// Stored encoded (compressed): read with [`DiskImage::read_encoded`].
    Encoded,
    /// Explicitly marked as reading zeros (qcow2 zero flag, VHDX ZERO block,
    /// VDI discarded block, VMDK zero grain).
    Zero,
    /// Never written; reads as zeros (backing files are never followed).
    Unallocated,
}

impl MapKind {
    /// True when the run reads as zeros without touching the host.
    pub fn reads_zero(self) -> bool {
        matches!(self, MapKind::Zero | MapKind::Unallocated)
    }

    /// True when a run of `self` that is `len` bytes long and a run of
    /// `next` right after it form one run: the same kind, and for data the
    /// same file with `next` starting where `self` ends. Formats use it to
    /// return long runs; [`ExtentIter`] uses it to merge answers.
    pub fn continues(self, len: u64, next: MapKind) -> bool {
        match (self, next) {
            (
                MapKind::Data {
                    file: fa,
                    host_offset: ha,
                },
                MapKind::Data {
                    file: fb,
                    host_offset: hb,
                },
            ) => fa == fb && ha.checked_add(len) == Some(hb),
            (a, b) => a == b,
        }
    }
}

/// The answer to "where does guest offset X live": a kind that holds for
/// `len` bytes from X.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Where the bytes live.
    pub kind: MapKind,
    /// How many bytes from the asked offset share this kind (at least 1,
    /// at most the `max_len` asked for).
    pub len: u64,
}

/// A run of the allocation map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First guest byte.
    pub guest_offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where it lives.
    pub kind: MapKind,
}

/// A file the image refers to by name (backing file, external data file,
/// VMDK extent, differencing parent).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExternalRef {
    /// What kind of reference ("backing file", "VMDK extent", ...).
    pub kind: String,
    /// The name as written in the image.
    pub name: String,
    /// Whether imgcheck opened it (only plain names in the image's own
    /// directory, for formats that need them to read at all).
    pub opened: bool,
}

/// What `imgcheck info` shows, common to every format.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskInfo {
    /// The format.
    pub format: Format,
    /// Format version / subformat in words ("v3", "dynamic", "streamOptimized").
    pub subformat: Option<String>,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Allocation unit (qcow2 cluster, VHDX/VDI block, VMDK grain), if any.
    pub cluster_size: Option<u64>,
    /// Backing file or parent name, reported, never opened.
    pub backing_file: Option<String>,
    /// The dirty flag, where the format has one.
    pub dirty: bool,
    /// Other files the image names.
    pub external_refs: Vec<ExternalRef>,
    /// Format-specific fields, named and typed as in qemu-img's
    /// `info --output=json` "format-specific" → "data".
    pub format_specific: serde_json::Map<String, serde_json::Value>,
}

impl DiskInfo {
    /// A blank info for `format` of `virtual_size` bytes.
    pub fn new(format: Format, virtual_size: u64) -> Self {
        Self {
            format,
            subformat: None,
            virtual_size,
            cluster_size: None,
            backing_file: None,
            dirty: false,
            external_refs: Vec::new(),
            format_specific: serde_json::Map::new(),
        }
    }
}

/// One opened disk-image format: answers mappings, never reads guest data
/// itself (except for encoded runs).
pub trait DiskImage: Send + Sync + fmt::Debug {
    /// What the header says.
    fn info(&self) -> &DiskInfo;

    /// Where guest byte `guest_offset` lives, and for how many bytes (at
    /// most `max_len`, at least 1) the answer holds. Called only with
    /// `guest_offset < virtual_size` and `max_len >= 1`; a returned `len`
    /// beyond `max_len` is clamped by the caller.
    fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError>;

    /// Host file number `index`: 0 is the image, others are extents or data
    /// files opened by the format.
    fn host_file(&self, index: usize) -> Option<&dyn ByteSource>;

    /// Number of host files.
    fn host_file_count(&self) -> usize {
        1
    }

    /// Decode guest bytes at `guest_offset` into `buf`, for a run that
    /// [`map`](DiskImage::map) reported as [`MapKind::Encoded`]. `buf` never
    /// extends past that run.
    fn read_encoded(&self, guest_offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let _ = buf;
        Err(corrupt(
            self.host_file(0).map_or("?", |f| f.name()),
            "mapping",
            guest_offset,
            "format reported an encoded run but cannot decode it",
        ))
    }
}

/// An opened image: reads, allocation map, and a [`ByteSource`] view of the
/// guest disk for the layers above.
///
/// Clones share the driver and the record of [`damage`](VirtualDisk::damage).
#[derive(Debug, Clone)]
pub struct VirtualDisk {
    image: Arc<dyn DiskImage>,
    name: String,
    damage: Arc<OnceLock<SourceError>>,
}

impl VirtualDisk {
    /// Wraps a format driver.
    pub fn new(image: Arc<dyn DiskImage>) -> Self {
        let name = image
            .host_file(0)
            .map_or_else(|| "<image>".to_owned(), |f| f.name().to_owned());
        Self {
            image,
            name,
            damage: Arc::new(OnceLock::new()),
        }
    }

    /// The first read inside the disk that failed because the image is
    /// damaged ([`ErrorKind::is_damage`](imgcheck_source::ErrorKind::is_damage)),
    /// if any.
    ///
    /// The layers above (partition tables, filesystems) treat a failed read
    /// as "unknown" and go on; this is how the check still learns that the
    /// image itself is damaged, typed, without wrapping the disk. Reads
    /// outside the disk (a partition entry pointing past its end) are the
    /// reader's mistake and are not recorded.
    pub fn damage(&self) -> Option<&SourceError> {
        self.damage.get()
    }

    /// The header facts.
    pub fn info(&self) -> &DiskInfo {
        self.image.info()
    }

    /// Guest size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.image.info().virtual_size
    }

    /// The format driver.
    pub fn image(&self) -> &Arc<dyn DiskImage> {
        &self.image
    }

    /// Where `guest_offset` lives, for at most `max_len` bytes. Offsets at or
    /// past the end are an error naming the offset.
    pub fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let size = self.virtual_size();
        if guest_offset >= size || max_len == 0 {
            return Err(DiskError::Source(SourceError::out_of_range(
                &self.name,
                guest_offset,
                max_len,
                size,
            )));
        }
        let max_len = max_len.min(size - guest_offset);
        let mut m = self.image.map(guest_offset, max_len)?;
        if m.len == 0 {
            return Err(corrupt(
                &self.name,
                "mapping",
                guest_offset,
                "format returned an empty run",
            ));
        }
        m.len = m.len.min(max_len);
        Ok(m)
    }

    /// Reads guest bytes `offset..offset + buf.len()`. A failure that is
    /// damage is also remembered (see [`damage`](VirtualDisk::damage)).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        imgcheck_source::check_range(&self.name, offset, buf.len(), self.virtual_size())?;
        let r = self.read_inside(offset, buf);
        if let Err(e) = &r
            && e.is_corrupt()
            && self.damage.get().is_none()
        {
            // Only the first is kept; a lost race keeps another damage,
            // which is as good.
            let _ = self.damage.set(e.to_source());
        }
        r
    }

    /// [`read_at`](VirtualDisk::read_at) after its range check.
    fn read_inside(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want = buf.len() - done;
            let m = self.map(pos, want as u64)?;
            // m.len <= want, so it fits in usize.
            let n = m.len as usize;
            let dst = &mut buf[done..done + n];
            match m.kind {
                MapKind::Zero | MapKind::Unallocated => dst.fill(0),
                MapKind::Data { file, host_offset } => {
                    let f = self.image.host_file(file).ok_or_else(|| {
                        corrupt(
                            &self.name,
                            "mapping",
                            pos,
                            format!("host file {file} does not exist"),
                        )
                    })?;
                    f.read_exact_at(host_offset, dst)?;
                }
                MapKind::Encoded => self.image.read_encoded(pos, dst)?,
            }
            done += n;
        }
        Ok(())
    }

    /// The allocation map of `start..start + len`, with neighbouring runs of
    /// the same kind (and contiguous host offsets) merged.
    pub fn extents(&self, start: u64, len: u64) -> ExtentIter<'_> {
        let end = start.saturating_add(len).min(self.virtual_size());
        ExtentIter {
            disk: self,
            pos: start,
            end,
            pending: None,
            failed: false,
        }
    }

    /// Bytes fetched from the host files so far.
    pub fn bytes_fetched(&self) -> u64 {
        (0..self.image.host_file_count())
            .filter_map(|i| self.image.host_file(i))
            .map(|f| f.bytes_fetched())
            .sum()
    }
}

/// Iterator over merged [`Extent`]s; see [`VirtualDisk::extents`].
#[derive(Debug)]
pub struct ExtentIter<'a> {
    disk: &'a VirtualDisk,
    pos: u64,
    end: u64,
    pending: Option<Extent>,
    failed: bool,
}

impl Iterator for ExtentIter<'_> {
    type Item = Result<Extent, DiskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while self.pos < self.end {
            let m = match self.disk.map(self.pos, self.end - self.pos) {
                Ok(m) => m,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            let e = Extent {
                guest_offset: self.pos,
                len: m.len,
                kind: m.kind,
            };
            self.pos += m.len;
            match self.pending.as_mut() {
                Some(p) if p.kind.continues(p.len, e.kind) => p.len += e.len,
                Some(_) => return std::mem::replace(&mut self.pending, Some(e)).map(Ok),
                None => self.pending = Some(e),
            }
        }
        self.pending.take().map(Ok)
    }
}

impl ByteSource for VirtualDisk {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.virtual_size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        // The typed error goes up as it is: its kind was decided once, in
        // `DiskError::kind`.
        self.read_at(offset, buf).map_err(SourceError::from)
    }

    fn access(&self) -> Access {
        self.image
            .host_file(0)
            .map_or(Access::Random, |f| f.access())
    }

    fn bytes_fetched(&self) -> u64 {
        VirtualDisk::bytes_fetched(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgcheck_source::{ErrorKind, MemSource};

    /// A format driver whose every mapping points past the end of its file:
    /// what a truncated qcow2 looks like once its header opened.
    #[derive(Debug)]
    struct PastEnd {
        info: DiskInfo,
        file: MemSource,
    }

    impl DiskImage for PastEnd {
        fn info(&self) -> &DiskInfo {
            &self.info
        }
        fn map(&self, _: u64, max_len: u64) -> Result<Mapping, DiskError> {
            Ok(Mapping {
                kind: MapKind::Data {
                    file: 0,
                    host_offset: 1 << 20,
                },
                len: max_len,
            })
        }
        fn host_file(&self, index: usize) -> Option<&dyn ByteSource> {
            (index == 0).then_some(&self.file as &dyn ByteSource)
        }
    }

    fn past_end_disk() -> VirtualDisk {
        VirtualDisk::new(Arc::new(PastEnd {
            info: DiskInfo::new(Format::Qcow2, 4096),
            file: MemSource::new("t.qcow2", vec![0; 512]),
        }))
    }

    #[test]
    fn damage_inside_the_disk_is_typed_and_recorded() {
        let d = past_end_disk();
        let guest_view = d.clone();
        let mut buf = [0u8; 512];
        let e = guest_view.read_exact_at(0, &mut buf).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Truncated, "{e}");
        let rec = d.damage().expect("damage recorded, shared by clones");
        assert_eq!(rec.kind, ErrorKind::Truncated);
        assert!(
            rec.to_string()
                .starts_with("t.qcow2: read of 512 bytes at offset 1048576"),
            "{rec}"
        );
    }

    #[test]
    fn reads_past_the_disk_end_are_not_damage() {
        let d = past_end_disk();
        let mut buf = [0u8; 512];
        assert!(d.read_exact_at(4096, &mut buf).is_err());
        assert!(d.read_exact_at(u64::MAX, &mut buf).is_err());
        assert!(d.damage().is_none());
    }

    #[test]
    fn disk_errors_cross_the_seam_with_their_kind() {
        let e: SourceError = corrupt("f", "L2 table", 65536, "bad").into();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert_eq!(e.to_string(), "f: L2 table at offset 65536: bad");
        assert!(std::error::Error::source(&e).is_some());
        let e: SourceError = crate::error::limit("f", "L1 table", 0, "L1 entries", 9, 8).into();
        assert!(matches!(e.kind, ErrorKind::LimitExceeded(ref l) if l.value == 9 && l.limit == 8));
        assert!(!e.is_damage());
    }
}
