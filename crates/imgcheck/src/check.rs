//! `imgcheck::check`: open an image, inspect the guest, run the provider
//! profiles, and return the whole result as one [`Report`] (the document
//! `imgcheck --json` prints).
//!
//! A damaged, truncated or unreadable image is a *result*, not an error:
//! its report carries the facts that could be read and verdicts that fail
//! with `image.corrupt` (or `image.unreadable`, `image.external_reference`).
//! [`check`] returns `Err` only when nothing about the image could be
//! judged: the file cannot be opened or read (missing, permissions, I/O).

use std::sync::Arc;
use std::time::Instant;

use imgcheck_disk::VirtualDisk;
use imgcheck_guest::{Filesystem, GuestFacts, GuestReport, PartitionTable};
use imgcheck_rules::{
    CheckInput, ImageError, ImageErrorKind, ImageFacts, ImageFormat, Provider, Verdict,
};
use imgcheck_source::{ErrorKind, Limit};
use serde::Serialize;

use crate::input::{FailedOpen, open_or_report};
use crate::{Error, Input, OpenOptions};

/// The default cap on decompressing a gzip/bzip2 image during a check:
/// DigitalOcean's 100 GB, the largest limit any profile documents. A stream
/// that goes past it fails every size rule that exists, so decoding further
/// (or a decompression bomb) would only cost time.
pub const CHECK_MAX_UNCOMPRESSED: u64 = 100_000_000_000;

/// Options for [`check`].
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Profiles to run, in this order; empty means every provider.
    pub providers: Vec<Provider>,
    /// How to open the image (`--format`, `--allow-external`, limits).
    /// `max_uncompressed` defaults to [`CHECK_MAX_UNCOMPRESSED`] when unset.
    pub open: OpenOptions,
}

/// The result of checking one image. Field names and types are the JSON
/// schema documented in `docs/check-json.md`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Facts about the file.
    pub image: ImageFacts,
    /// The partition table, `null` when the guest could not be inspected.
    pub partitions: Option<PartitionTable>,
    /// Filesystems found.
    pub filesystems: Vec<Filesystem>,
    /// Index into `filesystems` of the root filesystem.
    pub root: Option<usize>,
    /// Why the booting tree of a recognised layout (ostree, Flatcar) could
    /// not be told, when it could not.
    pub root_undetermined: Option<String>,
    /// Facts read from the root filesystem, `null` when the guest could not
    /// be inspected.
    pub guest: Option<GuestFacts>,
    /// What went wrong during inspection without stopping it.
    pub notes: Vec<String>,
    /// One verdict per provider checked.
    pub verdicts: Vec<Verdict>,
    /// Cost of the check.
    pub stats: Stats,
}

impl Report {
    /// True when every verdict passes.
    pub fn pass(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }
}

/// What a check cost.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    /// Bytes read from the image file(s) (compressed bytes for a compressed
    /// image).
    pub bytes_read: u64,
    /// Wall-clock time of the check, in milliseconds.
    pub elapsed_ms: u64,
}

/// Checks the image at `location` against the providers in `options`.
///
/// A corrupt, truncated or unreadable image gives `Ok` with failing
/// verdicts; `Err` means the file could not be opened or read at all.
///
/// ```
/// use imgcheck::{CheckOptions, Provider, check};
///
/// // A blank 1 MiB raw disk: no partition table, no filesystem, no OS.
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("blank.img");
/// std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
///
/// let options = CheckOptions {
///     providers: vec![Provider::DigitalOcean],
///     ..Default::default()
/// };
/// let report = check(path.to_str().unwrap(), &options).unwrap();
/// assert_eq!(report.image.virtual_size, Some(1 << 20));
/// let verdict = &report.verdicts[0];
/// assert!(!verdict.pass);
/// assert!(verdict.codes().contains(&"partition_table.missing"));
///
/// // A missing file is an error, not a verdict.
/// assert!(check("/nonexistent/disk.img", &options).is_err());
/// ```
pub fn check(location: &str, options: &CheckOptions) -> Result<Report, Error> {
    check_with(location, options, &|_| {})
}

