//! The VMDK text descriptor: a small `key=value` file plus extent lines.
//!
//! It is either a file of its own (monolithicFlat, twoGbMaxExtent*, vmfs)
//! or embedded in a sparse extent (monolithicSparse, streamOptimized). This
//! module only turns the text into [`Descriptor`]; it opens nothing. The
//! extent names it returns are untrusted: the caller sends every one of them
//! through [`crate::deps::open_dependency`].
//!
//! The grammar is VMware's (Virtual Disk Format 5.0) as qemu reads and writes
//! it, parsed strictly so that damage is reported rather than guessed around:
//!
//! * the text ends at the first NUL (qemu pads descriptors with NULs);
//! * blank lines, `#` comments and `/* ... */` notes are skipped;
//! * `key = value` lines; the keys we use (`version`, `CID`, `parentCID`,
//!   `createType`, `parentFileNameHint`) may appear once each, with a bare
//!   or `"quoted"` value (an unterminated quote is an error); the values of
//!   other keys (`ddb.*`, `encoding`, ...) are not judged;
//! * extent lines `ACCESS SIZE TYPE ["NAME" [OFFSET]]`, sizes and offsets in
//!   512-byte sectors, parsed strictly in descriptor files and skipped in
//!   descriptors embedded in a sparse extent (see [`Extents`]);
//! * anything else is an error naming the line.
//!
//! qemu itself uses `sscanf`/`strstr` and silently skips lines it cannot
//! read (including `RDONLY` extents, which shifts every later extent); we
//! refuse instead, because a skipped extent means wrong guest bytes.

use crate::error::{DiskError, corrupt, limit};

/// Longest extent file name accepted (qemu reads at most 511 bytes).
const MAX_NAME_LEN: usize = 1024;

/// Extent access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read-write.
    Rw,
    /// Read-only: readable like RW.
    RdOnly,
    /// Not accessible: the guest bytes cannot be read at all.
    NoAccess,
}

/// Extent type, as written on the extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    /// Raw data in a file, at an offset.
    Flat,
    /// A hosted sparse (KDMV) file.
    Sparse,
    /// Reads as zeros; no file.
    Zero,
    /// ESX raw data file (offset optional, 0 by default).
    Vmfs,
    /// ESX COWD delta.
    VmfsSparse,
    /// ESX raw device mapping.
    VmfsRdm,
    /// ESX raw device.
    VmfsRaw,
    /// ESX 6.5+ space-efficient sparse.
    SeSparse,
}

impl ExtentType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FLAT" => Self::Flat,
            "SPARSE" => Self::Sparse,
            "ZERO" => Self::Zero,
            "VMFS" => Self::Vmfs,
            "VMFSSPARSE" => Self::VmfsSparse,
            "VMFSRDM" => Self::VmfsRdm,
            "VMFSRAW" => Self::VmfsRaw,
            "SESPARSE" => Self::SeSparse,
            _ => return None,
        })
    }

    /// The name as written in descriptors (and reported by qemu-img as the
    /// extent "format").
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flat => "FLAT",
            Self::Sparse => "SPARSE",
            Self::Zero => "ZERO",
            Self::Vmfs => "VMFS",
            Self::VmfsSparse => "VMFSSPARSE",
            Self::VmfsRdm => "VMFSRDM",
            Self::VmfsRaw => "VMFSRAW",
            Self::SeSparse => "SESPARSE",
        }
    }
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// 1-based line number, for messages.
    pub line: usize,
    /// Access mode.
    pub access: Permission,
    /// Size in sectors (> 0).
    pub sectors: u64,
    /// Type.
    pub kind: ExtentType,
    /// File name as written (untrusted); `None` only for ZERO.
    pub name: Option<String>,
    /// Start of the extent in its file, in sectors (FLAT/VMFS only).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `version=` (1, 2 or 3).
    pub version: u32,
    /// `CID=` (content id), if present.
    pub cid: Option<u32>,
    /// `parentCID=`; `0xffffffff` means no parent.
    pub parent_cid: Option<u32>,
    /// `createType=`.
    pub create_type: Option<String>,
    /// `parentFileNameHint=`: the parent of a delta disk (never opened).
    pub parent_hint: Option<String>,
    /// Extent lines in order.
    pub extents: Vec<ExtentLine>,
}

