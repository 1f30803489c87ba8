//! Partition tables: MBR (with EBR chains), GPT (primary and backup), hybrid
//! MBR, and "no table at all".
//!
//! Parsing is delegated to the `mbrman` and `gpt` crates through [`DiskIo`],
//! a `Read + Seek` (+ refusing `Write`) view of a [`ByteSource`]. Neither
//! crate was written for hostile input, so everything they would trip over is
//! checked here first:
//!
//! * `gpt` asserts `part_size == 128` and allocates `num_parts * part_size`
//!   bytes from the header: both are validated before it sees the header.
//! * `gpt`'s `GptConfig::open_from_device` gives up when the primary header
//!   is fine but its entry array is not, so we call its lower-level header
//!   and entry readers ourselves and fall back to the backup explicitly.
//! * `mbrman` adds EBR-relative LBAs as `u32` without overflow checks; the
//!   EBR chain is pre-walked here with checked arithmetic and a hop limit.
//! * Every read through [`DiskIo`] counts against a byte budget, so no table
//!   can make us read more than [`TABLE_READ_BUDGET`] bytes.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use imgcheck_source::{ByteSource, SliceSource};

use crate::report::{Partition, PartitionRole, PartitionTable, TableKind};

/// Most bytes the table parsers may read in total (entry arrays are at most
/// [`MAX_GPT_ENTRIES`] × 128 bytes; EBR chains at most [`MAX_LOGICAL`]
/// sectors).
pub(crate) const TABLE_READ_BUDGET: u64 = 4 * 1024 * 1024;
/// Largest GPT entry count accepted (the spec minimum is 128; tools write
/// 128; 4096 leaves room for odd but honest tables).
pub(crate) const MAX_GPT_ENTRIES: u32 = 4096;
/// Most logical partitions followed in an EBR chain.
pub(crate) const MAX_LOGICAL: usize = 128;

/// A `Read + Seek + Write` cursor over a [`ByteSource`] for the `gpt` and
/// `mbrman` crates. Reads stop short at the end of the source (as a file
/// would), writes always fail (inspection is read-only), and the total bytes
/// read are capped.
#[derive(Debug)]
pub struct DiskIo {
    src: Arc<dyn ByteSource>,
    pos: u64,
    budget: u64,
}

impl DiskIo {
    /// A cursor at offset 0 that may read at most `budget` bytes.
    pub fn new(src: Arc<dyn ByteSource>, budget: u64) -> Self {
        Self {
            src,
            pos: 0,
            budget,
        }
    }
}

impl Read for DiskIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.src.len().saturating_sub(self.pos);
        let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let n64 = n as u64;
        if n64 > self.budget {
            return Err(io::Error::other(format!(
                "{}: partition-table read budget of {TABLE_READ_BUDGET} bytes exhausted",
                self.src.name()
            )));
        }
        self.budget -= n64;
        let dst = buf.get_mut(..n).ok_or_else(|| io::Error::other("buffer"))?;
        self.src
            .read_exact_at(self.pos, dst)
            .map_err(io::Error::other)?;
        self.pos = self.pos.saturating_add(n64);
        Ok(n)
    }
}

impl Seek for DiskIo {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.src.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        Ok(self.pos)
    }
}

impl Write for DiskIo {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "imgcheck never writes to an inspected disk",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// GPT partition type GUIDs we give a role (upper-case, as sgdisk prints).
const GPT_ROLES: &[(&str, PartitionRole)] = &[
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", PartitionRole::Esp),
    (
        "21686148-6449-6E6F-744E-656564454649",
        PartitionRole::BiosBoot,
    ),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", PartitionRole::Linux),
    ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", PartitionRole::Linux), // root x86-64
    ("44479540-F297-41B2-9AF7-D131D5F0458A", PartitionRole::Linux), // root x86
    ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", PartitionRole::Linux), // root aarch64
    ("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", PartitionRole::Linux), // root arm
    ("72EC70A6-CF74-40E6-BD49-4BDA08E8F224", PartitionRole::Linux), // root riscv64
    ("8484680C-9521-48C6-9C11-B0720656F69E", PartitionRole::Linux), // /usr x86-64
    ("B0E01050-EE5F-4390-949A-9101B17104E9", PartitionRole::Linux), // /usr aarch64
    ("BC13C2FF-59E6-4262-A352-B275FD6F7172", PartitionRole::Linux), // XBOOTLDR
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", PartitionRole::Linux), // /home
    ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", PartitionRole::Linux), // /srv
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", PartitionRole::Swap),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", PartitionRole::Lvm),
];

