//! LVM2 in userspace: physical volumes found on the disk are read
//! ([`label`]), their volume-group metadata parsed ([`text`]), and every
//! linear or striped logical volume is exposed as a [`ByteSource`]
//! ([`LvSource`]) so the root LV is probed and walked like a partition.
//!
//! Only what LVM writes as plain mappings is read: `striped` segments (one
//! stripe is the linear case). Thin pools, RAID, mirrors, snapshots, cache
//! and VDO volumes are reported as unsupported, never guessed. A VG whose
//! metadata names PVs that are not on this disk is reported, and its LVs
//! that need them are not read.
//!
//! Hand-written: no maintained crate reads LVM2 metadata from a byte source
//! (the Rust LVM crates drive the lvm2 tools or device-mapper).

pub mod label;
pub mod text;

use std::fmt;
use std::sync::Arc;

use imgcheck_source::{ByteSource, SourceError};

use crate::fs::FsError;
use text::{Section, Value};

/// Most LVs read from one VG.
const MAX_LVS: usize = 256;
/// Most segments in one LV.
const MAX_SEGMENTS: usize = 1024;
/// Most stripes in one segment.
const MAX_STRIPES: usize = 64;
/// LVM sector size: extent sizes, pe_start and stripe sizes are in these.
const SECTOR: u64 = 512;
const FS: &str = "lvm2";

/// One PV found on the disk: its UUID and bytes.
#[derive(Debug, Clone)]
pub struct FoundPv {
    /// UUID without dashes.
    pub uuid: String,
    /// The PV's bytes (a partition, or the whole disk).
    pub src: Arc<dyn ByteSource>,
    /// Where it is, for messages ("partition 2").
    pub place: String,
}

/// A logical volume that can be read.
#[derive(Debug, Clone)]
pub struct LogicalVolume {
    /// `vg/lv`.
    pub name: String,
    /// The device-mapper name (`vg-lv`, dashes doubled), as /dev/mapper
    /// shows it.
    pub mapper_name: String,
    /// Its bytes, or why they cannot be read.
    pub source: Result<Arc<dyn ByteSource>, String>,
}

/// What scanning the PVs of a disk found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every visible LV of every VG, readable or not.
    pub lvs: Vec<LogicalVolume>,
    /// Problems: unreadable labels, missing PVs, unsupported segment types.
    pub problems: Vec<String>,
}

/// Reads the label and metadata of each PV in `pvs` (the sources of
/// filesystems probed as `LVM2_member`), groups them by VG and builds the
/// LVs.
pub fn scan(pvs: &[(String, Arc<dyn ByteSource>)]) -> Scan {
    let mut out = Scan::default();
    let mut found: Vec<FoundPv> = Vec::new();
    // The newest metadata (highest seqno) of each VG, by VG id.
    let mut vgs: Vec<(String, i64, String, Section)> = Vec::new();
    for (place, src) in pvs {
        match read_pv(src.as_ref()) {
            Ok((uuid, meta)) => {
                found.push(FoundPv {
                    uuid,
                    src: src.clone(),
                    place: place.clone(),
                });
                let Some((name, vg)) = meta else { continue };
                let id = vg.str("id").unwrap_or_default().to_owned();
                let seq = vg.int("seqno").unwrap_or(0);
                match vgs.iter_mut().find(|v| v.0 == id) {
                    Some(v) if v.1 >= seq => {}
                    Some(v) => *v = (id, seq, name, vg),
                    None => vgs.push((id, seq, name, vg)),
                }
            }
            Err(e) => out
                .problems
                .push(format!("LVM physical volume on {place}: {e}")),
        }
    }
    for (_, _, name, vg) in &vgs {
        build_vg(name, vg, &found, &mut out);
    }
    out
}