impl Descriptor {
    /// True when the descriptor says this disk is a delta on a parent.
    pub fn has_parent(&self) -> bool {
        self.parent_hint.is_some() || self.parent_cid.is_some_and(|c| c != 0xffff_ffff)
    }
}

/// What the extent lines of a descriptor are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extents {
    /// A descriptor file: the extent lines are the disk; parse them
    /// strictly.
    Read,
    /// Embedded in a sparse extent: the header is the disk, the lines only
    /// describe it (qemu ignores them too). They are skipped, so odd lines
    /// from other writers (`RW 0 SPARSE`) do not refuse a good image.
    Skip,
}

/// Parses descriptor text `raw` read from `file` at byte `offset`.
///
/// `raw` must already be bounded by `Limits::max_descriptor_bytes` (the
/// caller checks before reading); `max_extents` caps the extent lines.
pub fn parse(
    file: &str,
    offset: u64,
    raw: &[u8],
    max_extents: usize,
    extents: Extents,
) -> Result<Descriptor, DiskError> {
    const S: &str = "VMDK descriptor";
    // qemu pads descriptors with NULs; the text ends at the first one.
    let text = raw.split(|&b| b == 0).next().unwrap_or_default();
    let mut d = Descriptor::default();
    let mut version = None;
    let mut in_c_comment = false;
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let bad = |why: String| corrupt(file, S, offset, format!("line {n}: {why}"));
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Latin-1 comments and ddb values exist in the wild: decode lossily
        // here, and insist on valid UTF-8 only where a name is used.
        let s = String::from_utf8_lossy(line);
        let t = s.trim_matches([' ', '\t']);
        if in_c_comment {
            in_c_comment = !t.contains("*/");
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // Some writers (open-vm-tools' stream converter among them) put
        // `/* ... */` notes between the ddb lines.
        if let Some(rest) = t.strip_prefix("/*") {
            in_c_comment = !rest.contains("*/");
            continue;
        }
        let first = t.split([' ', '\t']).next().unwrap_or_default();
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if extents == Extents::Skip {
                continue;
            }
            if d.extents.len() >= max_extents {
                return Err(limit(
                    file,
                    S,
                    offset,
                    "number of extents",
                    (d.extents.len() as u64).saturating_add(1),
                    max_extents as u64,
                ));
            }
            if std::str::from_utf8(line).is_err() {
                return Err(bad("extent line is not valid UTF-8".into()));
            }
            d.extents.push(parse_extent(t, n).map_err(bad)?);
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            return Err(bad(format!(
                "not a key=value or extent line: {:?}",
                clip(t)
            )));
        };
        let key = key.trim_matches([' ', '\t']);
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        {
            return Err(bad(format!("bad key {:?}", clip(key))));
        }
        // ddb.*, encoding, isNativeSnapshot, changeTrackPath, ...: not
        // needed to read the disk, so their values are not judged.
        if !matches!(
            key,
            "version" | "CID" | "parentCID" | "createType" | "parentFileNameHint"
        ) {
            continue;
        }
        let value = unquote(value.trim_matches([' ', '\t'])).map_err(bad)?;
        set_key(&mut d, &mut version, key, value).map_err(bad)?;
    }
    d.version = version.ok_or_else(|| corrupt(file, S, offset, "no version= line"))?;
    Ok(d)
}

