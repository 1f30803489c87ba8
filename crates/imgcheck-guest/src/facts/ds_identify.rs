//! What ds-identify reads from the image's configuration.
//!
//! On systemd images (and OpenRC ones from cloud-init 24.1) cloud-init's
//! generator runs `ds-identify` before cloud-init. In its default `search`
//! mode it writes the datasources it found, in the order of *its* list, to
//! /run/cloud-init/cloud.cfg, and that runtime file outranks /etc/cloud
//! (cloud-init's `fetch_base_config` merges it over `read_conf_with_confd`).
//! So on these images the list that governs at boot is ds-identify's, and
//! ds-identify does not parse YAML: it is a POSIX shell script that reads
//! the files line by line (tools/ds-identify `check_config`,
//! `parse_yaml_array`, `_read_config`). Hand-written here because no crate
//! emulates a shell script; the rules below are that script's, step by
//! step, and the differential test runs the real script from cloud-init's
//! Debian package against the same files.
//!
//! * Files: /etc/cloud/cloud.cfg, then /etc/cloud/cloud.cfg.d/*.cfg in glob
//!   order (byte order: the generator runs in the C locale). `conf_d` is
//!   not honoured.
//! * Lines as `read line` (no `-r`) gives them: a backslash escapes the next
//!   character, a backslash at the end joins the next line, leading and
//!   trailing blanks go, and a last line without a newline is never seen.
//! * A line matches when, after cutting it at the first `#`, it starts with
//!   `datasource_list: ` or is exactly `datasource_list:`; the value after
//!   the first colon (one space dropped) of the *last* matching line wins,
//!   whatever its indentation or YAML context.
//! * The value is read as a one-line array: one `[` and one `]` stripped,
//!   split at commas, each item trimmed and unquoted, then split into
//!   words. A block-style list (`datasource_list:` alone on its line)
//!   therefore gives an empty list, and ds-identify falls back to its
//!   default order.
//! * /etc/cloud/ds-identify.cfg: `datasource: NAME` searches only that
//!   datasource; `policy: MODE,...` with mode `search` (the default),
//!   `report` or `enabled` (ds-identify writes nothing that binds
//!   cloud-init) or `disabled` (cloud-init does not run). `ci.di.policy=` on
//!   the kernel command line overrides the file's policy.

use crate::root::{Guest, Kind};

/// Most drop-in files read (as datasource.rs).
const MAX_FILES: usize = 256;
/// Most items kept from one list.
const MAX_ITEMS: usize = 256;
/// Most lines read from one file.
const MAX_LINES: usize = 100_000;

/// ds-identify's mode (`policy:` in /etc/cloud/ds-identify.cfg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Search, and bind cloud-init to what was found (the default).
    #[default]
    Search,
    /// Search, but write the result where cloud-init does not read it.
    Report,
    /// Write nothing: cloud-init runs on its own configuration.
    Enabled,
    /// cloud-init does not run.
    Disabled,
}

/// What ds-identify takes from the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsIdentify {
    /// The mode.
    pub mode: Mode,
    /// The file or command line that set the mode.
    pub mode_source: Option<String>,
    /// `datasource:` of /etc/cloud/ds-identify.cfg.
    pub dsname: Option<String>,
    /// The `datasource_list` line it reads from the configuration, as it
    /// reads it, and the file it is in. An empty list means "none": the
    /// default order applies.
    pub config_list: Option<(Vec<String>, String)>,
}

/// The lines of a file as `while read line` yields them.
pub fn shell_lines(text: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < text.len() && out.len() < MAX_LINES {
        match text[i] {
            b'\\' if i + 1 < text.len() => {
                if text[i + 1] != b'\n' {
                    cur.push(text[i + 1]);
                }
                i += 2;
                continue;
            }
            b'\\' => {
                // A lone backslash before EOF: the line has no newline.
                i += 1;
                continue;
            }
            b'\n' => {
                out.push(trim_blanks(&String::from_utf8_lossy(&cur)).to_owned());
                cur.clear();
            }
            c => cur.push(c),
        }
        i += 1;
    }
    // A final line without a newline makes `read` fail: the loop body
    // never runs for it.
    out
}

