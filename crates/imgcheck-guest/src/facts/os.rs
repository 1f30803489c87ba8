//! The operating system: os-release (with distribution fallbacks) and the
//! CPU architecture from an ELF header.

use crate::report::OsFacts;
use crate::root::Guest;

/// Files whose presence makes a filesystem the root (checked with lstat, so
/// a /etc/os-release symlink into a separate /usr still counts).
pub const ROOT_MARKERS: &[&str] = &[
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/debian_version",
    "/etc/redhat-release",
    "/etc/alpine-release",
    "/bin/freebsd-version",
];

/// Binaries whose ELF header names the architecture, in order.
const ELF_PROBES: &[&str] = &["/sbin/init", "/bin/sh", "/usr/bin/sh", "/bin/busybox"];

/// Unquotes an os-release / shell value: `"a b"`, `'a b'`, or bare, with
/// backslash escapes inside double quotes.
pub fn unquote(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::new();
        let mut esc = false;
        for c in inner.chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else {
                out.push(c);
            }
        }
        out
    } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        inner.to_owned()
    } else {
        v.split(" #").next().unwrap_or("").trim().to_owned()
    }
}

/// `KEY=value` pairs of an os-release-style file (last assignment wins).
pub fn parse_kv(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for l in text.lines().take(10_000) {
        let l = l.trim();
        let l = l.strip_prefix("export ").unwrap_or(l);
        if let Some(v) = l.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            let v = unquote(v);
            found = (!v.is_empty()).then_some(v);
        }
    }
    found
}

/// The CPU architecture an ELF header names (`e_machine`, byte order from
/// `EI_DATA`), or `None` when `head` is not an ELF header.
pub fn elf_arch(head: &[u8]) -> Option<&'static str> {
    if head.len() < 20 || head.get(..4)? != b"\x7fELF" {
        return None;
    }
    let class64 = *head.get(4)? == 2;
    let le = *head.get(5)? == 1;
    let m = [*head.get(18)?, *head.get(19)?];
    let machine = if le {
        u16::from_le_bytes(m)
    } else {
        u16::from_be_bytes(m)
    };
    Some(match machine {
        3 => "i386",
        62 => "x86_64",
        183 => "aarch64",
        40 => "arm",
        243 if class64 => "riscv64",
        243 => "riscv32",
        8 if class64 => "mips64",
        8 => "mips",
        20 => "ppc",
        21 if le => "ppc64le",
        21 => "ppc64",
        22 => "s390x",
        258 => "loongarch64",
        _ => return None,
    })
}

/// First word → os-release-style ID for /etc/redhat-release lines.
fn redhat_id(line: &str) -> String {
    let l = line.to_ascii_lowercase();
    for (needle, id) in [
        ("red hat", "rhel"),
        ("centos", "centos"),
        ("fedora", "fedora"),
        ("rocky", "rocky"),
        ("almalinux", "almalinux"),
        ("oracle", "ol"),
        ("scientific", "scientific"),
    ] {
        if l.contains(needle) {
            return id.to_owned();
        }
    }
    l.split_whitespace().next().unwrap_or("rhel").to_owned()
}

/// The first token that starts with a digit ("7.9.2009" in "CentOS Linux
/// release 7.9.2009 (Core)").
fn first_version(line: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

/// Reads the OS facts.
pub fn gather(g: &Guest) -> OsFacts {
    let mut f = OsFacts::default();
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(t) = g.read_text(p) {
            f.id = parse_kv(&t, "ID");
            f.version_id = parse_kv(&t, "VERSION_ID");
            f.pretty_name = parse_kv(&t, "PRETTY_NAME");
            f.variant_id = parse_kv(&t, "VARIANT_ID");
            f.id_like = parse_kv(&t, "ID_LIKE");
            f.evidence.push(p.to_owned());
            break;
        }
    }
    if f.id.is_none() {
        if let Some(t) = g.read_text("/etc/debian_version") {
            f.id = Some("debian".into());
            f.version_id = t.lines().next().map(|l| l.trim().to_owned());
            f.evidence.push("/etc/debian_version".into());
        } else if let Some(t) = g.read_text("/etc/redhat-release") {
            let line = t.lines().next().unwrap_or("");
            f.id = Some(redhat_id(line));
            f.version_id = first_version(line);
            f.pretty_name = Some(line.trim().to_owned()).filter(|s| !s.is_empty());
            f.evidence.push("/etc/redhat-release".into());
        } else if let Some(t) = g.read_text("/etc/alpine-release") {
            f.id = Some("alpine".into());
            f.version_id = t.lines().next().map(|l| l.trim().to_owned());
            f.evidence.push("/etc/alpine-release".into());
        }
    }
    if let Some(t) = g.read_text("/bin/freebsd-version") {
        f.kind = "freebsd".into();
        if f.id.is_none() {
            f.id = Some("freebsd".into());
            f.version_id = parse_kv(&t, "USERLAND_VERSION");
        }
        f.evidence.push("/bin/freebsd-version".into());
    }
    if f.kind.is_empty() {
        f.kind = match f.id.as_deref() {
            Some("freebsd") => "freebsd",
            Some("openbsd") => "openbsd",
            Some("netbsd") => "netbsd",
            Some(_) => "linux",
            None => "unknown",
        }
        .into();
    }
    for p in ELF_PROBES {
        if let Ok(Some(head)) = g.read_head(p, 64)
            && let Some(a) = elf_arch(&head)
        {
            f.architecture = Some(a.to_owned());
            f.evidence.push(format!("ELF header of {p}"));
            break;
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values() {
        let t = "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='Debian 12'\nX=\"a\\\"b\"\n";
        assert_eq!(parse_kv(t, "ID").as_deref(), Some("debian"));
        assert_eq!(parse_kv(t, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(parse_kv(t, "PRETTY_NAME").as_deref(), Some("Debian 12"));
        assert_eq!(parse_kv(t, "X").as_deref(), Some("a\"b"));
        assert_eq!(parse_kv(t, "NOPE"), None);
        assert_eq!(redhat_id("CentOS Linux release 7.9.2009 (Core)"), "centos");
        assert_eq!(
            first_version("CentOS Linux release 7.9.2009 (Core)").as_deref(),
            Some("7.9.2009")
        );
    }

    #[test]
    fn elf_machines() {
        let mut h = *b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0";
        assert_eq!(elf_arch(&h), Some("x86_64"));
        h[18] = 183;
        assert_eq!(elf_arch(&h), Some("aarch64"));
        h[18] = 243;
        assert_eq!(elf_arch(&h), Some("riscv64"));
        h[4] = 1;
        h[18] = 3;
        assert_eq!(elf_arch(&h), Some("i386"));
        // Big-endian ppc64.
        let mut b = h;
        b[4] = 2;
        b[5] = 2;
        b[18] = 0;
        b[19] = 21;
        assert_eq!(elf_arch(&b), Some("ppc64"));
        h[18] = 0xFF;
        h[19] = 0xFF;
        assert_eq!(elf_arch(&h), None);
        assert_eq!(elf_arch(b"\x7fELF"), None);
        assert_eq!(elf_arch(b"#!/bin/sh\nexec foo bar baz"), None);
    }
}
