//! Comparing package versions as distributions write them.
//!
//! cloud-init versions reach us as upstream versions (`0.7.7`, `22.4.2`,
//! Python's `0.7.7rc1`) or as package versions with an epoch and a
//! distribution revision (`1:23.1.1-0ubuntu1~22.04.1`, `0.7.5-10.el7`).
//! Only the upstream part matters for "at least 0.7.7", so the epoch and the
//! revision (from the last `-`) are dropped and the rest is compared with
//! Debian's ordering (deb-version(7): alternating non-digit and digit runs;
//! `~` sorts before anything, even the end; letters before other
//! characters). Python pre-release suffixes (PEP 440 `a`, `b`, `rc`,
//! `.dev`, ...) are first rewritten the way Debian packagers write them,
//! `0.7.7rc1` → `0.7.7~rc1`, so a pre-release sorts before its release.

use std::cmp::Ordering;

/// The upstream part of a package version: no epoch, no revision, PEP 440
/// pre-release suffixes written with `~`. `None` when it does not start with
/// a digit (then it is not a version we can judge).
pub fn upstream(v: &str) -> Option<String> {
    let v = v.trim();
    // A Debian epoch ("1:") is only a prefix of digits before a colon.
    let v = match v.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => {
            rest
        }
        _ => v,
    };
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    // The revision follows the last hyphen (Debian and RPM alike).
    let v = v.rsplit_once('-').map_or(v, |(u, _)| u);
    if !v.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(pep440_tilde(v))
}

/// `0.7.7rc1` → `0.7.7~rc1`, `24.1.dev3` → `24.1~dev3`: a letter run that
/// PEP 440 reads as a pre-release, right after a digit, gets a `~`.
fn pep440_tilde(v: &str) -> String {
    const PRE: &[&str] = &[
        "rc", "alpha", "beta", "a", "b", "c", "pre", "preview", "dev",
    ];
    let mut out = String::with_capacity(v.len() + 1);
    let chars: Vec<char> = v.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_digit = i > 0 && chars[i - 1].is_ascii_digit();
        let dot_then = c == '.' && i > 0 && chars[i - 1].is_ascii_digit();
        let start = if dot_then { i + 1 } else { i };
        if (after_digit && c.is_ascii_alphabetic()) || dot_then {
            let word: String = chars[start..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let next = chars.get(start + word.len());
            if PRE.contains(&word.to_ascii_lowercase().as_str())
                && next.is_none_or(char::is_ascii_digit)
            {
                out.push('~');
                out.push_str(&word);
                i = start + word.len();
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Debian's weight of a character in a non-digit run: `~` lowest (below
/// the end of the run, weight 0), then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Compares two version strings with Debian's algorithm (dpkg verrevcmp).
pub fn debian_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        // Non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let wb = weight(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // Digit run: skip leading zeros, then longer is larger, then lexical.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let da = a[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        let o = da.cmp(&db).then_with(|| a[i..i + da].cmp(&b[j..j + db]));
        if o != Ordering::Equal {
            return o;
        }
        i += da;
        j += db;
    }
    Ordering::Equal
}

/// `Some(true)` when the upstream part of `v` is at least `min` (an
/// upstream version such as "0.7.7"), `None` when `v` cannot be read.
pub fn at_least(v: &str, min: &str) -> Option<bool> {
    upstream(v).map(|u| debian_cmp(&u, min) != Ordering::Less)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "0.7.7";

    #[test]
    fn upstream_parts() {
        assert_eq!(upstream("0.7.7").as_deref(), Some("0.7.7"));
        assert_eq!(upstream("23.1.1-0ubuntu1").as_deref(), Some("23.1.1"));
        assert_eq!(upstream("0.7.5-10.el7").as_deref(), Some("0.7.5"));
        assert_eq!(
            upstream("1:23.1.1-0ubuntu1~22.04.1").as_deref(),
            Some("23.1.1")
        );
        assert_eq!(upstream("0.7.7rc1").as_deref(), Some("0.7.7~rc1"));
        assert_eq!(upstream("24.1.dev3").as_deref(), Some("24.1~dev3"));
        assert_eq!(upstream("23.4.4-r0").as_deref(), Some("23.4.4"));
        assert_eq!(upstream("unknown"), None);
        assert_eq!(upstream(""), None);
    }

    /// Orderings from deb-version(7) and dpkg's own test cases.
    #[test]
    fn debian_ordering() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~~a", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less),
            ("0.7.10", "0.7.9", Greater),
            ("1.002", "1.2", Equal),
            ("0.7.7~bzr1160", "0.7.7", Less),
            ("0.7.7", "0.7.7", Equal),
            ("0.8", "0.7.7", Greater),
        ] {
            assert_eq!(debian_cmp(a, b), o, "{a} vs {b}");
            assert_eq!(debian_cmp(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn minimum_0_7_7() {
        assert_eq!(at_least("0.7.7", MIN), Some(true));
        assert_eq!(at_least("0.7.6", MIN), Some(false));
        assert_eq!(at_least("0.7.5-10.el7", MIN), Some(false));
        assert_eq!(at_least("0.7.9-24.el7", MIN), Some(true));
        assert_eq!(at_least("0.7.10", MIN), Some(true), "numeric, not lexical");
        assert_eq!(at_least("22.4.2", MIN), Some(true));
        assert_eq!(at_least("23.1.1-0ubuntu1", MIN), Some(true));
        assert_eq!(at_least("0.8", MIN), Some(true));
        assert_eq!(at_least("0.7", MIN), Some(false), "0.7 < 0.7.7");
        assert_eq!(at_least("0.7.7~bzr1160-0ubuntu1", MIN), Some(false));
        assert_eq!(at_least("0.7.7rc1", MIN), Some(false));
        assert_eq!(at_least("0.7.7-1", MIN), Some(true));
        assert_eq!(at_least("garbage", MIN), None);
    }

    /// rpm's `[EPOCH:]VERSION-RELEASE`, as the rpmdb reader reports it
    /// (`rpm -q --qf '%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}'`).
    #[test]
    fn rpm_evr() {
        assert_eq!(at_least("23.4-7.el9", MIN), Some(true));
        assert_eq!(at_least("23.4-1.el9", MIN), Some(true));
        assert_eq!(at_least("24.1.4-1.fc40", MIN), Some(true));
        assert_eq!(at_least("1:23.4-7.el9_4.1", MIN), Some(true));
        assert_eq!(at_least("0.7.5-10.el7.centos.1", MIN), Some(false));
        assert_eq!(at_least("1:0.7.5-10.el7", MIN), Some(false));
        assert_eq!(upstream("1:23.4-7.el9").as_deref(), Some("23.4"));
    }
}