/// `read` strips IFS white space (space, tab) from both ends.
fn trim_blanks(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// `parse_yaml_array`: `[a, 'b']` or `a, b` into words.
pub fn parse_yaml_array(value: &str) -> Vec<String> {
    let v = value.strip_prefix('[').unwrap_or(value);
    let v = v.strip_suffix(']').unwrap_or(v);
    let mut out = Vec::new();
    for tok in v.split(',') {
        // trim: `set -- $*` collapses white space runs.
        let t = tok.split_whitespace().collect::<Vec<_>>().join(" ");
        let t = unquote(&t);
        out.extend(t.split_whitespace().map(str::to_owned));
        if out.len() >= MAX_ITEMS {
            out.truncate(MAX_ITEMS);
            break;
        }
    }
    out
}

/// ds-identify's `unquote`: one pair of matching outer quotes.
fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// `check_config datasource_list` over (path, contents) in ds-identify's
/// order: the value of the last matching line, parsed, and its file.
pub fn config_list(files: &[(String, Vec<u8>)]) -> Option<(Vec<String>, String)> {
    const KEY: &str = "datasource_list:";
    let mut found = None;
    for (path, text) in files {
        for line in shell_lines(text) {
            let line = line.split('#').next().unwrap_or("");
            if line == KEY || line.starts_with("datasource_list: ") {
                let rest = &line[KEY.len()..];
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                found = Some((rest.to_owned(), path.clone()));
            }
        }
    }
    found.map(|(v, p)| (parse_yaml_array(&v), p))
}

/// The mode a `policy` string names (its first token without `=`).
pub fn policy_mode(policy: &str) -> Option<Mode> {
    policy
        .split(',')
        .map(str::trim)
        .filter(|t| !t.contains('='))
        .find_map(|t| match t {
            "search" => Some(Mode::Search),
            "report" => Some(Mode::Report),
            "enabled" => Some(Mode::Enabled),
            "disabled" => Some(Mode::Disabled),
            _ => None,
        })
}

/// `datasource` and `policy` of /etc/cloud/ds-identify.cfg (`_read_config`:
/// `key: value` lines, value trimmed and unquoted, the last one wins).
pub fn read_di_config(text: &[u8]) -> (Option<String>, Option<String>) {
    let (mut ds, mut policy) = (None, None);
    for line in shell_lines(text) {
        let line = line.split('#').next().unwrap_or("");
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.split_whitespace().collect::<Vec<_>>().join(" ");
        let val = unquote(&val).to_owned();
        match key {
            "datasource" => ds = Some(val),
            "policy" => policy = Some(val),
            _ => {}
        }
    }
    (ds.filter(|s| !s.is_empty()), policy)
}

/// Reads what ds-identify would read from the guest; `cmdlines` are the
/// kernel command lines (text, file) of the boot configuration, `read`
/// the configuration files cloud-init's reading already has (path,
/// contents), which are not read again.
pub fn gather(g: &Guest, cmdlines: &[(String, String)], read: &[(String, Vec<u8>)]) -> DsIdentify {
    let mut files = Vec::new();
    let read = |p: &str, files: &mut Vec<(String, Vec<u8>)>| {
        let known = read.iter().find(|(q, _)| q == p).map(|(_, d)| d.clone());
        if let Some(d) = known.or_else(|| g.read_file(p, crate::root::CONFIG_CAP).ok().flatten()) {
            files.push((p.to_owned(), d));
        }
    };
    read("/etc/cloud/cloud.cfg", &mut files);
    let mut names: Vec<String> = g
        .list_dir("/etc/cloud/cloud.cfg.d")
        .into_iter()
        // The shell glob `*.cfg` skips dot files.
        .filter(|n| n.ends_with(".cfg") && !n.starts_with('.'))
        .collect();
    names.sort();
    for n in names.into_iter().take(MAX_FILES) {
        let p = format!("/etc/cloud/cloud.cfg.d/{n}");
        // `[ -f ]` follows links and wants a regular file.
        if matches!(g.stat(&p), Some(Kind::File(_))) {
            read(&p, &mut files);
        }
    }
    let mut di = DsIdentify {
        config_list: config_list(&files),
        ..Default::default()
    };
    const CFG: &str = "/etc/cloud/ds-identify.cfg";
    if let Ok(Some(t)) = g.read_file(CFG, crate::root::CONFIG_CAP) {
        let (ds, policy) = read_di_config(&t);
        di.dsname = ds;
        if let Some(m) = policy.as_deref().and_then(policy_mode) {
            di.mode = m;
            di.mode_source = Some(CFG.to_owned());
        }
    }
    for (c, p) in cmdlines {
        for tok in c.split_whitespace() {
            if let Some(m) = tok.strip_prefix("ci.di.policy=").and_then(policy_mode) {
                di.mode = m;
                di.mode_source = Some(format!("ci.di.policy on the kernel command line in {p}"));
            }
        }
    }
    di
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(p: &str, t: &str) -> (String, Vec<u8>) {
        (p.to_owned(), t.as_bytes().to_vec())
    }

    #[test]
    fn lines_like_read() {
        assert_eq!(
            shell_lines(b"  a b \t\nc\\\nd\ne\\x\nlast"),
            ["a b", "cd", "ex"]
        );
    }

    #[test]
    fn lists_as_ds_identify_reads_them() {
        let one = [f("c", "datasource_list: [ NoCloud, 'ConfigDrive' ]\n")];
        assert_eq!(config_list(&one).unwrap().0, ["NoCloud", "ConfigDrive"]);
        // Block style: the key alone on its line, an empty value.
        let block = [f("c", "datasource_list:\n  - NoCloud\n  - ConfigDrive\n")];
        assert_eq!(config_list(&block), Some((vec![], "c".into())));
        // A multi-line flow list: only its first line.
        let multi = [f("c", "datasource_list: [ NoCloud,\n   ConfigDrive ]\n")];
        assert_eq!(config_list(&multi).unwrap().0, ["NoCloud"]);
        // The last matching line of the last file wins, indented or not;
        // a comment leaves a blank before it, so the `]` stays (a word
        // that names no datasource).
        let two = [
            f("a", "datasource_list: [ A ]\n"),
            f("b", "x:\n  datasource_list: [ B, C ] # c\n"),
        ];
        let (list, file) = config_list(&two).unwrap();
        assert_eq!(
            (list, file.as_str()),
            (vec!["B".into(), "C".into(), "]".into()], "b")
        );
        // A quoted key is not seen; neither is a last line without newline.
        assert_eq!(config_list(&[f("c", "\"datasource_list\": [A]\n")]), None);
        assert_eq!(config_list(&[f("c", "datasource_list: [A]")]), None);
    }

    #[test]
    fn policies() {
        assert_eq!(
            policy_mode("search,found=all,maybe=all,notfound=disabled"),
            Some(Mode::Search)
        );
        assert_eq!(policy_mode("enabled"), Some(Mode::Enabled));
        assert_eq!(policy_mode("found=first"), None);
        let (ds, p) = read_di_config(b"policy: disabled\ndatasource: 'Ec2'\n");
        assert_eq!(
            (ds.as_deref(), p.as_deref()),
            (Some("Ec2"), Some("disabled"))
        );
    }
}
