//! The LVM2 physical-volume label, PV header and metadata-area header, and
//! the extraction of the current metadata text from the area's ring buffer.
//!
//! On-disk layout (LVM2's `lib/format_text/layout.h`, `lib/label/label.h`):
//!
//! * one of the first four 512-byte sectors holds the label header:
//!   `"LABELONE"`, its own sector number (u64), a CRC (u32) of the rest of
//!   the sector from byte 20, the offset of the contents (u32, normally 32)
//!   and the type `"LVM2 001"`;
//! * the PV header follows at that offset: the PV UUID (32 ASCII bytes, no
//!   dashes), the device size (u64), then two lists of `{offset, size}`
//!   (u64 pairs) each ended by a zero pair: data areas, then metadata areas;
//! * a metadata area starts with a 512-byte header: CRC (u32), magic
//!   `" LVM2 x[5A%r0N*>"`, version 1, the area's start and size (u64), then
//!   `raw_locn` slots `{offset u64, size u64, checksum u32, flags u32}`. The
//!   first slot locates the committed text relative to the area's start;
//!   the text may wrap from the area's end back to just after its header.
//!
//! All integers are little-endian. Every offset and size is checked against
//! the PV's length and [`MAX_METADATA_TEXT`] before anything is allocated.

use imgcheck_source::ByteSource;

use crate::fs::FsError;

/// Size of an LVM sector, of the label sector and of the mda header.
const SECTOR: u64 = 512;
/// Magic of a metadata area header.
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// LVM's CRC seed (`INITIAL_CRC` in lib/misc/crc.h).
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// Largest metadata text we read (LVM's default area is 1 MiB; the text of
/// a VG with hundreds of LVs stays well below this).
pub const MAX_METADATA_TEXT: u64 = 4 * 1024 * 1024;
/// Most areas of each kind listed in a PV header (LVM writes at most two
/// metadata areas and one data area).
const MAX_AREAS: usize = 8;

const FS: &str = "lvm2";

/// What a PV label says.
#[derive(Debug, Clone)]
pub struct PvLabel {
    /// PV UUID, 32 characters, no dashes.
    pub uuid: String,
    /// Byte offset of each metadata area on the PV.
    pub metadata_areas: Vec<(u64, u64)>,
}

/// LVM2's CRC32: the reflected 0xEDB88320 polynomial from the seed
/// [`INITIAL_CRC`] with no final inversion. crc32fast computes
/// `!raw(!seed, data)`, so the raw register is recovered by inverting both.
pub fn lvm_crc(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!INITIAL_CRC);
    h.update(data);
    !h.finalize()
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Finds and parses the label in the first four sectors of `pv`.
pub fn read_label(pv: &dyn ByteSource) -> Result<PvLabel, FsError> {
    let mut head = [0u8; 2048];
    let n = usize::try_from(pv.len().min(2048)).unwrap_or(0);
    pv.read_exact_at(0, &mut head[..n])?;
    for sector in 0..4usize {
        let s = &head[sector * 512..sector * 512 + 512];
        if &s[0..8] != b"LABELONE" || &s[24..32] != b"LVM2 001" {
            continue;
        }
        let at = (sector as u64) * SECTOR;
        let crc = u32_at(s, 16).unwrap_or(0);
        if lvm_crc(&s[20..]) != crc {
            return Err(FsError::corrupt(FS, "PV label", at, "checksum mismatch"));
        }
        let contents = u32_at(s, 20)
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(0);
        return parse_pv_header(s, contents, at);
    }
    Err(FsError::corrupt(
        FS,
        "PV label",
        0,
        "no LABELONE/LVM2 001 label in the first four sectors",
    ))
}