/// Records the value of one of the keys the reader needs (version, CIDs,
/// createType, parent hint); a repeated key or a bad value is the reason
/// returned.
fn set_key(
    d: &mut Descriptor,
    version: &mut Option<u32>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let dup = || format!("{key} appears twice");
    match key {
        "version" => {
            if version.is_some() {
                return Err(dup());
            }
            *version = Some(match value {
                "1" => 1,
                "2" => 2,
                "3" => 3,
                v => return Err(format!("version {:?} is not 1, 2 or 3", clip(v))),
            });
        }
        "CID" | "parentCID" => {
            let slot = if key == "CID" {
                &mut d.cid
            } else {
                &mut d.parent_cid
            };
            if slot.is_some() {
                return Err(dup());
            }
            let v = u32::from_str_radix(value, 16)
                .map_err(|_| format!("{key} {:?} is not a 32-bit hex number", clip(value)))?;
            *slot = Some(v);
        }
        "createType" | "parentFileNameHint" => {
            let slot = if key == "createType" {
                &mut d.create_type
            } else {
                &mut d.parent_hint
            };
            if slot.is_some() {
                return Err(dup());
            }
            if value.len() > MAX_NAME_LEN {
                return Err(format!("{key} is {} bytes long", value.len()));
            }
            *slot = Some(value.to_owned());
        }
        _ => {}
    }
    Ok(())
}

/// `"abc"` → `abc`; a bare value is returned as is. An opening quote needs
/// its closing quote at the very end.
fn unquote(v: &str) -> Result<&str, String> {
    match v.strip_prefix('"') {
        None if v.contains('"') => Err(format!("stray quote in value {:?}", clip(v))),
        None => Ok(v),
        Some(rest) => match rest.strip_suffix('"') {
            Some(inner) if !inner.contains('"') => Ok(inner),
            _ => Err(format!("badly quoted value {:?}", clip(v))),
        },
    }
}

