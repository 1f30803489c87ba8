//! SQLite's write-ahead log (`rpmdb.sqlite-wal`), applied read-only: rpm
//! opens its database in WAL mode, and an image taken from a running
//! system (or one whose last rpm transaction was not checkpointed) has
//! committed changes only in the log. Reading the main file alone would
//! give a stale answer; the log's committed frames are laid over a copy
//! of the database instead (<https://www.sqlite.org/fileformat2.html>,
//! "The WAL File Format").
//!
//! A frame counts only if its salts match the log header's and its
//! cumulative checksum is right (what SQLite's recovery accepts), and only
//! frames up to the last commit frame are used: what SQLite would read.
//! Hand-written for the reason [`super::sqlite`] is.

use super::RpmdbError;
use crate::root::{Guest, Kind};

const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing
/// from `s`; `big` selects the byte order of the 32-bit words.
fn checksum(data: &[u8], big: bool, mut s: (u32, u32)) -> (u32, u32) {
    for c in data.chunks_exact(8) {
        let w = |i: usize| {
            let b = [c[i], c[i + 1], c[i + 2], c[i + 3]];
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s.0 = s.0.wrapping_add(w(0)).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(w(4)).wrapping_add(s.0);
    }
    s
}

/// Applies the committed frames of the log at `wal_path` (if any) to `db`.
/// On an error `db` holds the commits applied before it (a state SQLite
/// also passed through).
pub fn apply_from_guest(
    g: &Guest,
    wal_path: &str,
    db: &mut Vec<u8>,
    cap: u64,
) -> Result<(), RpmdbError> {
    match g.stat(wal_path) {
        Some(Kind::File(n)) if n > 0 => {}
        _ => return Ok(()),
    }
    match g.read_file(wal_path, cap) {
        Ok(Some(w)) => apply(wal_path, db, &w, cap),
        Ok(None) => Ok(()),
        Err(e) => Err(RpmdbError::Unsupported {
            file: wal_path.to_owned(),
            what: format!("a write-ahead log that cannot be read ({e})"),
        }),
    }
}

/// `db` with the committed frames of the log `wal` applied. A log that is
/// empty, has a bad header or another page size changes nothing (SQLite
/// ignores such a log too); the result stays under `cap` bytes.
pub fn apply(file: &str, db: &mut Vec<u8>, wal: &[u8], cap: u64) -> Result<(), RpmdbError> {
    if wal.len() < WAL_HEADER {
        return Ok(());
    }
    let magic = be32(wal, 0);
    if magic & !1 != 0x377f_0682 {
        return Ok(());
    }
    let big = magic & 1 == 1;
    let page_size = be32(wal, 8) as usize;
    let db_page_size = match db.get(16..18) {
        Some(&[0, 1]) => 65536,
        Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
        None => 0,
    };
    if page_size != db_page_size || page_size < 512 {
        return Ok(());
    }
    let salts = (be32(wal, 16), be32(wal, 20));
    let mut sum = checksum(&wal[..24], big, (0, 0));
    if sum != (be32(wal, 24), be32(wal, 28)) {
        return Ok(());
    }
    // Frames since the last commit, not yet applied.
    let mut pending: Vec<(u32, usize)> = Vec::new();
    let mut at = WAL_HEADER;
    let frame = FRAME_HEADER + page_size;
    while let Some(f) = wal.get(at..at + frame) {
        if (be32(f, 8), be32(f, 12)) != salts {
            break;
        }
        sum = checksum(&f[..8], big, sum);
        sum = checksum(&f[FRAME_HEADER..], big, sum);
        if sum != (be32(f, 16), be32(f, 20)) {
            break;
        }
        let pgno = be32(f, 0);
        if pgno == 0 {
            break;
        }
        pending.push((pgno, at + FRAME_HEADER));
        let commit_pages = be32(f, 4);
        if commit_pages > 0 {
            let new_len = u64::from(commit_pages) * page_size as u64;
            let new_len = usize::try_from(new_len).ok().filter(|_| new_len <= cap);
            let Some(new_len) = new_len else {
                return Err(RpmdbError::Limit {
                    file: file.to_owned(),
                    what: "database size after the write-ahead log",
                    value: u64::from(commit_pages) * page_size as u64,
                    limit: cap,
                });
            };
            db.resize(new_len, 0);
            for (p, data) in pending.drain(..) {
                let start = (p as usize - 1) * page_size;
                if let Some(dst) = db.get_mut(start..start + page_size) {
                    dst.copy_from_slice(&wal[data..data + page_size]);
                }
            }
        }
        at += frame;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log in SQLite's layout with one commit of `pages`, written by the
    /// format's rules (the fixture test checks a log SQLite wrote).
    fn wal(page_size: usize, pages: &[(u32, u8)], commit: u32, big: bool) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(&(0x377f_0682u32 | u32::from(big)).to_be_bytes());
        w.extend_from_slice(&3_007_000u32.to_be_bytes());
        w.extend_from_slice(&u32::try_from(page_size).unwrap().to_be_bytes());
        w.extend_from_slice(&0u32.to_be_bytes());
        w.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut s = checksum(&w, big, (0, 0));
        w.extend_from_slice(&s.0.to_be_bytes());
        w.extend_from_slice(&s.1.to_be_bytes());
        for (i, (p, fill)) in pages.iter().enumerate() {
            let mut f = Vec::new();
            f.extend_from_slice(&p.to_be_bytes());
            let c = if i + 1 == pages.len() { commit } else { 0 };
            f.extend_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
            let data = vec![*fill; page_size];
            s = checksum(&f[..8], big, s);
            s = checksum(&data, big, s);
            f.extend_from_slice(&s.0.to_be_bytes());
            f.extend_from_slice(&s.1.to_be_bytes());
            f.extend_from_slice(&data);
            w.extend_from_slice(&f);
        }
        w
    }

    fn db(pages: usize) -> Vec<u8> {
        let mut d = vec![0u8; 512 * pages];
        d[16..18].copy_from_slice(&512u16.to_be_bytes());
        d
    }

    #[test]
    fn committed_frames_are_applied() {
        for big in [false, true] {
            let w = wal(512, &[(2, 0xaa), (3, 0xbb)], 3, big);
            let mut out = db(2);
            apply("t", &mut out, &w, 1 << 20).unwrap();
            assert_eq!(out.len(), 3 * 512);
            assert!(out[512..1024].iter().all(|&b| b == 0xaa));
            assert!(out[1024..].iter().all(|&b| b == 0xbb));
        }
    }

    #[test]
    fn uncommitted_or_damaged_frames_are_not() {
        // No commit frame.
        let run = |w: &[u8]| {
            let mut d = db(2);
            apply("t", &mut d, w, 1 << 20).map(|()| d)
        };
        let w = wal(512, &[(2, 0xaa)], 0, true);
        assert_eq!(run(&w).unwrap(), db(2));
        // A flipped data byte breaks the checksum.
        let mut w = wal(512, &[(2, 0xaa)], 2, true);
        w[WAL_HEADER + FRAME_HEADER + 7] ^= 1;
        assert_eq!(run(&w).unwrap(), db(2));
        // A commit past the cap is a limit error.
        let w = wal(512, &[(2, 0xaa)], u32::MAX, true);
        assert!(run(&w).is_err());
    }
}
