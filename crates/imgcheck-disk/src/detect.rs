//! Format detection: the one place that looks at magic bytes.
//!
//! Detection reads a bounded prefix (and, for VHD, the last 512 bytes) and
//! compares signatures in this fixed order; the first match wins:
//!
//! 1. containers: gzip `1f 8b`, bzip2 `BZh[1-9]` + block magic, xz
//!    `fd 37 7a 58 5a 00`, zstd `28 b5 2f fd`, zip `PK\x03\x04`, tar
//!    `ustar` at 257;
//! 2. qcow2 / qcow1 `QFI\xfb` (version 1 is named and refused);
//! 3. QED `QED\0` (named and refused);
//! 4. VHDX `vhdxfile` at 0;
//! 5. VDI signature `0xbeda107f` (LE) at 0x40;
//! 6. VMDK sparse `KDMV` at 0, VMware3 `COWD` (refused), or a text
//!    descriptor (`# Disk DescriptorFile` or a `createType=` line in the
//!    first 4 KiB of a small text file);
//! 7. VHD `conectix` footer at the end (or start, for dynamic VHD copies);
//!    named and refused (qemu calls it `vpc`);
//! 8. anything else is raw.
//!
//! The file name is never consulted. `--format` bypasses this module.
//!
//! # Security
//! Probing untrusted bytes is how a raw guest disk that happens to contain a
//! qcow2 header gets read as qcow2 (and its "backing file" followed). The
//! disk layer never follows references, so a wrong guess costs a wrong
//! answer, not a file read; users who know the format should pass it.

use imgcheck_source::{ByteSource, SourceError, read_prefix};

use crate::format::{Container, Format};

/// Bytes read from the start for detection.
pub const PROBE_LEN: usize = 4096;

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// A disk format imgcheck reads.
    Disk(Format),
    /// A compression or archive container; the image is inside.
    Container(Container),
    /// Recognised but not read (named so the user knows what they have).
    Unsupported(&'static str),
}

/// Detects the format of `src` from its magic bytes.
pub fn detect(src: &dyn ByteSource) -> Result<Detected, SourceError> {
    let mut head = [0u8; PROBE_LEN];
    let n = read_prefix(src, 0, &mut head)?;
    let head = &head[..n];
    if let Some(c) = detect_container(head) {
        return Ok(Detected::Container(c));
    }
    if head.starts_with(b"QFI\xfb") {
        let version = head
            .get(4..8)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        return Ok(match version {
            Some(1) => Detected::Unsupported("qcow (version 1)"),
            _ => Detected::Disk(Format::Qcow2),
        });
    }
    if head.starts_with(b"QED\0") {
        return Ok(Detected::Unsupported("qed"));
    }
    if head.starts_with(b"vhdxfile") {
        return Ok(Detected::Disk(Format::Vhdx));
    }
    if head.get(0x40..0x44) == Some(&0xbeda_107f_u32.to_le_bytes()[..]) {
        return Ok(Detected::Disk(Format::Vdi));
    }
    if head.starts_with(b"KDMV") {
        return Ok(Detected::Disk(Format::Vmdk));
    }
    if head.starts_with(b"COWD") {
        return Ok(Detected::Unsupported("vmdk (VMware 3 COWD / vmfsSparse)"));
    }
    if looks_like_vmdk_descriptor(head, src.len()) {
        return Ok(Detected::Disk(Format::Vmdk));
    }
    if head.starts_with(b"conectix") || has_vhd_footer(src)? {
        return Ok(Detected::Unsupported("vhd (vpc)"));
    }
    Ok(Detected::Disk(Format::Raw))
}

/// Container magics only (used again on the decompressed stream, where a
/// second container means e.g. a `.tar.gz`).
pub fn detect_container(head: &[u8]) -> Option<Container> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(Container::Gzip);
    }
    // "BZh" + level digit + block magic or end-of-stream magic.
    if head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && (head[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
            || head[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])
    {
        return Some(Container::Bzip2);
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Some(Container::Xz);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(Container::Zstd);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Some(Container::Zip);
    }
    if head.get(257..262) == Some(b"ustar") {
        return Some(Container::Tar);
    }
    None
}

/// A VMDK text descriptor is a small text file; qemu-img writes
/// `# Disk DescriptorFile` first, VMware tools sometimes omit it.
fn looks_like_vmdk_descriptor(head: &[u8], file_len: u64) -> bool {
    if head.starts_with(b"# Disk DescriptorFile") {
        return true;
    }
    // Without the comment: accept only a small, all-text file that has a
    // createType line, so raw disks are never mistaken for descriptors.
    if file_len > 64 * 1024 || head.is_empty() {
        return false;
    }
    let text = head
        .iter()
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b));
    text && head.windows(11).any(|w| w == b"createType=")
}

fn has_vhd_footer(src: &dyn ByteSource) -> Result<bool, SourceError> {
    let len = src.len();
    if len < 512 {
        return Ok(false);
    }
    let mut footer = [0u8; 8];
    src.read_exact_at(len - 512, &mut footer)?;
    Ok(&footer == b"conectix")
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgcheck_source::MemSource;

    fn det(bytes: &[u8]) -> Detected {
        detect(&MemSource::new("t", bytes.to_vec())).unwrap()
    }

    #[test]
    fn short_and_empty_files_are_raw() {
        assert_eq!(det(b""), Detected::Disk(Format::Raw));
        assert_eq!(det(b"Q"), Detected::Disk(Format::Raw));
    }

    #[test]
    fn magics_in_order() {
        assert_eq!(det(b"QFI\xfb\0\0\0\x03"), Detected::Disk(Format::Qcow2));
        assert_eq!(
            det(b"QFI\xfb\0\0\0\x01"),
            Detected::Unsupported("qcow (version 1)")
        );
        assert_eq!(det(b"vhdxfile"), Detected::Disk(Format::Vhdx));
        assert_eq!(det(b"KDMV"), Detected::Disk(Format::Vmdk));
        assert_eq!(
            det(&[0x1f, 0x8b, 8, 0]),
            Detected::Container(Container::Gzip)
        );
        assert_eq!(det(b"BZh91AY&SY"), Detected::Container(Container::Bzip2));
        assert_eq!(det(b"BZh9 not a block"), Detected::Disk(Format::Raw));
        let mut vdi = vec![0u8; 512];
        vdi[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        assert_eq!(det(&vdi), Detected::Disk(Format::Vdi));
        let mut vhd = vec![0u8; 1024];
        vhd[512..520].copy_from_slice(b"conectix");
        assert_eq!(det(&vhd), Detected::Unsupported("vhd (vpc)"));
    }

    #[test]
    fn descriptor_text_needs_create_type() {
        assert_eq!(
            det(b"version=1\ncreateType=\"monolithicFlat\"\n"),
            Detected::Disk(Format::Vmdk)
        );
        assert_eq!(det(b"version=1\nhello\n"), Detected::Disk(Format::Raw));
    }
}
