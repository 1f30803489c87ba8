//! rpm's Berkeley DB `Packages` database (rpm up to 4.15: CentOS/RHEL 7
//! and 8), read-only: a Berkeley DB *hash* database whose keys are 4-byte
//! header numbers and whose values are rpm header blobs.
//!
//! What it reads (Berkeley DB 4.x/5.x on-disk format, hash version 8 and
//! 9): the meta page (magic 0x061561 in either byte order, page size,
//! last page, `max_bucket` and the `spares` table that maps a bucket to
//! its first page), each bucket's chain of hash pages (P_HASH, sorted or
//! not) with their key/data pairs, H_KEYDATA items (bytes on the page)
//! and H_OFFPAGE items (a chain of overflow pages). Not read: duplicates
//! (rpm's Packages has none), encrypted or checksummed databases (rpm does
//! not enable them), the transaction log and environment (`__db.*`).
//!
//! Hand-written for the reason [`super::sqlite`] is: the Berkeley DB
//! readers on crates.io bind the C library, which opens paths.
//!
//! Every page is visited at most once in a whole read (bucket chains and
//! overflow chains share one visited set), so a cycle or a page claimed
//! twice is corruption, and the work is bounded by the file's size.

use super::RpmdbError;

const HASH_MAGIC: u32 = 0x0006_1561;
/// Page types (Berkeley DB's db_page.h).
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
/// Item types on hash pages.
const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;
/// Size of the generic page header (PAGE: lsn, pgno, prev, next,
/// entries, hf_offset, level, type).
const PAGE_HEADER: usize = 26;
/// Number of `spares` entries in the hash meta page (NCACHED).
const SPARES: usize = 32;

/// A Berkeley DB hash database held in memory.
struct Bdb<'a> {
    file: &'a str,
    data: &'a [u8],
    psize: usize,
    pages: u32,
    /// Little-endian database (the byte order of the machine that wrote it).
    le: bool,
}