/// The PV's UUID and, when its metadata area holds text, the VG section.
#[allow(clippy::type_complexity)]
fn read_pv(src: &dyn ByteSource) -> Result<(String, Option<(String, Section)>), FsError> {
    let l = label::read_label(src)?;
    let mut last_err = None;
    for &area in &l.metadata_areas {
        match label::read_metadata_text(src, area) {
            Ok(Some(t)) => {
                let root = text::parse(&t).map_err(|e| {
                    FsError::corrupt(
                        FS,
                        "metadata text",
                        area.0,
                        format!("byte {}: {}", e.at, e.what),
                    )
                })?;
                // The VG is the one top-level section.
                let vg = root.sections.into_iter().next();
                return Ok((l.uuid, vg));
            }
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok((l.uuid, None)),
    }
}

fn strip_dashes(s: &str) -> String {
    s.chars().filter(|c| *c != '-').collect()
}

/// One mapped piece of an LV: `len` bytes at LV offset `lv_start` come
/// from `pv` at `pv_start`, in stripes of `chunk` bytes over `pvs`.
#[derive(Debug, Clone)]
struct Segment {
    lv_start: u64,
    len: u64,
    /// Stripe chunk size in bytes (0 for a single stripe).
    chunk: u64,
    /// (PV, byte offset on it) of each stripe.
    stripes: Vec<(Arc<dyn ByteSource>, u64)>,
}

/// Metadata PV names ("pv0") to (PV bytes, byte offset of extent 0), or
/// `None` for a PV that is not on this disk.
type PvMap = Vec<(String, Option<(Arc<dyn ByteSource>, u64)>)>;

fn build_vg(name: &str, vg: &Section, found: &[FoundPv], out: &mut Scan) {
    let Some(extent) = vg
        .int("extent_size")
        .and_then(|e| u64::try_from(e).ok())
        .filter(|e| *e > 0)
        .and_then(|e| e.checked_mul(SECTOR))
    else {
        out.problems
            .push(format!("LVM VG {name}: no valid extent_size"));
        return;
    };
    // PV names of the metadata ("pv0") to their sources, when on this disk.
    let mut pvmap: PvMap = Vec::new();
    if let Some(pvs) = vg.section("physical_volumes") {
        for (pvname, pv) in &pvs.sections {
            let uuid = strip_dashes(pv.str("id").unwrap_or_default());
            let pe_start = pv.int("pe_start").and_then(|p| u64::try_from(p).ok());
            let src = found.iter().find(|f| f.uuid == uuid).map(|f| f.src.clone());
            let entry = match (src, pe_start.and_then(|p| p.checked_mul(SECTOR))) {
                (Some(s), Some(p)) => Some((s, p)),
                _ => None,
            };
            if entry.is_none() {
                out.problems.push(format!(
                    "LVM VG {name}: physical volume {pvname} ({}) is not on this disk",
                    pv.str("id").unwrap_or("no id")
                ));
            }
            pvmap.push((pvname.clone(), entry));
        }
    }
    let Some(lvs) = vg.section("logical_volumes") else {
        return;
    };
    for (lvname, lv) in lvs.sections.iter().take(MAX_LVS) {
        let visible = match lv.get("status") {
            Some(Value::Array(a)) => a.contains(&Value::Str("VISIBLE".into())),
            _ => false,
        };
        if !visible {
            continue;
        }
        let full = format!("{name}/{lvname}");
        let source = build_lv(lv, extent, &pvmap).map(|segs| {
            let len = segs.last().map_or(0, |s| s.lv_start + s.len);
            Arc::new(LvSource {
                name: full.clone(),
                segs,
                len,
            }) as Arc<dyn ByteSource>
        });
        if let Err(why) = &source {
            out.problems.push(format!("LVM LV {full}: {why}"));
        }
        out.lvs.push(LogicalVolume {
            mapper_name: format!("{}-{}", name.replace('-', "--"), lvname.replace('-', "--")),
            name: full,
            source,
        });
    }
    if lvs.sections.len() > MAX_LVS {
        out.problems.push(format!(
            "LVM VG {name}: more than {MAX_LVS} LVs; the rest are not read"
        ));
    }
}

/// The segments of one LV, in LV order, or why it cannot be read.
fn build_lv(lv: &Section, extent: u64, pvmap: &PvMap) -> Result<Vec<Segment>, String> {
    let mut segs = Vec::new();
    let mut next = 0u64;
    let mut sorted: Vec<&Section> = lv.sections.iter().map(|(_, s)| s).collect();
    if sorted.len() > MAX_SEGMENTS {
        return Err(format!("more than {MAX_SEGMENTS} segments"));
    }
    sorted.sort_by_key(|s| s.int("start_extent").unwrap_or(i64::MAX));
    for seg in sorted {
        let ty = seg.str("type").unwrap_or("?");
        if ty != "striped" {
            return Err(format!(
                "segment type {ty:?} is not read (only linear/striped)"
            ));
        }
        let num = |k: &str| {
            seg.int(k)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| format!("segment without a valid {k}"))
        };
        let (start, count) = (num("start_extent")?, num("extent_count")?);
        if start != next {
            return Err(format!("segments leave a gap or overlap at extent {next}"));
        }
        let overflow = || "extent arithmetic overflows".to_owned();
        let lv_start = start.checked_mul(extent).ok_or_else(overflow)?;
        let len = count.checked_mul(extent).ok_or_else(overflow)?;
        next = start.checked_add(count).ok_or_else(overflow)?;
        let Some(Value::Array(list)) = seg.get("stripes") else {
            return Err("segment without stripes".into());
        };
        let n = list.len() / 2;
        if n == 0 || n > MAX_STRIPES || list.len() % 2 != 0 || count % (n as u64) != 0 {
            return Err(format!(
                "segment with a bad stripe list ({} items)",
                list.len()
            ));
        }
        let chunk = if n > 1 {
            num("stripe_size")?
                .checked_mul(SECTOR)
                .filter(|c| *c > 0)
                .ok_or_else(overflow)?
        } else {
            0
        };
        let mut stripes = Vec::with_capacity(n);
        for pair in list.chunks(2) {
            let (Value::Str(pv), Value::Int(pe)) = (&pair[0], &pair[1]) else {
                return Err("stripe entry is not [\"pvN\", extent]".into());
            };
            let pe = u64::try_from(*pe).map_err(|_| "negative extent".to_owned())?;
            let Some((_, Some((src, pe_start)))) = pvmap.iter().find(|(n, _)| n == pv) else {
                return Err(format!(
                    "needs physical volume {pv}, which is not on this disk"
                ));
            };
            let at = pe
                .checked_mul(extent)
                .and_then(|b| b.checked_add(*pe_start))
                .ok_or_else(overflow)?;
            let per_stripe = len / n as u64;
            if at.checked_add(per_stripe).is_none_or(|end| end > src.len()) {
                return Err(format!("stripe on {pv} ends beyond the physical volume"));
            }
            stripes.push((src.clone(), at));
        }
        segs.push(Segment {
            lv_start,
            len,
            chunk,
            stripes,
        });
    }
    if segs.is_empty() {
        return Err("no segments".into());
    }
    Ok(segs)
}