/// Role of a GPT partition type GUID (any case).
pub fn gpt_role(type_guid: &str) -> PartitionRole {
    GPT_ROLES
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(type_guid))
        .map_or(PartitionRole::Other, |(_, r)| *r)
}

/// Role of an MBR partition type byte.
pub fn mbr_role(sys: u8) -> PartitionRole {
    match sys {
        0xEF => PartitionRole::Esp,
        0x83 => PartitionRole::Linux,
        0x82 => PartitionRole::Swap,
        0x8E => PartitionRole::Lvm,
        0x05 | 0x0F | 0x85 => PartitionRole::Extended,
        _ => PartitionRole::Other,
    }
}

/// One raw MBR entry, decoded by hand for the protective/hybrid checks
/// (mbrman refuses some tables we still want to describe).
#[derive(Debug, Clone, Copy)]
struct RawEntry {
    boot: u8,
    sys: u8,
    start: u32,
    sectors: u32,
}

/// The 512-byte sector 0, if it carries the 0x55AA signature.
fn raw_mbr(disk: &dyn ByteSource) -> Option<[RawEntry; 4]> {
    let mut s = [0u8; 512];
    if disk.len() < 512 || disk.read_exact_at(0, &mut s).is_err() {
        return None;
    }
    if s[510] != 0x55 || s[511] != 0xAA {
        return None;
    }
    let mut out = [RawEntry {
        boot: 0,
        sys: 0,
        start: 0,
        sectors: 0,
    }; 4];
    for (i, e) in out.iter_mut().enumerate() {
        let b = 446 + i * 16;
        e.boot = s[b];
        e.sys = s[b + 4];
        e.start = u32::from_le_bytes([s[b + 8], s[b + 9], s[b + 10], s[b + 11]]);
        e.sectors = u32::from_le_bytes([s[b + 12], s[b + 13], s[b + 14], s[b + 15]]);
    }
    Some(out)
}

/// A partition table plus each partition's PARTUUID (GPT unique GUID, or
/// MBR `disksig-NN`), for matching `PARTUUID=` in /etc/fstab.
#[derive(Debug, Default)]
pub struct TableRead {
    /// The table for the report.
    pub table: PartitionTable,
    /// (partition number, PARTUUID in lower case).
    pub partuuids: Vec<(u32, String)>,
    /// (partition number, GPT attribute bits), GPT only: bits 48..=56 are
    /// the ChromeOS/CoreOS boot priority, tries and successful flags that
    /// Flatcar's GRUB (`gptprio.next`) uses to pick USR-A or USR-B.
    pub attributes: Vec<(u32, u64)>,
}

impl From<PartitionTable> for TableRead {
    fn from(table: PartitionTable) -> Self {
        Self {
            table,
            partuuids: Vec::new(),
            attributes: Vec::new(),
        }
    }
}

