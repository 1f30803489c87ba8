//! VMDK: VMware virtual disks, sparse, stream-optimized, flat and split.
//!
//! A VMDK disk is a list of extents laid end to end. Where the list comes
//! from decides the shape of the image:
//!
//! * a file starting with `KDMV` is one hosted-sparse extent
//!   (monolithicSparse; streamOptimized when its grains are compressed),
//!   read by `sparse` with its embedded descriptor for the CIDs;
//! * a text descriptor (`descriptor`) lists extent files next to it
//!   (monolithicFlat, twoGbMaxExtentFlat, twoGbMaxExtentSparse, vmfs): FLAT
//!   and VMFS extents are raw data, SPARSE extents are KDMV files read by
//!   `sparse`, ZERO extents read as zeros.
//!
//! # Security
//! Extent names come from the untrusted descriptor. Every one is checked
//! by the dependency gate before *any* extent is opened, and opened only
//! through [`crate::deps::open_dependency`]: an absolute path, `..` or a
//! path separator is an [`DiskError::ExternalReference`] and nothing outside
//! the image's directory is read (CVE-2024-32498 was this hole in
//! OpenStack). Parent disks of deltas (`parentFileNameHint`) are reported as
//! the backing file, never opened. Opened extents become host files 1.. of
//! the image.

mod descriptor;
mod header;
mod sparse;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use imgcheck_source::{ByteSource, read_vec};
use serde_json::{Value, json};

use crate::context::OpenContext;
use crate::deps::{DependencyPolicy, open_dependency, unsafe_name_reason};
use crate::disk::{DiskImage, DiskInfo, ExternalRef, MapKind, Mapping};
use crate::error::{DiskError, corrupt, limit, unsupported};
use crate::format::Format;

use descriptor::{Descriptor, ExtentType, Extents, Permission};
use header::SECTOR;
use sparse::{Opened, Shared, SparseExtent};

/// createTypes whose descriptor we read (the set qemu's descriptor opener
/// accepts, minus the ESX delta formats).
const DESCRIPTOR_TYPES: [&str; 4] = [
    "monolithicFlat",
    "twoGbMaxExtentFlat",
    "twoGbMaxExtentSparse",
    "vmfs",
];

/// Where one VMDK extent's bytes are stored (not a `MapKind`: one
/// extent holds many runs).
#[derive(Debug)]
enum Storage {
    /// Raw bytes in host file `file` from `offset`; the first `data` bytes
    /// exist, the rest (a partial last sector) reads as zeros.
    Flat { file: usize, offset: u64, data: u64 },
    /// Reads as zeros.
    Zero,
    /// A KDMV extent.
    Sparse(Box<SparseExtent>),
}

/// One extent placed in the disk.
#[derive(Debug)]
struct Placed {
    /// First guest byte.
    start: u64,
    /// Length in bytes (> 0).
    len: u64,
    kind: Storage,
}

/// An opened VMDK image.
#[derive(Debug)]
pub struct VmdkImage {
    info: DiskInfo,
    /// 0: the file opened (descriptor or KDMV file); 1..: extent files.
    files: Vec<Arc<dyn ByteSource>>,
    /// In guest order, contiguous from 0.
    extents: Vec<Placed>,
}

