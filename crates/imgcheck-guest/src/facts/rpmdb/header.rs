//! The rpm header blob, as rpm stores one per installed package in its
//! database: big-endian `il` (index entries) and `dl` (data bytes), `il`
//! entries of 16 bytes (tag, type, offset into the data store, count),
//! then the data store. In a database the blob has no 8-byte magic (the
//! `.rpm` file form has it). Only NAME, VERSION, RELEASE and EPOCH are
//! read: what a package's version is.
//!
//! Hand-written: the format is a few dozen lines to read, and the crates
//! that parse rpm headers read `.rpm` files (lead, signature, payload)
//! rather than a bare header blob from a database.

use super::RpmdbError;

/// Most index entries a header may have: rpm itself refuses more than
/// 0xffff (`hdrchkTags` in rpm's header.c).
pub const MAX_INDEX_ENTRIES: u32 = 0xffff;
/// Largest data store: rpm's own cap is 256 MiB (`HEADER_DATA_MAX`); real
/// headers are well under 2 MiB, and the blob length bounds it anyway.
pub const MAX_DATA: u32 = 0x0fff_ffff;
/// Longest NAME / VERSION / RELEASE string read (rpm names are short).
const MAX_STRING: usize = 4096;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
/// rpmTagType values (rpm's rpmtag.h).
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;

/// One installed package, as its header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// NAME.
    pub name: String,
    /// EPOCH, when the header has one.
    pub epoch: Option<u32>,
    /// VERSION.
    pub version: String,
    /// RELEASE.
    pub release: String,
}

impl Package {
    /// `[EPOCH:]VERSION-RELEASE`, as `rpm -q --qf
    /// '%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}'` prints it.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Where a header lives, for error messages.
pub struct Ctx<'a> {
    /// The database file in the guest.
    pub file: &'a str,
    /// The database row (hnum) holding the header.
    pub row: i64,
}

impl Ctx<'_> {
    fn corrupt(&self, offset: usize, reason: impl Into<String>) -> RpmdbError {
        RpmdbError::Corrupt {
            file: self.file.to_owned(),
            structure: format!("rpm header of package row {}", self.row),
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}

/// The NAME of a header blob, without reading the rest (to skip the other
/// packages cheaply).
pub fn name(blob: &[u8], ctx: &Ctx<'_>) -> Result<String, RpmdbError> {
    let h = Header::parse(blob, ctx)?;
    h.string(TAG_NAME, ctx)?
        .ok_or_else(|| ctx.corrupt(0, "no NAME tag"))
}

/// NAME, VERSION, RELEASE and EPOCH of a header blob.
pub fn package(blob: &[u8], ctx: &Ctx<'_>) -> Result<Package, RpmdbError> {
    let h = Header::parse(blob, ctx)?;
    let get = |tag, what: &str| {
        h.string(tag, ctx)?
            .ok_or_else(|| ctx.corrupt(0, format!("no {what} tag")))
    };
    Ok(Package {
        name: get(TAG_NAME, "NAME")?,
        version: get(TAG_VERSION, "VERSION")?,
        release: get(TAG_RELEASE, "RELEASE")?,
        epoch: h.int32(TAG_EPOCH, ctx)?,
    })
}

/// A checked view of a header blob.
struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
    /// Offset of the data store in the blob (for messages).
    data_at: usize,
}

impl<'a> Header<'a> {
    fn parse(blob: &'a [u8], ctx: &Ctx<'_>) -> Result<Self, RpmdbError> {
        let (Some(il), Some(dl)) = (be32(blob, 0), be32(blob, 4)) else {
            return Err(ctx.corrupt(0, format!("{} bytes, shorter than il and dl", blob.len())));
        };
        if il == 0 || il > MAX_INDEX_ENTRIES {
            return Err(ctx.corrupt(0, format!("{il} index entries (1..={MAX_INDEX_ENTRIES})")));
        }
        if dl > MAX_DATA {
            return Err(ctx.corrupt(4, format!("data store of {dl} bytes (max {MAX_DATA})")));
        }
        // il and dl are capped above, so this cannot overflow usize.
        let data_at = 8 + 16 * il as usize;
        let end = data_at + dl as usize;
        if blob.len() < end {
            return Err(ctx.corrupt(
                0,
                format!(
                    "il {il} and dl {dl} need {end} bytes, the blob has {}",
                    blob.len()
                ),
            ));
        }
        Ok(Self {
            index: &blob[8..data_at],
            data: &blob[data_at..end],
            data_at,
        })
    }