/// At most 80 characters of a line, for messages.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_extent(t: &str, line: usize) -> Result<ExtentLine, String> {
    // ACCESS SIZE TYPE, then an optional quoted name (which may contain
    // spaces), then an optional offset.
    let mut rest = t;
    let mut word = || {
        rest = rest.trim_start_matches([' ', '\t']);
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        let (w, r) = rest.split_at(end);
        rest = r;
        w
    };
    let access = match word() {
        "RW" => Permission::Rw,
        "RDONLY" => Permission::RdOnly,
        "NOACCESS" => Permission::NoAccess,
        a => return Err(format!("unknown extent access {:?}", clip(a))),
    };
    let size_s = word();
    let sectors: u64 = size_s
        .parse()
        .map_err(|_| format!("extent size {:?} is not a sector count", clip(size_s)))?;
    if sectors == 0 {
        return Err("extent size is 0".into());
    }
    let type_s = word();
    let kind = ExtentType::parse(type_s)
        .ok_or_else(|| format!("unknown extent type {:?}", clip(type_s)))?;
    rest = rest.trim_start_matches([' ', '\t']);
    let name = if let Some(q) = rest.strip_prefix('"') {
        let end = q
            .find('"')
            .ok_or_else(|| "extent file name has no closing quote".to_owned())?;
        let (name, r) = q.split_at(end);
        rest = r.get(1..).unwrap_or_default();
        if name.len() > MAX_NAME_LEN {
            return Err(format!("extent file name is {} bytes long", name.len()));
        }
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return Err("text right after the extent file name's closing quote".into());
        }
        Some(name.to_owned())
    } else if rest.is_empty() {
        None
    } else {
        return Err(format!("extent file name {:?} is not quoted", clip(rest)));
    };
    let off_s = rest.trim_matches([' ', '\t']);
    let offset = if off_s.is_empty() {
        None
    } else {
        Some(
            off_s
                .parse::<u64>()
                .map_err(|_| format!("extent offset {:?} is not a sector count", clip(off_s)))?,
        )
    };
    match (kind, &name, offset) {
        (ExtentType::Zero, None, None) => {}
        (ExtentType::Zero, _, _) => return Err("a ZERO extent has no file name or offset".into()),
        (_, None, _) => return Err(format!("{} extent without a file name", kind.as_str())),
        (ExtentType::Flat, _, None) => return Err("FLAT extent without an offset".into()),
        (ExtentType::Flat | ExtentType::Vmfs, _, _) => {}
        (_, _, Some(_)) => return Err(format!("{} extent with an offset", kind.as_str())),
        _ => {}
    }
    Ok(ExtentLine {
        line,
        access,
        sectors,
        kind,
        name,
        offset: offset.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_FLAT: &str = "# Disk DescriptorFile\nversion=1\nCID=dda1cf6e\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 98307 FLAT \"monolithicFlat-flat.vmdk\" 0\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"97\"\nddb.adapterType = \"ide\"\nddb.toolsVersion = \"2147483647\"\n";

    fn p(s: &str) -> Result<Descriptor, DiskError> {
        parse("d.vmdk", 0, s.as_bytes(), 16, Extents::Read)
    }

    fn err(s: &str) -> String {
        p(s).unwrap_err().to_string()
    }

    #[test]
    fn qemu_descriptor_parses() {
        let mut raw = QEMU_FLAT.as_bytes().to_vec();
        raw.resize(512, 0);
        let d = parse("d.vmdk", 0, &raw, 16, Extents::Read).unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.cid, Some(0xdda1_cf6e));
        assert_eq!(d.parent_cid, Some(0xffff_ffff));
        assert!(!d.has_parent());
        assert_eq!(d.create_type.as_deref(), Some("monolithicFlat"));
        assert_eq!(
            d.extents,
            vec![ExtentLine {
                line: 8,
                access: Permission::Rw,
                sectors: 98307,
                kind: ExtentType::Flat,
                name: Some("monolithicFlat-flat.vmdk".into()),
                offset: 0,
            }]
        );
    }

    #[test]
    fn vmware_style_lines() {
        let d = p("version=1\r\nencoding=\"UTF-8\"\r\nCID=fffffffe\r\nparentCID=12ab\r\nisNativeSnapshot=\"no\"\r\ncreateType=\"twoGbMaxExtentSparse\"\r\nparentFileNameHint=\"base disk.vmdk\"\r\nRW 8 SPARSE \"a b-s001.vmdk\"\r\n\tRDONLY 8  VMFS\t\"c.vmdk\"\r\nRW 16 ZERO\r\nddb.uuid.image=\"1f 2e\"\r\n").unwrap();
        assert!(d.has_parent());
        assert_eq!(d.parent_hint.as_deref(), Some("base disk.vmdk"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].name.as_deref(), Some("a b-s001.vmdk"));
        assert_eq!(d.extents[1].access, Permission::RdOnly);
        assert_eq!(d.extents[1].kind, ExtentType::Vmfs);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert_eq!(d.extents[2].name, None);
    }

    #[test]
    fn noaccess_parses_and_is_refused_by_the_opener() {
        let d = p("version=1\ncreateType=\"vmfs\"\nNOACCESS 8 VMFS \"x.vmdk\"\n").unwrap();
        assert_eq!(d.extents[0].access, Permission::NoAccess);
    }

    #[test]
    fn unsafe_names_are_parsed_verbatim_for_the_gate() {
        // The parser keeps them; deps::open_dependency refuses them (see
        // the tests in mod.rs that prove nothing is opened).
        for name in ["/etc/passwd", "../x", "a/b.vmdk", "..\\x"] {
            let d = p(&format!("version=1\nRW 8 FLAT \"{name}\" 0\n")).unwrap();
            assert_eq!(d.extents[0].name.as_deref(), Some(name));
        }
    }

    #[test]
    fn bad_quoting() {
        assert!(err("version=1\nRW 8 FLAT \"x.vmdk 0\n").contains("no closing quote"));
        assert!(err("version=1\nRW 8 FLAT x.vmdk 0\n").contains("not quoted"));
        assert!(err("version=1\nRW 8 FLAT \"x\"y\" 0\n").contains("after the extent file name"));
        assert!(err("version=1\ncreateType=\"monolithicFlat\n").contains("badly quoted"));
        assert!(err("version=1\ncreateType=mono\"lithic\n").contains("stray quote"));
        // Values of keys that are not used are not judged.
        assert!(p("version=1\nddb.comment = \"a \"b\" c\"\n").is_ok());
    }

    #[test]
    fn bad_extent_lines() {
        assert!(err("version=1\nRW -8 FLAT \"x\" 0\n").contains("not a sector count"));
        assert!(err("version=1\nRW 0 FLAT \"x\" 0\n").contains("size is 0"));
        assert!(err("version=1\nRW 8 FLAT \"x\"\n").contains("without an offset"));
        assert!(err("version=1\nRW 8 SPARSE \"x\" 5\n").contains("with an offset"));
        assert!(err("version=1\nRW 8 BOGUS \"x\"\n").contains("unknown extent type"));
        assert!(err("version=1\nRW 8 ZERO \"x\"\n").contains("ZERO extent"));
        assert!(err("version=1\nRW 8 SPARSE\n").contains("without a file name"));
        assert!(err("version=1\nRW 8 FLAT \"x\" 1e3\n").contains("offset"));
        let e = err("version=1\nRW 99999999999999999999999 FLAT \"x\" 0\n");
        assert!(e.contains("line 2") && e.contains("d.vmdk"), "{e}");
    }

    #[test]
    fn keys_and_versions() {
        assert!(err("createType=\"x\"\n").contains("no version"));
        assert!(err("version=4\n").contains("not 1, 2 or 3"));
        assert!(err("version=1\nversion=1\n").contains("twice"));
        assert!(err("version=1\nCID=xyz\n").contains("hex"));
        assert!(err("version=1\nCID=1ffffffff\n").contains("hex"));
        assert!(err("version=1\ncreateType=\"a\"\ncreateType=\"b\"\n").contains("twice"));
        assert!(err("version=1\nhello world\n").contains("not a key=value"));
        assert!(err("version=1\nbad key=1\n").contains("bad key"));
        assert!(err("version=1\n=1\n").contains("bad key"));
    }

    #[test]
    fn too_many_extents_is_a_limit() {
        let mut s = String::from("version=1\n");
        for i in 0..17 {
            s.push_str(&format!("RW 8 FLAT \"x{i}\" 0\n"));
        }
        let e = p(&s).unwrap_err();
        assert!(
            matches!(
                e,
                DiskError::Limit {
                    value: 17,
                    limit: 16,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn non_utf8_names_are_refused_but_comments_are_not() {
        let mut raw = b"version=1\n# caf\xe9\nddb.comment = \"caf\xe9\"\n".to_vec();
        assert!(parse("d", 0, &raw, 4, Extents::Read).is_ok());
        raw.extend_from_slice(b"RW 8 FLAT \"caf\xe9\" 0\n");
        assert!(
            parse("d", 0, &raw, 4, Extents::Read)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn text_ends_at_nul() {
        let d = parse("d", 0, b"version=1\n\0garbage line\n", 4, Extents::Read).unwrap();
        assert_eq!(d.version, 1);
    }

    #[test]
    fn c_comments_are_skipped() {
        // As written by open-vm-tools' stream-optimized converter.
        let d = p("version=1\nCID=1\ncreateType=\"streamOptimized\"\nRW 8 SPARSE \"x.vmdk\"\nddb.toolsVersion = \"2147483647\"\n/* OpenSource Tools version. */\nddb.virtualHWVersion = \"4\"\n/* a note\n   over two lines */\nddb.geometry.heads = \"255\"\n").unwrap();
        assert_eq!(d.extents.len(), 1);
        // An unclosed comment runs to the end: no extents (which the opener
        // of a descriptor file then refuses).
        let d = p("version=1\n/* never closed\nRW 8 SPARSE \"x\"\n").unwrap();
        assert!(d.extents.is_empty());
    }

    #[test]
    fn embedded_descriptors_skip_extent_lines() {
        let text =
            b"version=1\nCID=2\ncreateType=\"streamOptimized\"\nRDONLY 0 SPARSE \"x.vmdk\"\n";
        assert!(parse("d", 0, text, 4, Extents::Read).is_err());
        let d = parse("d", 0, text, 4, Extents::Skip).unwrap();
        assert_eq!((d.cid, d.extents.len()), (Some(2), 0));
    }
}