/// The bytes of a logical volume, mapped through its segments.
pub struct LvSource {
    name: String,
    segs: Vec<Segment>,
    len: u64,
}

impl fmt::Debug for LvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LvSource")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish()
    }
}

impl LvSource {
    /// Where LV byte `off` lives: (PV, byte on it, bytes contiguous there).
    fn locate(&self, off: u64) -> Option<(&Arc<dyn ByteSource>, u64, u64)> {
        let i = self.segs.partition_point(|s| s.lv_start + s.len <= off);
        let s = self.segs.get(i)?;
        let rel = off.checked_sub(s.lv_start)?;
        if s.stripes.len() == 1 {
            let (src, at) = s.stripes.first()?;
            return Some((src, at.checked_add(rel)?, s.len - rel));
        }
        let n = s.stripes.len() as u64;
        let chunk_no = rel / s.chunk;
        let (src, at) = s.stripes.get(usize::try_from(chunk_no % n).ok()?)?;
        let row = chunk_no / n;
        let within = rel % s.chunk;
        let pv_off = at
            .checked_add(row.checked_mul(s.chunk)?)?
            .checked_add(within)?;
        Some((src, pv_off, s.chunk - within))
    }
}

impl ByteSource for LvSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(SourceError::out_of_range(
                &self.name,
                offset,
                buf.len() as u64,
                self.len,
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let Some((src, at, run)) = self.locate(off) else {
                return Err(SourceError::out_of_range(
                    &self.name,
                    off,
                    (buf.len() - done) as u64,
                    self.len,
                ));
            };
            let take = usize::try_from(run)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            src.read_exact_at(at, &mut buf[done..done + take])?;
            done += take;
        }
        Ok(())
    }

    fn bytes_fetched(&self) -> u64 {
        self.segs
            .first()
            .and_then(|s| s.stripes.first())
            .map_or(0, |(s, _)| s.bytes_fetched())
    }
}
