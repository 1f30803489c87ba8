//! Filesystem identification by magic numbers, plus label and UUID where
//! they sit at fixed places.
//!
//! Only fixed-offset reads of a few hundred bytes each; nothing here follows
//! a pointer from the image. ext2/3/4 are told apart in [`crate::ext`].

use imgcheck_source::ByteSource;

use crate::ext;
use crate::report::{Filesystem, FsKind};

/// Reads `N` bytes at `off`, or `None` when the source is too short or fails.
fn at<const N: usize>(src: &dyn ByteSource, off: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    src.read_exact_at(off, &mut b).ok().map(|()| b)
}

/// Formats 16 bytes as a lower-case hyphenated UUID (the form blkid and
/// /etc/fstab use), or `None` when all zero.
pub(crate) fn uuid_string(b: &[u8; 16]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A NUL-padded label, trimmed; `None` when empty or not UTF-8.
pub(crate) fn label_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = std::str::from_utf8(b.get(..end)?).ok()?.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Identifies the filesystem at the start of `src`. Fills kind, label,
/// UUID and (for ext) features; the caller sets partition/offset/size.
pub fn probe(src: &dyn ByteSource) -> Filesystem {
    let mut fs = Filesystem {
        size: src.len(),
        ..Filesystem::default()
    };
    if let Some(sb) = ext::Superblock::read(src) {
        fs.kind = sb.kind();
        fs.label = sb.label.clone();
        fs.uuid = sb.uuid.clone();
        fs.features = sb.feature_names();
        return fs;
    }
    let head: [u8; 512] = match at(src, 0) {
        Some(h) => h,
        None => return fs,
    };
    if &head[0..4] == b"XFSB" {
        fs.kind = FsKind::Xfs;
        fs.uuid = head[32..48].try_into().ok().and_then(|u| uuid_string(&u));
        fs.label = label_string(&head[108..120]);
        return fs;
    }
    if &head[0..6] == b"LUKS\xba\xbe" {
        fs.kind = FsKind::Luks;
        fs.uuid = label_string(&head[168..208]);
        return fs;
    }
    if &head[0..4] == b"hsqs" || &head[0..4] == b"sqsh" {
        fs.kind = FsKind::Squashfs;
        return fs;
    }
    if &head[3..11] == b"NTFS    " {
        fs.kind = FsKind::Ntfs;
        return fs;
    }
    if head[510] == 0x55 && head[511] == 0xAA && (head[0] == 0xEB || head[0] == 0xE9) {
        if &head[0x52..0x57] == b"FAT32" {
            fs.kind = FsKind::Vfat;
            fs.label = label_string(&head[0x47..0x52]).filter(|l| l != "NO NAME");
            fs.uuid = Some(format!(
                "{:02X}{:02X}-{:02X}{:02X}",
                head[0x46], head[0x45], head[0x44], head[0x43]
            ));
            return fs;
        }
        if &head[0x36..0x39] == b"FAT" {
            fs.kind = FsKind::Vfat;
            fs.label = label_string(&head[0x2B..0x36]).filter(|l| l != "NO NAME");
            fs.uuid = Some(format!(
                "{:02X}{:02X}-{:02X}{:02X}",
                head[0x2A], head[0x29], head[0x28], head[0x27]
            ));
            return fs;
        }
    }
    // LVM2: "LABELONE" in one of the first four sectors, "LVM2 001" at +24.
    for s in 0..4u64 {
        if let Some(l) = at::<32>(src, s * 512)
            && &l[0..8] == b"LABELONE"
            && &l[24..32] == b"LVM2 001"
        {
            fs.kind = FsKind::LvmPv;
            return fs;
        }
    }
    // Swap: signature in the last 10 bytes of the first page (4 KiB, or
    // 64 KiB on some architectures).
    for page in [4096u64, 8192, 16384, 65536] {
        if let Some(sig) = at::<10>(src, page - 10)
            && (&sig == b"SWAPSPACE2" || &sig == b"SWAP-SPACE")
        {
            fs.kind = FsKind::Swap;
            if let Some(h) = at::<44>(src, 1024) {
                fs.uuid = h[12..28].try_into().ok().and_then(|u| uuid_string(&u));
                fs.label = label_string(&h[28..44]);
            }
            return fs;
        }
    }
    if let Some(cd) = at::<6>(src, 0x8000)
        && &cd[1..6] == b"CD001"
    {
        fs.kind = FsKind::Iso9660;
        return fs;
    }
    if let Some(b) = at::<8>(src, 0x10040)
        && &b == b"_BHRfS_M"
    {
        fs.kind = FsKind::Btrfs;
        fs.uuid = at::<16>(src, 0x10020).and_then(|u| uuid_string(&u));
        fs.label = at::<256>(src, 0x1012B).and_then(|l| label_string(&l));
        return fs;
    }
    // UFS1/UFS2: fs_magic at offset 1372 of the superblock, which lives at
    // 8 KiB (UFS1), 64 KiB (UFS2) or 256 KiB; either byte order.
    for sb in [8192u64, 65536, 262_144] {
        if let Some(m) = at::<4>(src, sb + 1372) {
            let le = u32::from_le_bytes(m);
            let be = u32::from_be_bytes(m);
            if [le, be]
                .iter()
                .any(|&v| v == 0x0001_1954 || v == 0x1954_0119)
            {
                fs.kind = FsKind::Ufs;
                return fs;
            }
        }
    }
    // ZFS: the first uberblock of label 0 (128 KiB into the vdev) starts
    // with the magic 0x00bab10c in the pool's byte order.
    if let Some(m) = at::<8>(src, 128 * 1024)
        && (u64::from_le_bytes(m) == 0x00ba_b10c || u64::from_be_bytes(m) == 0x00ba_b10c)
    {
        fs.kind = FsKind::Zfs;
        return fs;
    }
    fs
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgcheck_source::MemSource;

    fn probe_bytes(f: impl FnOnce(&mut Vec<u8>)) -> Filesystem {
        let mut d = vec![0u8; 300 * 1024];
        f(&mut d);
        probe(&MemSource::new("t", d))
    }

    #[test]
    fn magics() {
        assert_eq!(
            probe_bytes(|d| d[0..4].copy_from_slice(b"XFSB")).kind,
            FsKind::Xfs
        );
        assert_eq!(
            probe_bytes(|d| d[4086..4096].copy_from_slice(b"SWAPSPACE2")).kind,
            FsKind::Swap
        );
        assert_eq!(
            probe_bytes(|d| {
                d[512..520].copy_from_slice(b"LABELONE");
                d[536..544].copy_from_slice(b"LVM2 001");
            })
            .kind,
            FsKind::LvmPv
        );
        assert_eq!(
            probe_bytes(|d| d[0..6].copy_from_slice(b"LUKS\xba\xbe")).kind,
            FsKind::Luks
        );
        assert_eq!(
            probe_bytes(|d| d[0x8001..0x8006].copy_from_slice(b"CD001")).kind,
            FsKind::Iso9660
        );
        assert_eq!(
            probe_bytes(|d| d[0x10040..0x10048].copy_from_slice(b"_BHRfS_M")).kind,
            FsKind::Btrfs
        );
        assert_eq!(
            probe_bytes(|d| d[0..4].copy_from_slice(b"hsqs")).kind,
            FsKind::Squashfs
        );
        assert_eq!(
            probe_bytes(|d| d[3..11].copy_from_slice(b"NTFS    ")).kind,
            FsKind::Ntfs
        );
        assert_eq!(
            probe_bytes(
                |d| d[65536 + 1372..65536 + 1376].copy_from_slice(&0x1954_0119u32.to_le_bytes())
            )
            .kind,
            FsKind::Ufs
        );
        assert_eq!(
            probe_bytes(|d| d[131072..131080].copy_from_slice(&0x00ba_b10cu64.to_le_bytes())).kind,
            FsKind::Zfs
        );
        let fat = probe_bytes(|d| {
            d[0] = 0xEB;
            d[0x52..0x57].copy_from_slice(b"FAT32");
            d[0x43..0x47].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
            d[510] = 0x55;
            d[511] = 0xAA;
        });
        assert_eq!(fat.kind, FsKind::Vfat);
        assert_eq!(fat.uuid.as_deref(), Some("1234-5678"));
        assert_eq!(probe_bytes(|_| {}).kind, FsKind::Unknown);
        assert_eq!(
            probe(&MemSource::new("t", vec![1; 10])).kind,
            FsKind::Unknown
        );
    }
}