impl<'a> Bdb<'a> {
    fn corrupt(&self, page: u32, structure: &str, reason: String) -> RpmdbError {
        RpmdbError::Corrupt {
            file: self.file.to_owned(),
            structure: format!("Berkeley DB {structure} (page {page})"),
            offset: u64::from(page) * self.psize as u64,
            reason,
        }
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let s = b
            .get(at..at + 4)
            .map_or([0; 4], |s| [s[0], s[1], s[2], s[3]]);
        if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        }
    }

    fn u16_at(&self, b: &[u8], at: usize) -> usize {
        let s = b.get(at..at + 2).map_or([0; 2], |s| [s[0], s[1]]);
        usize::from(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }

    /// Page `n` (0-based: page 0 is the meta page).
    fn page(&self, n: u32, what: &str) -> Result<&'a [u8], RpmdbError> {
        if n >= self.pages {
            return Err(self.corrupt(
                n,
                what,
                format!("page {n} past the last page {}", self.pages - 1),
            ));
        }
        let start = n as usize * self.psize;
        Ok(&self.data[start..start + self.psize])
    }

    /// Checks the meta page; returns the database and the first page of
    /// every bucket.
    fn open(file: &'a str, data: &'a [u8]) -> Result<(Self, Vec<u32>), RpmdbError> {
        let bad = |offset, reason: String| RpmdbError::Corrupt {
            file: file.to_owned(),
            structure: "Berkeley DB hash meta page".into(),
            offset,
            reason,
        };
        let magic = data.get(12..16).map(|m| [m[0], m[1], m[2], m[3]]);
        let le = match magic {
            Some(m) if u32::from_le_bytes(m) == HASH_MAGIC => true,
            Some(m) if u32::from_be_bytes(m) == HASH_MAGIC => false,
            _ => return Err(bad(12, "no Berkeley DB hash magic".into())),
        };
        let mut db = Self {
            file,
            data,
            psize: 0,
            pages: 0,
            le,
        };
        let version = db.u32_at(data, 16);
        let psize = db.u32_at(data, 20) as usize;
        if !(512..=65536).contains(&psize) || !psize.is_power_of_two() || data.len() < psize {
            return Err(bad(
                20,
                format!("page size {psize} (file of {} bytes)", data.len()),
            ));
        }
        let unsupported = |what: String| RpmdbError::Unsupported {
            file: file.to_owned(),
            what,
        };
        if !(8..=9).contains(&version) {
            return Err(unsupported(format!("Berkeley DB hash version {version}")));
        }
        // encrypt_alg (24) and metaflags' checksum bit (26): rpm sets neither.
        if data[24] != 0 || data[26] & 1 != 0 {
            return Err(unsupported(
                "an encrypted or checksummed Berkeley DB".into(),
            ));
        }
        if data[25] != P_HASHMETA {
            return Err(bad(25, format!("meta page type {}", data[25])));
        }
        db.psize = psize;
        db.pages = u32::try_from(data.len() / psize).unwrap_or(u32::MAX);
        let max_bucket = db.u32_at(data, 72);
        if max_bucket >= db.pages {
            return Err(bad(
                72,
                format!("max_bucket {max_bucket} with {} pages", db.pages),
            ));
        }
        let mut firsts = Vec::new();
        for b in 0..=max_bucket {
            // BS_TO_PAGE: bucket + spares[ceil(log2(bucket + 1))].
            let log = (u64::from(b) + 1).next_power_of_two().trailing_zeros() as usize;
            if log >= SPARES {
                return Err(bad(96, format!("bucket {b} beyond the spares table")));
            }
            let page = b.checked_add(db.u32_at(data, 96 + 4 * log));
            firsts.push(page.ok_or_else(|| bad(96, format!("bucket {b}: page overflows")))?);
        }
        Ok((db, firsts))
    }

    /// The item byte ranges of a hash page: entry `i` runs from its offset
    /// to the previous entry's (entry 0 to the end of the page).
    fn items(&self, page: &[u8], n: u32) -> Result<Vec<(usize, usize)>, RpmdbError> {
        let entries = self.u16_at(page, 20);
        if PAGE_HEADER + 2 * entries > self.psize || !entries.is_multiple_of(2) {
            return Err(self.corrupt(n, "hash page", format!("{entries} entries")));
        }
        let mut end = self.psize;
        let mut out = Vec::with_capacity(entries);
        for i in 0..entries {
            let at = self.u16_at(page, PAGE_HEADER + 2 * i);
            if at < PAGE_HEADER + 2 * entries || at >= end {
                return Err(self.corrupt(n, "hash page", format!("item {i} at offset {at}")));
            }
            out.push((at, end));
            end = at;
        }
        Ok(out)
    }

    /// The bytes of one item: on the page, or its overflow chain.
    fn item(
        &self,
        page: &'a [u8],
        n: u32,
        (at, end): (usize, usize),
        seen: &mut [bool],
    ) -> Result<Vec<u8>, RpmdbError> {
        match page[at] {
            H_KEYDATA => Ok(page[at + 1..end].to_vec()),
            H_OFFPAGE => {
                if end - at < 12 {
                    return Err(self.corrupt(
                        n,
                        "hash page",
                        format!("off-page item at {at} is {} bytes", end - at),
                    ));
                }
                let (first, len) = (self.u32_at(page, at + 4), self.u32_at(page, at + 8));
                if len as usize > self.data.len() {
                    return Err(self.corrupt(
                        n,
                        "hash page",
                        format!("off-page item of {len} bytes"),
                    ));
                }
                self.overflow(first, len as usize, seen)
            }
            t => Err(RpmdbError::Unsupported {
                file: self.file.to_owned(),
                what: format!("hash item type {t} (page {n}, offset {at})"),
            }),
        }
    }

    /// The `len` bytes of the overflow chain starting at `first`.
    fn overflow(&self, first: u32, len: usize, seen: &mut [bool]) -> Result<Vec<u8>, RpmdbError> {
        let mut out = Vec::with_capacity(len);
        let mut n = first;
        while out.len() < len {
            let page = self.page(n, "overflow page")?;
            self.visit(n, seen, "overflow page")?;
            if page[25] != P_OVERFLOW {
                return Err(self.corrupt(n, "overflow page", format!("page type {}", page[25])));
            }
            let here = self.u16_at(page, 22).min(len - out.len());
            let bytes = page.get(PAGE_HEADER..PAGE_HEADER + here).ok_or_else(|| {
                self.corrupt(n, "overflow page", format!("{here} bytes do not fit"))
            })?;
            if here == 0 {
                return Err(self.corrupt(n, "overflow page", "no data".into()));
            }
            out.extend_from_slice(bytes);
            n = self.u32_at(page, 16);
        }
        Ok(out)
    }

    fn visit(&self, n: u32, seen: &mut [bool], what: &str) -> Result<(), RpmdbError> {
        match seen.get_mut(n as usize) {
            Some(s) if !*s => {
                *s = true;
                Ok(())
            }
            _ => Err(self.corrupt(n, what, "page reached twice (a cycle)".into())),
        }
    }
}

/// What [`walk`] calls for each pair: `(key, data, little_endian)`, the
/// last telling the byte order of the machine that wrote the database
/// (rpm's keys are header numbers in that order).
pub type PairFn<'f> = dyn FnMut(&[u8], &[u8], bool) -> Result<(), RpmdbError> + 'f;

/// Calls `f(key, data)` for every key/data pair of the hash database
/// `data` (the bytes of `file`), bucket by bucket.
pub fn walk(file: &str, data: &[u8], f: &mut PairFn<'_>) -> Result<(), RpmdbError> {
    let (db, firsts) = Bdb::open(file, data)?;
    let mut seen = vec![false; db.pages as usize];
    for first in firsts {
        let mut n = first;
        // A bucket chain ends at page 0 (the meta page is never in one).
        while n != 0 {
            let page = db.page(n, "hash page")?;
            db.visit(n, &mut seen, "hash page")?;
            if !matches!(page[25], P_HASH | P_HASH_UNSORTED) {
                return Err(db.corrupt(n, "hash page", format!("page type {}", page[25])));
            }
            let items = db.items(page, n)?;
            for pair in items.chunks_exact(2) {
                let key = db.item(page, n, pair[0], &mut seen)?;
                let value = db.item(page, n, pair[1], &mut seen)?;
                f(&key, &value, db.le)?;
            }
            n = db.u32_at(page, 16);
        }
    }
    Ok(())
}

/// True when `data` starts like a Berkeley DB hash database.
pub fn is_bdb_hash(data: &[u8]) -> bool {
    data.get(12..16)
        .map(|m| [m[0], m[1], m[2], m[3]])
        .is_some_and(|m| u32::from_le_bytes(m) == HASH_MAGIC || u32::from_be_bytes(m) == HASH_MAGIC)
}