/// Opens `ctx.source` as VMDK.
pub fn open(ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>, DiskError> {
    let src = &ctx.source;
    let mut magic = [0u8; 4];
    let n = imgcheck_source::read_prefix(src.as_ref(), 0, &mut magic)?;
    if n == 4 && &magic == header::MAGIC {
        return match sparse::open(
            src.clone(),
            0,
            0,
            ctx.limits,
            true,
            &Shared::new(ctx.limits),
        )? {
            Opened::Sparse(ext, desc) => open_monolithic(ctx, *ext, desc),
            Opened::Descriptor(text, at) => open_descriptor(ctx, &text, at),
        };
    }
    if n == 4 && &magic == b"COWD" {
        return Err(unsupported(
            ctx.name(),
            "VMDK version 3 (COWD / vmfsSparse) extents",
            Some("convert it with `qemu-img convert -O qcow2` first"),
        ));
    }
    let len = src.len();
    if len > ctx.limits.max_descriptor_bytes {
        return Err(limit(
            ctx.name(),
            "VMDK descriptor file",
            0,
            "size (bytes)",
            len,
            ctx.limits.max_descriptor_bytes,
        ));
    }
    let text = read_vec(src.as_ref(), 0, len, ctx.limits.max_descriptor_bytes)?;
    open_descriptor(ctx, &text, 0)
}

/// A monolithicSparse / streamOptimized file: one extent, the file itself.
fn open_monolithic(
    ctx: &OpenContext<'_>,
    ext: SparseExtent,
    desc: Option<(Vec<u8>, u64)>,
) -> Result<Arc<dyn DiskImage>, DiskError> {
    let d = match &desc {
        Some((text, at)) => Some(descriptor::parse(
            ctx.name(),
            *at,
            text,
            ctx.limits.max_extents,
            Extents::Skip,
        )?),
        None => None,
    };
    // Like qemu, the header decides the type; the embedded createType is
    // not consulted.
    let create_type = if ext.compressed() {
        "streamOptimized"
    } else {
        "monolithicSparse"
    };
    let mut info = DiskInfo::new(Format::Vmdk, ext.capacity());
    info.subformat = Some(create_type.to_owned());
    info.cluster_size = Some(ext.grain());
    info.dirty = ext.unclean();
    let extents_json = vec![sparse_json(ctx.name(), "", &ext)];
    fill_common(&mut info, d.as_ref(), create_type, extents_json);
    Ok(Arc::new(VmdkImage {
        info,
        files: vec![ctx.source.clone()],
        extents: vec![Placed {
            start: 0,
            len: ext.capacity(),
            kind: Storage::Sparse(Box::new(ext)),
        }],
    }))
}

/// The qemu-img "extents" entry of a sparse extent.
fn sparse_json(filename: &str, format: &str, ext: &SparseExtent) -> Value {
    let mut v = json!({
        "filename": filename,
        "format": format,
        "virtual-size": ext.capacity(),
        "cluster-size": ext.grain(),
    });
    if ext.compressed() {
        v["compressed"] = json!(true);
    }
    v
}

/// CIDs, parent, create type and the extent list, named as qemu-img names
/// them in `format-specific.data`.
fn fill_common(
    info: &mut DiskInfo,
    d: Option<&Descriptor>,
    create_type: &str,
    extents: Vec<Value>,
) {
    let fs = &mut info.format_specific;
    if let Some(cid) = d.and_then(|d| d.cid) {
        fs.insert("cid".into(), json!(cid));
    }
    if let Some(p) = d.and_then(|d| d.parent_cid) {
        fs.insert("parent-cid".into(), json!(p));
    }
    fs.insert("create-type".into(), json!(create_type));
    fs.insert("extents".into(), Value::Array(extents));
    if let Some(d) = d.filter(|d| d.has_parent()) {
        info.backing_file = d.parent_hint.clone();
        info.external_refs.push(ExternalRef {
            kind: "backing file".into(),
            name: d.parent_hint.clone().unwrap_or_else(|| {
                format!(
                    "(parentCID {:08x}, no file name)",
                    d.parent_cid.unwrap_or(0)
                )
            }),
            opened: false,
        });
    }
}

/// Everything in a descriptor that can be refused, refused before any
/// file is opened: no or an unread createType, no extents, NOACCESS or
/// VMFS-special extents, names outside the image's folder. Returns the
/// createType.
fn refuse_before_opening(
    ctx: &OpenContext<'_>,
    at: u64,
    d: &descriptor::Descriptor,
) -> Result<String, DiskError> {
    let file = ctx.name();
    let create_type = d
        .create_type
        .clone()
        .ok_or_else(|| corrupt(file, "VMDK descriptor", at, "no createType= line"))?;
    if !DESCRIPTOR_TYPES.contains(&create_type.as_str()) {
        return Err(unsupported(
            file,
            format!("VMDK createType {create_type}"),
            Some(
                "imgcheck reads monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtent{Sparse,Flat} and vmfs; \
                 convert it with `qemu-img convert -O qcow2` (or re-export it from VMware) first",
            ),
        ));
    }
    if d.extents.is_empty() {
        return Err(corrupt(file, "VMDK descriptor", at, "no extent lines"));
    }
    // Everything that can be refused is refused before any file is opened.
    for e in &d.extents {
        let line = e.line;
        if e.access == Permission::NoAccess {
            return Err(unsupported(
                file,
                format!("a NOACCESS VMDK extent (descriptor line {line})"),
                Some(
                    "the extent's data is not accessible; read the disk where its owner made it accessible",
                ),
            ));
        }
        if matches!(
            e.kind,
            ExtentType::VmfsSparse
                | ExtentType::SeSparse
                | ExtentType::VmfsRdm
                | ExtentType::VmfsRaw
        ) {
            return Err(unsupported(
                file,
                format!("VMDK {} extents (descriptor line {line})", e.kind.as_str()),
                Some("convert it with `qemu-img convert -O qcow2` first"),
            ));
        }
        if let (Some(name), DependencyPolicy::SameDirectory) = (&e.name, ctx.dependencies)
            && let Some(why) = unsafe_name_reason(name)
        {
            return Err(DiskError::ExternalReference {
                file: file.to_owned(),
                kind: "VMDK extent".into(),
                name: name.clone(),
                why: why.to_owned(),
            });
        }
    }
    Ok(create_type)
}

/// Opens extent line `e` as a KDMV sparse extent (host file `idx`) placed
/// at guest byte `start`, and checks its capacity against the line.
fn open_sparse(
    ctx: &OpenContext<'_>,
    ext_src: &Arc<dyn ByteSource>,
    idx: usize,
    start: u64,
    e: &descriptor::ExtentLine,
    shared: &Arc<Shared>,
) -> Result<Box<SparseExtent>, DiskError> {
    let file = ctx.name();
    let ext = match sparse::open(
        ext_src.clone(),
        idx,
        start / SECTOR,
        ctx.limits,
        false,
        shared,
    )? {
        Opened::Sparse(ext, _) => ext,
        Opened::Descriptor(..) => {
            return Err(corrupt(
                ext_src.name(),
                "VMDK sparse header",
                0,
                "nested descriptor",
            ));
        }
    };
    if ext.capacity_sectors() != e.sectors {
        return Err(corrupt(
            ext_src.name(),
            "VMDK sparse header",
            0,
            format!(
                "capacity is {} sectors, but descriptor line {} of {file} says {}",
                ext.capacity_sectors(),
                e.line,
                e.sectors
            ),
        ));
    }
    Ok(ext)
}

/// Places extent line `e` (FLAT or VMFS: raw bytes of host file `idx` from
/// the line's offset), checking the file holds its `len` bytes.
fn flat(
    ctx: &OpenContext<'_>,
    ext_src: &Arc<dyn ByteSource>,
    idx: usize,
    len: u64,
    e: &descriptor::ExtentLine,
    at: u64,
) -> Result<(Storage, serde_json::Value), DiskError> {
    let file = ctx.name();
    // FLAT or VMFS: raw bytes from `offset`.
    let offset = e.offset.checked_mul(SECTOR).ok_or_else(|| {
        corrupt(
            file,
            "VMDK descriptor",
            at,
            format!("line {}: offset overflows", e.line),
        )
    })?;
    let have = ext_src.len().saturating_sub(offset);
    // A flat file may end inside the last sector (the size
    // is in whole sectors); a shorter one is truncated.
    if have.saturating_add(SECTOR) <= len {
        return Err(corrupt(
            ext_src.name(),
            "VMDK flat extent",
            offset,
            format!(
                "descriptor line {} needs {len} bytes from offset {offset}, the file has {have}",
                e.line
            ),
        ));
    }
    let json = json!({
        "filename": ext_src.name(),
        "format": e.kind.as_str(),
        "virtual-size": len,
    });
    Ok((
        Storage::Flat {
            file: idx,
            offset,
            data: have.min(len),
        },
        json,
    ))
}

/// A text descriptor (a file of its own, or the only content of a KDMV file
/// with capacity 0) listing extent files.
fn open_descriptor(
    ctx: &OpenContext<'_>,
    text: &[u8],
    at: u64,
) -> Result<Arc<dyn DiskImage>, DiskError> {
    let file = ctx.name();
    let d = descriptor::parse(file, at, text, ctx.limits.max_extents, Extents::Read)?;
    let create_type = refuse_before_opening(ctx, at, &d)?;
    let mut files = vec![ctx.source.clone()];
    let shared = Shared::new(ctx.limits);
    let mut flat_files: HashMap<&str, usize> = HashMap::new();
    let mut extents = Vec::with_capacity(d.extents.len());
    let mut extents_json = Vec::with_capacity(d.extents.len());
    let mut refs = Vec::new();
    let mut start = 0u64;
    for e in &d.extents {
        let len = e
            .sectors
            .checked_mul(SECTOR)
            .filter(|l| {
                start
                    .checked_add(*l)
                    .is_some_and(|end| end <= ctx.limits.max_virtual_size)
            })
            .ok_or_else(|| {
                limit(
                    file,
                    "VMDK descriptor",
                    at,
                    "disk size (sectors)",
                    (start / SECTOR).saturating_add(e.sectors),
                    ctx.limits.max_virtual_size / SECTOR,
                )
            })?;
        let kind = match (&e.name, e.kind) {
            (None, _) | (_, ExtentType::Zero) => {
                extents_json.push(json!({"format": e.kind.as_str(), "virtual-size": len}));
                Storage::Zero
            }
            (Some(name), kind) => {
                // Several flat extents may share one file (at different
                // offsets): open it once. Sparse extents each own a file.
                let reuse = (kind != ExtentType::Sparse)
                    .then(|| flat_files.get(name.as_str()).copied())
                    .flatten();
                let (idx, ext_src) = match reuse {
                    Some(i) => (i, files[i].clone()),
                    None => {
                        let src = open_dependency(
                            ctx.source.as_ref(),
                            "VMDK extent",
                            name,
                            ctx.dependencies,
                        )?;
                        refs.push(ExternalRef {
                            kind: "VMDK extent".into(),
                            name: name.clone(),
                            opened: true,
                        });
                        files.push(src.clone());
                        if kind != ExtentType::Sparse {
                            flat_files.insert(name.as_str(), files.len() - 1);
                        }
                        (files.len() - 1, src)
                    }
                };
                if kind == ExtentType::Sparse {
                    let ext = open_sparse(ctx, &ext_src, idx, start, e, &shared)?;
                    extents_json.push(sparse_json(ext_src.name(), kind.as_str(), &ext));
                    Storage::Sparse(ext)
                } else {
                    let (storage, json) = flat(ctx, &ext_src, idx, len, e, at)?;
                    extents_json.push(json);
                    storage
                }
            }
        };
        extents.push(Placed { start, len, kind });
        start += len;
    }
    let mut info = DiskInfo::new(Format::Vmdk, start);
    info.subformat = Some(create_type.clone());
    info.cluster_size = common_grain(&extents);
    info.dirty = extents
        .iter()
        .any(|e| matches!(&e.kind, Storage::Sparse(s) if s.unclean()));
    fill_common(&mut info, Some(&d), &create_type, extents_json);
    info.external_refs.splice(0..0, refs);
    Ok(Arc::new(VmdkImage {
        info,
        files,
        extents,
    }))
}

/// qemu reports a cluster size only when every extent is sparse with the
/// same grain and compression.
fn common_grain(extents: &[Placed]) -> Option<u64> {
    let mut it = extents.iter().filter(|e| !matches!(e.kind, Storage::Zero));
    let Some(Placed {
        kind: Storage::Sparse(first),
        ..
    }) = it.next()
    else {
        return None;
    };
    it.all(|e| {
        matches!(&e.kind, Storage::Sparse(s) if s.grain() == first.grain() && s.compressed() == first.compressed())
    })
    .then(|| first.grain())
}

impl VmdkImage {
    /// The extent holding guest byte `off`.
    fn find(&self, off: u64) -> Result<&Placed, DiskError> {
        let i = self.extents.partition_point(|e| e.start + e.len <= off);
        self.extents
            .get(i)
            .filter(|e| e.start <= off)
            .ok_or_else(|| {
                corrupt(
                    self.files[0].name(),
                    "VMDK extent list",
                    0,
                    format!("no extent holds guest offset {off}"),
                )
            })
    }
}

impl DiskImage for VmdkImage {
    fn info(&self) -> &DiskInfo {
        &self.info
    }

    fn map(&self, guest_offset: u64, max_len: u64) -> Result<Mapping, DiskError> {
        let e = self.find(guest_offset)?;
        let rel = guest_offset - e.start;
        let avail = max_len.min(e.len - rel);
        Ok(match &e.kind {
            Storage::Zero => Mapping {
                kind: MapKind::Zero,
                len: avail,
            },
            Storage::Flat { file, offset, data } if rel < *data => Mapping {
                kind: MapKind::Data {
                    file: *file,
                    host_offset: offset + rel,
                },
                len: avail.min(data - rel),
            },
            Storage::Flat { .. } => Mapping {
                kind: MapKind::Zero,
                len: avail,
            },
            Storage::Sparse(s) => s.map(rel, avail)?,
        })
    }

    fn host_file(&self, index: usize) -> Option<&dyn ByteSource> {
        self.files.get(index).map(|f| f.as_ref())
    }

    fn host_file_count(&self) -> usize {
        self.files.len()
    }

    fn read_encoded(&self, guest_offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let e = self.find(guest_offset)?;
        match &e.kind {
            Storage::Sparse(s) => s.read_encoded(guest_offset - e.start, buf),
            _ => Err(corrupt(
                self.files[0].name(),
                "VMDK extent list",
                guest_offset,
                "encoded read of an extent that is not compressed",
            )),
        }
    }
}