/// Reads the partition table of `disk`.
pub fn read_table(disk: &Arc<dyn ByteSource>) -> TableRead {
    let mbr = raw_mbr(disk.as_ref());
    let protective = mbr
        .as_ref()
        .is_some_and(|m| m.iter().any(|e| e.sys == 0xEE));
    // GPT is recognised by its signature at LBA 1 (512 or 4096 bytes); a
    // protective MBR without a GPT behind it is reported as a problem.
    for lb in [512u32, 4096] {
        if has_gpt_signature(disk.as_ref(), lb) {
            let mut t = read_gpt(disk, lb);
            check_protective(mbr.as_ref(), disk.len(), lb, &mut t.table);
            return t;
        }
    }
    let Some(entries) = mbr else {
        return PartitionTable {
            kind: TableKind::None,
            sector_size: 512,
            ..PartitionTable::default()
        }
        .into();
    };
    if protective {
        let mut t = PartitionTable {
            kind: TableKind::None,
            sector_size: 512,
            ..PartitionTable::default()
        };
        t.problems.push(
            "protective MBR (type 0xEE) but no GPT header at LBA 1 (tried 512- and 4096-byte sectors)"
                .into(),
        );
        return t.into();
    }
    if entries.iter().all(|e| e.sys == 0 || e.sectors == 0) {
        // A boot sector signature with an empty table: an unpartitioned disk
        // whose filesystem (FAT, NTFS) ends in 0x55AA, or a blank MBR.
        return PartitionTable {
            kind: TableKind::None,
            sector_size: 512,
            ..PartitionTable::default()
        }
        .into();
    }
    if looks_like_boot_sector_fs(disk.as_ref()) {
        return PartitionTable {
            kind: TableKind::None,
            sector_size: 512,
            ..PartitionTable::default()
        }
        .into();
    }
    let sig = {
        let mut b = [0u8; 4];
        disk.read_exact_at(440, &mut b)
            .map_or(0, |()| u32::from_le_bytes(b))
    };
    let table = read_mbr(disk, &entries);
    let partuuids = table
        .entries
        .iter()
        .map(|p| (p.number, format!("{sig:08x}-{:02x}", p.number)))
        .collect();
    TableRead {
        table,
        partuuids,
        attributes: Vec::new(),
    }
}

/// FAT and NTFS boot sectors also end in 0x55AA; their "partition table"
/// bytes are boot code. Tell them apart by their OEM/FS-type strings.
fn looks_like_boot_sector_fs(disk: &dyn ByteSource) -> bool {
    let mut s = [0u8; 90];
    if disk.read_exact_at(0, &mut s).is_err() {
        return false;
    }
    &s[3..11] == b"NTFS    " || &s[0x36..0x39] == b"FAT" || &s[0x52..0x57] == b"FAT32"
}

fn has_gpt_signature(disk: &dyn ByteSource, lb: u32) -> bool {
    let mut sig = [0u8; 8];
    disk.read_exact_at(u64::from(lb), &mut sig).is_ok() && &sig == b"EFI PART"
}

/// Checks the protective MBR in front of a GPT and detects hybrid MBRs.
fn check_protective(mbr: Option<&[RawEntry; 4]>, disk_len: u64, lb: u32, t: &mut PartitionTable) {
    let Some(m) = mbr else {
        t.problems
            .push("GPT without a protective MBR (no 0x55AA signature in sector 0)".into());
        return;
    };
    let Some(pmbr) = m.iter().find(|e| e.sys == 0xEE) else {
        t.problems
            .push("GPT but the MBR has no protective (0xEE) entry".into());
        return;
    };
    if pmbr.start != 1 {
        t.problems.push(format!(
            "protective MBR entry starts at LBA {} instead of 1",
            pmbr.start
        ));
    }
    let disk_sectors = disk_len / u64::from(lb);
    let want = disk_sectors.saturating_sub(1).min(u64::from(u32::MAX));
    if u64::from(pmbr.sectors) != want && pmbr.sectors != u32::MAX {
        t.problems.push(format!(
            "protective MBR entry covers {} sectors, the disk has {} after LBA 0",
            pmbr.sectors, want
        ));
    }
    let others = m
        .iter()
        .filter(|e| e.sys != 0 && e.sys != 0xEE && e.sectors != 0)
        .count();
    if others > 0 {
        t.kind = TableKind::HybridMbr;
        t.problems.push(format!(
            "hybrid MBR: the protective MBR also lists {others} real partition(s)"
        ));
    }
}

