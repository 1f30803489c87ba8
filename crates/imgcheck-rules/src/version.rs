//! Comparing package versions as distributions write them.
//!
//! cloud-init versions reach us as upstream versions (`0.7.7`, `22.4.2`) or
//! as package versions with an epoch and a distribution revision
//! (`1:23.1.1-0ubuntu1~22.04.1`, `0.7.5-10.el7`). Only the upstream numbers
//! matter for "at least 0.7.7", so the epoch and everything from the first
//! `-`, `+` or `~` are dropped and the rest compared as dotted numbers.

use std::cmp::Ordering;

/// The numeric components of the upstream part of `v`, or `None` when it
/// does not start with a number.
///
/// A component stops at its first non-digit (`4rc1` → 4); missing trailing
/// components count as zero in [`compare`].
pub fn upstream_numbers(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    // A Debian epoch ("1:") is only a prefix of digits before a colon.
    let v = match v.split_once(':') {
        Some((epoch, rest)) if epoch.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => v,
    };
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let upstream = v.split(['-', '+', '~']).next().unwrap_or("");
    let mut out = Vec::new();
    for part in upstream.split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        // A component without digits ends the numeric part ("23.1.x").
        let Ok(n) = digits.parse::<u64>() else { break };
        out.push(n);
        // "4rc1": the suffix ends the numeric part too.
        if digits.len() != part.len() {
            break;
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

/// Compares two parsed versions, missing components as zero.
pub fn compare(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            x.cmp(&y)
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// `Some(true)` when `v` is at least `min`, `None` when `v` cannot be read.
pub fn at_least(v: &str, min: &[u64]) -> Option<bool> {
    upstream_numbers(v).map(|n| compare(&n, min) != Ordering::Less)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &[u64] = &[0, 7, 7];

    #[test]
    fn forms_seen_in_images() {
        assert_eq!(upstream_numbers("0.7.7"), Some(vec![0, 7, 7]));
        assert_eq!(upstream_numbers("22.4.2"), Some(vec![22, 4, 2]));
        assert_eq!(upstream_numbers("23.1.1-0ubuntu1"), Some(vec![23, 1, 1]));
        assert_eq!(upstream_numbers("0.7.5-10.el7"), Some(vec![0, 7, 5]));
        assert_eq!(
            upstream_numbers("1:23.1.1-0ubuntu1~22.04.1"),
            Some(vec![23, 1, 1])
        );
        assert_eq!(upstream_numbers("24.1~3gb729a4c"), Some(vec![24, 1]));
        assert_eq!(upstream_numbers("25.1rc1"), Some(vec![25, 1]));
        assert_eq!(upstream_numbers("unknown"), None);
        assert_eq!(upstream_numbers(""), None);
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
        assert_eq!(at_least("0.7", MIN), Some(false), "0.7 = 0.7.0");
        assert_eq!(at_least("garbage", MIN), None);
    }
}
