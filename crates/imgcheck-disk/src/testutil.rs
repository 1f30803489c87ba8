//! Outcome checks shared by the format tests that feed damaged images:
//! "never panics" is not enough, the outcome must also be the right class.

use imgcheck_source::ErrorKind;

use crate::disk::VirtualDisk;
use crate::error::DiskError;

/// A damaged in-memory image fails as what it is: never as I/O trouble
/// (memory cannot fail) and never by trying to open another file.
pub(crate) fn assert_image_error(e: &DiskError) {
    let k = e.kind();
    assert!(
        !matches!(k, ErrorKind::Io | ErrorKind::Policy(_)),
        "{k}: {e}"
    );
}

/// For an image cut short: the open fails as damage, or every read in
/// `0..limit` either returns exactly the reference bytes (qemu-img's view
/// of the whole image; a cut removes bytes, it changes none) or fails as
/// damage.
pub(crate) fn assert_cut_outcome(
    opened: Result<VirtualDisk, DiskError>,
    reference: &[u8],
    chunk: usize,
    limit: u64,
) {
    let d = match opened {
        Ok(d) => d,
        Err(e) => {
            assert!(e.is_corrupt(), "a cut image must fail as damage: {e}");
            return;
        }
    };
    assert_eq!(
        d.virtual_size(),
        reference.len() as u64,
        "size from the header"
    );
    let end = d.virtual_size().min(limit);
    let mut buf = vec![0u8; chunk];
    let mut off = 0u64;
    while off < end {
        let n = usize::try_from((end - off).min(chunk as u64)).unwrap();
        let at = usize::try_from(off).unwrap();
        match d.read_at(off, &mut buf[..n]) {
            Ok(()) => assert!(
                buf[..n] == reference[at..at + n],
                "read at {off} succeeded with bytes that differ from qemu-img"
            ),
            Err(e) => assert!(e.is_corrupt(), "read at {off}: {e}"),
        }
        off += n as u64;
    }
}

/// For an image with flipped bits: the open or a read may fail, but only
/// as an image error (see [`assert_image_error`]).
pub(crate) fn assert_flip_outcome(
    opened: Result<VirtualDisk, DiskError>,
    chunk: usize,
    limit: u64,
) {
    let d = match opened {
        Ok(d) => d,
        Err(e) => return assert_image_error(&e),
    };
    let end = d.virtual_size().min(limit);
    let mut buf = vec![0u8; chunk];
    let mut off = 0u64;
    while off < end {
        let n = usize::try_from((end - off).min(chunk as u64)).unwrap();
        if let Err(e) = d.read_at(off, &mut buf[..n]) {
            assert_image_error(&e);
        }
        off += n as u64;
    }
    for x in d.extents(0, d.virtual_size()).take(100_000) {
        if let Err(e) = x {
            assert_image_error(&e);
            break;
        }
    }
}