/// A GPT header that passed `gpt`'s CRC check and our sanity checks, plus
/// its entries.
type GptRead = (
    gpt::header::Header,
    Vec<Partition>,
    Vec<(u32, String)>,
    Vec<(u32, u64)>,
);

fn read_gpt(disk: &Arc<dyn ByteSource>, lb: u32) -> TableRead {
    let mut partuuids = Vec::new();
    let mut attributes = Vec::new();
    let mut t = PartitionTable {
        kind: TableKind::Gpt,
        sector_size: lb,
        ..PartitionTable::default()
    };
    let lb64 = u64::from(lb);
    let last_lba = (disk.len() / lb64).saturating_sub(1);
    let primary = read_gpt_at(disk, lb, 1);
    let backup_lba = match &primary {
        Ok((h, _, _, _)) => {
            if h.backup_lba != last_lba {
                t.problems.push(format!(
                    "backup GPT header not at the end of the disk: primary says LBA {}, the last LBA is {last_lba} (image grown or truncated?)",
                    h.backup_lba
                ));
            }
            h.backup_lba
        }
        Err(_) => last_lba,
    };
    let backup = read_gpt_at(disk, lb, backup_lba);
    match (primary, backup) {
        (Ok((_, parts, uuids, attrs)), backup) => {
            if let Err(e) = backup {
                t.problems
                    .push(format!("backup GPT at LBA {backup_lba} is unusable: {e}"));
            }
            t.entries = parts;
            partuuids = uuids;
            attributes = attrs;
        }
        (Err(pe), Ok((h, parts, uuids, attrs))) => {
            t.problems
                .push(format!("primary GPT is damaged ({pe}); using the backup"));
            if backup_lba == last_lba && h.backup_lba != 1 {
                t.problems.push(format!(
                    "backup GPT header points to primary at LBA {} instead of 1",
                    h.backup_lba
                ));
            }
            t.entries = parts;
            partuuids = uuids;
            attributes = attrs;
        }
        (Err(pe), Err(be)) => {
            t.problems.push(format!(
                "GPT signature present but both headers are unusable: primary: {pe}; backup at LBA {backup_lba}: {be}"
            ));
        }
    }
    TableRead {
        table: t,
        partuuids,
        attributes,
    }
}