/// [`check`], with the image facts changed by `adjust` before the rules
/// judge them: the upload preflight judges the guest of the input as the
/// file it will upload (a qcow2 converted to raw + gzip for Linode).
pub(crate) fn check_with(
    location: &str,
    options: &CheckOptions,
    adjust: &dyn Fn(&mut ImageFacts),
) -> Result<Report, Error> {
    let start = Instant::now();
    let mut open = options.open.clone();
    open.max_uncompressed = open.max_uncompressed.or(Some(CHECK_MAX_UNCOMPRESSED));
    let (image, guest, bytes_read) = match open_or_report(location, &open)? {
        Ok(input) => inspect(&input),
        Err(failed) => {
            let (image, bytes) = facts_of_failed_open(location, failed)?;
            (image, None, bytes)
        }
    };
    let mut image = image;
    if image.readable() {
        adjust(&mut image);
    }
    let verdicts = imgcheck_rules::check_all(
        &options.providers,
        &CheckInput {
            image: &image,
            guest: guest.as_ref(),
        },
    );
    let (partitions, filesystems, root, root_undetermined, guest, notes) = match guest {
        Some(g) => (
            Some(g.partitions),
            g.filesystems,
            g.root,
            g.root_undetermined,
            Some(g.guest),
            g.notes,
        ),
        None => (None, Vec::new(), None, None, None, Vec::new()),
    };
    Ok(Report {
        image,
        partitions,
        filesystems,
        root,
        root_undetermined,
        guest,
        notes,
        verdicts,
        stats: Stats {
            bytes_read,
            elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
    })
}

/// Facts of an opened image, the guest report, and the bytes read.
fn inspect(input: &Input) -> (ImageFacts, Option<GuestReport>, u64) {
    let info = input.disk.info();
    let guest = imgcheck_guest::inspect(Arc::new(input.disk.clone()));
    // Inspection treats a failed read as "unknown"; the disk remembers the
    // first one that was damage.
    let read_error = input
        .disk
        .damage()
        .map(|e| e.to_string().replace('\n', " "))
        .or_else(|| verify_allocation(&input.disk));
    let image = ImageFacts {
        // A presigned URL's signature is a credential: never in a report.
        path: imgcheck_source::net::redact_url(&input.location),
        format: Some(ImageFormat::Disk(info.format)),
        subformat: info.subformat.clone(),
        compression: input.container,
        virtual_size: Some(info.virtual_size),
        file_size: input.file_size,
        dirty: info.dirty,
        backing_file: info.backing_file.clone(),
        external_refs: info.external_refs.clone(),
        error: None,
        head_supported: input.remote.as_ref().map(|r| r.head_supported),
        read_error,
    };
    // The outer file, plus the other host files the format opened (VMDK
    // extents); host file 0 is (a view of) the outer file.
    let img = input.disk.image();
    let others: u64 = (1..img.host_file_count())
        .filter_map(|i| img.host_file(i))
        .map(|f| f.bytes_fetched())
        .sum();
    (
        image,
        Some(guest),
        input.source.bytes_fetched().saturating_add(others),
    )
}

/// Most allocation-map runs walked by [`verify_allocation`]; past this the
/// walk stops (a pathologically fragmented image is not worth seconds).
const MAX_VERIFIED_EXTENTS: usize = 1 << 20;

/// Checks that every allocated run of the guest disk lies inside its host
/// file, and returns the first damage found.
///
/// Inspection reads only what it needs (tables, superblocks, a few files),
/// so a file truncated in its data area, or a table entry pointing past the
/// end, would pass unnoticed. Walking the allocation map reads only the
/// format's tables, not the data, and finds both. Of the compressed
/// (encoded) runs only the last is decoded, one byte of it.
fn verify_allocation(disk: &VirtualDisk) -> Option<String> {
    let img = disk.image();
    let mut last_encoded = None;
    for extent in disk
        .extents(0, disk.virtual_size())
        .take(MAX_VERIFIED_EXTENTS)
    {
        let e = match extent {
            Ok(e) => e,
            Err(err) if err.is_corrupt() => return Some(err.to_string().replace('\n', " ")),
            // Anything else (I/O) is not evidence of damage.
            Err(_) => return None,
        };
        if e.kind == imgcheck_disk::MapKind::Encoded {
            last_encoded = Some(e.guest_offset.saturating_add(e.len - 1));
            continue;
        }
        let imgcheck_disk::MapKind::Data { file, host_offset } = e.kind else {
            continue;
        };
        let Some(host) = img.host_file(file) else {
            return Some(format!(
                "guest offset {} maps to host file {file}, which does not exist",
                e.guest_offset
            ));
        };
        let end = host_offset.checked_add(e.len);
        if end.is_none_or(|end| end > host.len()) {
            return Some(format!(
                "{}: guest bytes {}..{} are stored at offset {host_offset}, past the end of the file ({} bytes); the file is truncated or a table is damaged",
                host.name(),
                e.guest_offset,
                e.guest_offset.saturating_add(e.len),
                host.len()
            ));
        }
    }
    // Compressed grains are written in guest order (streamOptimized VMDK,
    // compressed qcow2 from convert), so a truncated file loses the last one
    // first: decoding one byte of it is a cheap test for the whole tail.
    if let Some(at) = last_encoded {
        let mut byte = [0u8; 1];
        if let Err(e) = disk.read_at(at, &mut byte)
            && e.is_corrupt()
        {
            return Some(e.to_string().replace('\n', " "));
        }
    }
    None
}

/// The facts that can still be had when the image did not open (from what
/// the opener found: nothing is opened again), or the error itself when
/// the failure is not about the image (I/O).
fn facts_of_failed_open(location: &str, failed: FailedOpen) -> Result<(ImageFacts, u64), Error> {
    let e = failed.error;
    let Some(kind) = classify(&e) else {
        return Err(e);
    };
    let found = failed.found;
    let format = match (found.format, found.unsupported) {
        (Some(f), _) => Some(ImageFormat::Disk(f)),
        (None, Some(what)) => Some(ImageFormat::Other(what.to_owned())),
        (None, None) => None,
    };
    let image = ImageFacts {
        path: location.to_owned(),
        format,
        compression: found.container,
        file_size: failed.file.len(),
        head_supported: failed.remote.as_ref().map(|r| r.head_supported),
        error: Some(ImageError {
            kind,
            message: e.to_string().replace('\n', " "),
            hint: e.hint(),
            uncompressed_at_least: uncompressed_at_least(&e),
        }),
        ..Default::default()
    };
    Ok((image, failed.file.bytes_fetched()))
}

/// Which [`ImageErrorKind`] an open error is, or `None` when it is not
/// about the image's content (then the check itself fails).
fn classify(e: &Error) -> Option<ImageErrorKind> {
    let kind = e.kind()?;
    if kind.is_damage() {
        return Some(ImageErrorKind::Corrupt);
    }
    match kind {
        ErrorKind::LimitExceeded(_) => Some(ImageErrorKind::TooLarge),
        ErrorKind::Unsupported => Some(ImageErrorKind::Unsupported),
        ErrorKind::Policy(_) => Some(ImageErrorKind::ExternalReference),
        _ => None,
    }
}

/// For a decompression stopped at the limit: the bytes produced by then.
fn uncompressed_at_least(e: &Error) -> Option<u64> {
    match e.kind()? {
        ErrorKind::LimitExceeded(l) if l.what == Limit::UNCOMPRESSED => Some(l.value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_an_error_not_a_report() {
        let e = check("/nonexistent/imgcheck/disk.img", &CheckOptions::default()).unwrap_err();
        assert!(classify(&e).is_none());
    }

    #[test]
    fn damaged_header_is_a_failing_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.vmdk");
        // A VMDK sparse magic and nothing else: version 0, no grains, no
        // grain directory.
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"KDMV");
        std::fs::write(&path, &h).unwrap();
        let r = check(path.to_str().unwrap(), &CheckOptions::default()).unwrap();
        assert_eq!(r.verdicts.len(), 3);
        for v in &r.verdicts {
            assert!(!v.pass, "{v:?}");
            assert!(v.codes().contains(&"image.corrupt"), "{v:?}");
        }
        assert_eq!(r.image.format.as_ref().map(|f| f.name()), Some("vmdk"));
        assert!(r.guest.is_none());
    }
}