/// Parses the PV header at `off` inside label sector `s`.
fn parse_pv_header(s: &[u8], off: usize, at: u64) -> Result<PvLabel, FsError> {
    let bad = |why: &str| FsError::corrupt(FS, "PV header", at + off as u64, why.to_owned());
    let uuid = s
        .get(off..off.checked_add(32).ok_or_else(|| bad("offset overflows"))?)
        .ok_or_else(|| bad("header outside the label sector"))?;
    let uuid = std::str::from_utf8(uuid)
        .ok()
        .filter(|u| u.bytes().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| bad("PV UUID is not 32 alphanumeric characters"))?
        .to_owned();
    // UUID, device size, then the two zero-terminated lists.
    let mut p = off + 40;
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            let (Some(o), Some(z)) = (u64_at(s, p), u64_at(s, p + 8)) else {
                return Err(bad("area list runs past the label sector"));
            };
            p += 16;
            if o == 0 && z == 0 {
                break;
            }
            if list.len() >= MAX_AREAS {
                return Err(bad("too many areas listed"));
            }
            list.push((o, z));
        }
    }
    let [_, metadata_areas] = lists;
    Ok(PvLabel {
        uuid,
        metadata_areas,
    })
}

/// Reads the committed metadata text of the area at `(offset, size)` on
/// `pv`, or `Ok(None)` when the area holds no text yet.
pub fn read_metadata_text(
    pv: &dyn ByteSource,
    area: (u64, u64),
) -> Result<Option<Vec<u8>>, FsError> {
    let (start, size) = area;
    let bad = |why: String| FsError::corrupt(FS, "metadata area header", start, why);
    let mut h = [0u8; 512];
    pv.read_exact_at(start, &mut h)?;
    if h.get(4..20) != Some(&MDA_MAGIC[..]) {
        return Err(bad("bad magic".into()));
    }
    if lvm_crc(&h[4..]) != u32_at(&h, 0).unwrap_or(0) {
        return Err(bad("checksum mismatch".into()));
    }
    let hdr_start = u64_at(&h, 24).unwrap_or(0);
    let hdr_size = u64_at(&h, 32).unwrap_or(0);
    if hdr_start != start || hdr_size == 0 || (size != 0 && hdr_size > size) {
        return Err(bad(format!(
            "header says start {hdr_start} size {hdr_size}"
        )));
    }
    let (off, len) = (u64_at(&h, 40).unwrap_or(0), u64_at(&h, 48).unwrap_or(0));
    let checksum = u32_at(&h, 56).unwrap_or(0);
    if off == 0 && len == 0 {
        return Ok(None);
    }
    if len > MAX_METADATA_TEXT || off < SECTOR || off >= hdr_size {
        return Err(bad(format!(
            "metadata text at {off} of {len} bytes is outside the area"
        )));
    }
    // The ring: text runs from `off` to the area's end, then wraps to just
    // after the header.
    let ring = hdr_size - SECTOR;
    if len > ring {
        return Err(bad(format!("{len} bytes of text in a {ring}-byte ring")));
    }
    let first = len.min(hdr_size - off);
    let mut text = vec![0u8; usize::try_from(len).map_err(|_| bad("text too large".into()))?];
    let split = usize::try_from(first).unwrap_or(0);
    let abs = |o: u64| {
        start
            .checked_add(o)
            .ok_or_else(|| bad("offset overflows".into()))
    };
    pv.read_exact_at(abs(off)?, &mut text[..split])?;
    if split < text.len() {
        pv.read_exact_at(abs(SECTOR)?, &mut text[split..])?;
    }
    if lvm_crc(&text) != checksum {
        return Err(FsError::corrupt(
            FS,
            "metadata text",
            start + off,
            "checksum mismatch",
        ));
    }
    // The committed text is NUL-terminated within `len`.
    if let Some(z) = text.iter().position(|&c| c == 0) {
        text.truncate(z);
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_lvm_reference() {
        // calc_crc(INITIAL_CRC, "", 0) is the seed itself; and a value
        // checked by hand against LVM's table-driven loop for "a".
        assert_eq!(lvm_crc(b""), INITIAL_CRC);
        let mut c = INITIAL_CRC;
        for b in b"LVM2" {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        assert_eq!(lvm_crc(b"LVM2"), c);
    }
}