/// Reads and validates the GPT header at `lba` and its entry array.
fn read_gpt_at(disk: &Arc<dyn ByteSource>, lb: u32, lba: u64) -> Result<GptRead, String> {
    let lb64 = u64::from(lb);
    let lbs = if lb == 4096 {
        gpt::disk::LogicalBlockSize::Lb4096
    } else {
        gpt::disk::LogicalBlockSize::Lb512
    };
    let off = lba
        .checked_mul(lb64)
        .ok_or_else(|| format!("LBA {lba} overflows"))?;
    if lba == 0 || off.checked_add(lb64).is_none_or(|e| e > disk.len()) {
        return Err(format!("LBA {lba} is outside the disk"));
    }
    // `gpt` only reads headers at LBA 1, so hand it a window that starts one
    // sector before the header we want.
    let window: Arc<dyn ByteSource> = Arc::new(SliceSource::new(
        disk.clone(),
        off - lb64,
        2 * lb64,
        disk.name().to_owned(),
    ));
    let mut io = DiskIo::new(window, TABLE_READ_BUDGET);
    let h = gpt::header::read_header_from_arbitrary_device(&mut io, lbs)
        .map_err(|e| format!("header: {e}"))?;
    if h.current_lba != lba {
        return Err(format!(
            "header at LBA {lba} says it lives at LBA {}",
            h.current_lba
        ));
    }
    if h.part_size != 128 {
        return Err(format!(
            "partition entry size {} (only 128 is supported)",
            h.part_size
        ));
    }
    if h.num_parts > MAX_GPT_ENTRIES {
        return Err(format!(
            "{} partition entries (limit {MAX_GPT_ENTRIES})",
            h.num_parts
        ));
    }
    let array_end = h
        .part_start
        .checked_mul(lb64)
        .and_then(|s| s.checked_add(u64::from(h.num_parts) * 128));
    if array_end.is_none_or(|e| e > disk.len()) {
        return Err(format!(
            "partition entry array at LBA {} runs past the end of the disk",
            h.part_start
        ));
    }
    let mut io = DiskIo::new(disk.clone(), TABLE_READ_BUDGET);
    let parts = gpt::partition::file_read_partitions(&mut io, &h, lbs)
        .map_err(|e| format!("entry array: {e}"))?;
    let mut out = Vec::new();
    let mut uuids = Vec::new();
    let mut attrs = Vec::new();
    for (num, p) in parts {
        if !p.is_used() {
            continue;
        }
        let type_id = p
            .part_type_guid
            .guid
            .hyphenated()
            .to_string()
            .to_uppercase();
        let start = p.first_lba.checked_mul(lb64);
        let size = p
            .last_lba
            .checked_sub(p.first_lba)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(lb64));
        let (Some(start), Some(size)) = (start, size) else {
            return Err(format!(
                "partition {num}: LBAs {}..{} are invalid",
                p.first_lba, p.last_lba
            ));
        };
        uuids.push((num, p.part_guid.hyphenated().to_string()));
        attrs.push((num, p.flags));
        out.push(Partition {
            number: num,
            start,
            size,
            role: gpt_role(&type_id),
            type_id,
            name: (!p.name.is_empty()).then(|| p.name.clone()),
            // Attribute bit 2: legacy BIOS bootable.
            bootable: p.flags & 4 != 0,
        });
    }
    Ok((h, out, uuids, attrs))
}

/// Walks the EBR chain with checked arithmetic, the way mbrman will, and
/// says whether mbrman can be trusted with it (no `u32` overflow, no more
/// than [`MAX_LOGICAL`] hops, strictly increasing links).
fn ebr_chain_ok(disk: &dyn ByteSource, ext_start: u32) -> Result<(), String> {
    let mut rel: u32 = 0;
    for _ in 0..=MAX_LOGICAL {
        let abs = ext_start
            .checked_add(rel)
            .ok_or("EBR address overflows 32 bits")?;
        let mut s = [0u8; 512];
        if disk.read_exact_at(u64::from(abs) * 512, &mut s).is_err() {
            return if rel == 0 {
                Ok(())
            } else {
                Err(format!("EBR at LBA {abs} is outside the disk"))
            };
        }
        if s[510] != 0x55 || s[511] != 0xAA {
            return if rel == 0 {
                Ok(())
            } else {
                Err(format!("EBR at LBA {abs} has no 0x55AA signature"))
            };
        }
        let le = |o: usize| u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);
        let part_start = le(446 + 8);
        part_start
            .checked_add(abs)
            .ok_or("logical partition start overflows 32 bits")?;
        let next = le(462 + 8);
        if next == 0 {
            return Ok(());
        }
        if next <= rel {
            return Err(format!("EBR chain loops back at LBA {abs}"));
        }
        rel = next;
    }
    Err(format!("more than {MAX_LOGICAL} logical partitions"))
}