    /// The first index entry with `tag`: (entry offset in the blob, type,
    /// data offset, count).
    fn entry(&self, tag: u32) -> Option<(usize, u32, u32, u32)> {
        self.index.chunks_exact(16).enumerate().find_map(|(i, e)| {
            (be32(e, 0)? == tag).then_some((8 + 16 * i, be32(e, 4)?, be32(e, 8)?, be32(e, 12)?))
        })
    }

    fn string(&self, tag: u32, ctx: &Ctx<'_>) -> Result<Option<String>, RpmdbError> {
        let Some((at, ty, off, _)) = self.entry(tag) else {
            return Ok(None);
        };
        if ty != TYPE_STRING {
            return Err(ctx.corrupt(at, format!("tag {tag} has type {ty}, not STRING")));
        }
        let Some(rest) = self.data.get(off as usize..) else {
            return Err(ctx.corrupt(at, format!("tag {tag} offset {off} past the data store")));
        };
        let rest = &rest[..rest.len().min(MAX_STRING + 1)];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(ctx.corrupt(
                self.data_at + off as usize,
                format!("tag {tag}: no NUL within {MAX_STRING} bytes"),
            ));
        };
        Ok(Some(String::from_utf8_lossy(&rest[..len]).into_owned()))
    }

    fn int32(&self, tag: u32, ctx: &Ctx<'_>) -> Result<Option<u32>, RpmdbError> {
        let Some((at, ty, off, count)) = self.entry(tag) else {
            return Ok(None);
        };
        if ty != TYPE_INT32 || count == 0 {
            return Err(ctx.corrupt(at, format!("tag {tag}: type {ty} count {count}, not INT32")));
        }
        be32(self.data, off as usize)
            .map(Some)
            .ok_or_else(|| ctx.corrupt(at, format!("tag {tag} offset {off} past the data store")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header blob with the given (tag, type, data) entries, laid out as
    /// rpm's headerExport does (data concatenated, strings NUL-ended).
    pub(crate) fn blob(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, d) in entries {
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&ty.to_be_bytes());
            index.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(d);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&index);
        out.extend_from_slice(&data);
        out
    }

    pub(crate) fn pkg_blob(name: &str, v: &str, r: &str, epoch: Option<u32>) -> Vec<u8> {
        let n = format!("{name}\0");
        let vv = format!("{v}\0");
        let rr = format!("{r}\0");
        let e = epoch.map(u32::to_be_bytes);
        let mut entries: Vec<(u32, u32, &[u8])> = vec![
            (TAG_NAME, TYPE_STRING, n.as_bytes()),
            (TAG_VERSION, TYPE_STRING, vv.as_bytes()),
            (TAG_RELEASE, TYPE_STRING, rr.as_bytes()),
        ];
        if let Some(e) = &e {
            entries.push((TAG_EPOCH, TYPE_INT32, e));
        }
        blob(&entries)
    }

    const CTX: Ctx<'static> = Ctx { file: "t", row: 1 };

    #[test]
    fn reads_name_version_release_epoch() {
        let b = pkg_blob("cloud-init", "23.4", "7.el9", None);
        let p = package(&b, &CTX).unwrap();
        assert_eq!(p.evr(), "23.4-7.el9");
        assert_eq!(name(&b, &CTX).unwrap(), "cloud-init");
        let b = pkg_blob("openssh-server", "8.7p1", "38.el9", Some(1));
        assert_eq!(package(&b, &CTX).unwrap().evr(), "1:8.7p1-38.el9");
    }

    #[test]
    fn refuses_bad_counts_and_offsets() {
        let b = pkg_blob("cloud-init", "23.4", "1", None);
        // il of zero, il over the cap, dl past the blob.
        for (at, v) in [(0usize, 0u32), (0, 0x1_0000), (4, 1000)] {
            let mut m = b.clone();
            m[at..at + 4].copy_from_slice(&v.to_be_bytes());
            assert!(package(&m, &CTX).is_err(), "{at} {v}");
        }
        // NAME's offset past the data store.
        let mut m = b.clone();
        m[16..20].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert!(matches!(package(&m, &CTX), Err(RpmdbError::Corrupt { .. })));
        // No NUL at the end of the data store.
        let mut m = b.clone();
        let last = m.len() - 1;
        m[last] = b'x';
        assert!(package(&m, &CTX).is_err());
        assert!(package(&[0, 0, 0], &CTX).is_err());
    }
}