fn read_mbr(disk: &Arc<dyn ByteSource>, raw: &[RawEntry; 4]) -> PartitionTable {
    let mut t = PartitionTable {
        kind: TableKind::Mbr,
        sector_size: 512,
        ..PartitionTable::default()
    };
    let push = |t: &mut PartitionTable, number: u32, e: RawEntry| {
        t.entries.push(Partition {
            number,
            start: u64::from(e.start) * 512,
            size: u64::from(e.sectors) * 512,
            type_id: format!("0x{:02x}", e.sys),
            role: mbr_role(e.sys),
            name: None,
            bootable: e.boot == 0x80,
        });
    };
    let ext = raw.iter().find(|e| matches!(e.sys, 0x05 | 0x0F | 0x85));
    let mut chain = ext.map(|e| {
        ebr_chain_ok(disk.as_ref(), e.start)
            .map_err(|w| format!("extended partition: {w}; logical partitions ignored"))
    });
    // mbrman's alignment guess unwraps an empty range when every used
    // entry starts at LBA 0; such an entry overlaps the MBR anyway.
    if let Some((i, _)) = raw
        .iter()
        .enumerate()
        .find(|(_, e)| e.sys != 0 && e.start == 0)
    {
        chain = Some(Err(format!(
            "partition {} starts at LBA 0, on top of the MBR; only the primary entries are listed",
            i + 1
        )));
    }
    if let Some(Err(why)) = &chain {
        // mbrman would overflow, loop or fail: keep the primaries only.
        t.problems.push(why.clone());
        for (i, e) in raw.iter().enumerate() {
            if e.sys != 0 && e.sectors != 0 {
                push(&mut t, u32::try_from(i + 1).unwrap_or(0), *e);
            }
        }
        return t;
    }
    let mut io = DiskIo::new(disk.clone(), TABLE_READ_BUDGET);
    match mbrman::MBR::read_from(&mut io, 512) {
        Ok(m) => {
            for (i, e) in m.header.iter() {
                if e.is_used() {
                    let r = RawEntry {
                        boot: e.boot,
                        sys: e.sys,
                        start: e.starting_lba,
                        sectors: e.sectors,
                    };
                    push(&mut t, u32::try_from(i).unwrap_or(0), r);
                }
            }
            for (i, l) in m.logical_partitions.iter().enumerate() {
                let e = &l.partition;
                if e.sys == 0 || e.sectors == 0 {
                    continue;
                }
                let r = RawEntry {
                    boot: e.boot,
                    sys: e.sys,
                    start: e.starting_lba,
                    sectors: e.sectors,
                };
                push(&mut t, u32::try_from(i + 5).unwrap_or(0), r);
            }
        }
        Err(e) => {
            t.problems
                .push(format!("MBR: {e}; using the raw primary entries"));
            for (i, e) in raw.iter().enumerate() {
                if e.sys != 0 && e.sectors != 0 {
                    push(&mut t, u32::try_from(i + 1).unwrap_or(0), *e);
                }
            }
        }
    }
    let len = disk.len();
    for p in &t.entries {
        if p.start.saturating_add(p.size) > len && p.role != PartitionRole::Extended {
            t.problems.push(format!(
                "partition {} ends at byte {} beyond the disk ({} bytes)",
                p.number,
                p.start.saturating_add(p.size),
                len
            ));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgcheck_source::MemSource;

    #[test]
    fn roles() {
        assert_eq!(
            gpt_role("21686148-6449-6e6f-744e-656564454649"),
            PartitionRole::BiosBoot
        );
        assert_eq!(
            gpt_role("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            PartitionRole::Esp
        );
        assert_eq!(
            gpt_role("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            PartitionRole::Linux
        );
        assert_eq!(
            gpt_role("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
            PartitionRole::Swap
        );
        assert_eq!(
            gpt_role("E6D6D379-F507-44C2-A23C-238F2A3DF928"),
            PartitionRole::Lvm
        );
        assert_eq!(gpt_role("nonsense"), PartitionRole::Other);
        assert_eq!(mbr_role(0x83), PartitionRole::Linux);
        assert_eq!(mbr_role(0xEF), PartitionRole::Esp);
        assert_eq!(mbr_role(0x82), PartitionRole::Swap);
        assert_eq!(mbr_role(0x8E), PartitionRole::Lvm);
        assert_eq!(mbr_role(0x05), PartitionRole::Extended);
        assert_eq!(mbr_role(0x0F), PartitionRole::Extended);
        assert_eq!(mbr_role(0x07), PartitionRole::Other);
    }

    fn mbr_disk(entries: &[(u8, u8, u32, u32)], size: usize) -> Vec<u8> {
        let mut d = vec![0u8; size];
        for (i, (boot, sys, start, n)) in entries.iter().enumerate() {
            let b = 446 + i * 16;
            d[b] = *boot;
            d[b + 4] = *sys;
            d[b + 8..b + 12].copy_from_slice(&start.to_le_bytes());
            d[b + 12..b + 16].copy_from_slice(&n.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xAA;
        d
    }

    #[test]
    fn mbr_primary_and_looping_ebr() {
        let mut d = mbr_disk(&[(0x80, 0x83, 2048, 100), (0, 0x05, 4096, 1000)], 4 << 20);
        // EBR at 4096 pointing to itself (loop) -> refused, primaries kept.
        let e = 4096 * 512;
        d[e + 446 + 4] = 0x83;
        d[e + 446 + 8..e + 446 + 12].copy_from_slice(&1u32.to_le_bytes());
        d[e + 446 + 12..e + 446 + 16].copy_from_slice(&10u32.to_le_bytes());
        d[e + 462 + 4] = 0x05;
        d[e + 462 + 8..e + 462 + 12].copy_from_slice(&0u32.to_le_bytes());
        d[e + 510] = 0x55;
        d[e + 511] = 0xAA;
        let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("t", d.clone()));
        let t = read_table(&src).table;
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(t.entries.len(), 3, "{t:?}");
        assert_eq!(t.entries[2].number, 5);
        assert_eq!(t.entries[2].start, (4096 + 1) * 512);
        assert!(t.entries[0].bootable);
        // Now a looping chain: next points back to 0.
        d[e + 462 + 8..e + 462 + 12].copy_from_slice(&0u32.to_le_bytes());
        d[e + 462 + 12..e + 462 + 16].copy_from_slice(&5u32.to_le_bytes());
        let mut d2 = d.clone();
        // next = 3 then EBR at 4099 says next = 2 (goes back)
        d2[e + 462 + 8..e + 462 + 12].copy_from_slice(&3u32.to_le_bytes());
        let e2 = (4096 + 3) * 512;
        d2[e2 + 462 + 8..e2 + 462 + 12].copy_from_slice(&2u32.to_le_bytes());
        d2[e2 + 510] = 0x55;
        d2[e2 + 511] = 0xAA;
        let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("t", d2));
        let t = read_table(&src).table;
        assert!(t.problems.iter().any(|p| p.contains("loops")), "{t:?}");
        assert_eq!(t.entries.len(), 2);
    }

    #[test]
    fn ebr_overflow_is_caught() {
        let mut d = mbr_disk(&[(0, 0x05, 2048, 1000)], 2 << 20);
        let e = 2048 * 512;
        d[e + 446 + 4] = 0x83;
        d[e + 446 + 8..e + 446 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        d[e + 510] = 0x55;
        d[e + 511] = 0xAA;
        let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("t", d));
        let t = read_table(&src).table;
        assert!(t.problems.iter().any(|p| p.contains("overflow")), "{t:?}");
    }

    #[test]
    fn protective_without_gpt_and_blank() {
        let d = mbr_disk(&[(0, 0xEE, 1, 1000)], 1 << 20);
        let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("t", d));
        let t = read_table(&src).table;
        assert_eq!(t.kind, TableKind::None);
        assert!(!t.problems.is_empty());
        let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("t", vec![0; 4096]));
        assert_eq!(read_table(&src).table.kind, TableKind::None);
    }

    #[test]
    fn diskio_refuses_writes_and_caps_reads() {
        let src: Arc<dyn ByteSource> = Arc::new(MemSource::new("t", vec![1; 100]));
        let mut io = DiskIo::new(src, 10);
        assert!(io.write(b"x").is_err());
        let mut b = [0u8; 8];
        assert_eq!(io.read(&mut b).unwrap(), 8);
        assert!(io.read(&mut b).is_err());
        io.seek(SeekFrom::End(-2)).unwrap();
        assert!(io.seek(SeekFrom::Current(-1000)).is_err());
    }
}
