//! cloud-init's effective `datasource_list` and `system_info.default_user`.
//!
//! Precedence, as cloud-init and ds-identify apply it:
//! 1. `/etc/cloud/cloud.cfg`, then `/etc/cloud/cloud.cfg.d/*.cfg` in lexical
//!    order; lists are replaced, not merged, so the last file that sets
//!    `datasource_list` wins whole (an empty list counts as set);
//! 2. a `ds=`, `ci.ds=` or `ci.datasource=` on the kernel command line
//!    (grub.cfg `linux` lines, or `GRUB_CMDLINE_LINUX*` in /etc/default/grub)
//!    beats every file.
//!
//! The YAML parser here is purpose-built and bounded: it understands a
//! top-level `datasource_list:` key with a flow list (`[a, 'b']`, possibly
//! over several lines) or a block list (`- a`), quotes and comments, and the
//! nested `system_info: default_user: name:` mapping. It never recurses and
//! never reads more than [`MAX_FLOW`] bytes for one list.

use crate::root::Guest;

/// Most bytes a single flow list may span.
pub const MAX_FLOW: usize = 64 * 1024;
/// Most items kept from one list.
pub const MAX_ITEMS: usize = 256;
/// Most drop-in files read from cloud.cfg.d.
pub const MAX_DROPINS: usize = 256;

/// Known datasource names, for normalising the case of `ds=nocloud`.
const KNOWN: &[&str] = &[
    "NoCloud",
    "NoCloudNet",
    "ConfigDrive",
    "OpenNebula",
    "DigitalOcean",
    "Azure",
    "AltCloud",
    "OVF",
    "MAAS",
    "GCE",
    "OpenStack",
    "AliYun",
    "Ec2",
    "CloudSigma",
    "CloudStack",
    "SmartOS",
    "Bigstep",
    "Scaleway",
    "Hetzner",
    "IBMCloud",
    "Oracle",
    "Exoscale",
    "RbxCloud",
    "UpCloud",
    "VMware",
    "Vultr",
    "LXD",
    "NWCS",
    "Akamai",
    "WSL",
    "CloudCIX",
    "None",
];

/// The canonical spelling of a datasource name, if we know it.
pub fn canonical(name: &str) -> String {
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |k| (*k).to_owned())
}

/// What [`gather`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DatasourceFacts {
    /// The effective list.
    pub list: Option<Vec<String>>,
    /// Where it came from.
    pub source: Option<String>,
    /// `system_info.default_user.name`.
    pub default_user: Option<String>,
}

/// Strips a YAML comment (`#` at the start or after whitespace, outside
/// quotes).
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return &s[..i],
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    s
}

/// A scalar: trimmed, outer quotes removed.
fn scalar(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q))
            && s.len() >= 2
        {
            return inner.to_owned();
        }
    }
    s.to_owned()
}

/// Splits the inside of a flow list on commas outside quotes.
fn split_flow(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in inner.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c == ',' => out.push(std::mem::take(&mut cur)),
            None => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| scalar(&s))
        .filter(|s| !s.is_empty())
        .take(MAX_ITEMS)
        .collect()
}

/// The value of a top-level `datasource_list` key in one YAML document:
/// `Some(list)` when the file sets it (the last occurrence wins, as in
/// PyYAML), `None` when it does not (or sets it to null).
pub fn parse_datasource_list(text: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = text.lines().take(100_000).collect();
    let mut result = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        // Top-level key only: no indentation.
        let Some(rest) = line.strip_prefix("datasource_list") else {
            continue;
        };
        let Some(val) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let val = strip_comment(val).trim();
        if val.starts_with('[') {
            // Flow list, possibly continued on later lines.
            let mut buf = val.to_owned();
            while !buf.contains(']') && i < lines.len() && buf.len() < MAX_FLOW {
                buf.push(' ');
                buf.push_str(strip_comment(lines[i]));
                i += 1;
            }
            let inner = buf
                .strip_prefix('[')
                .map(|b| b.split(']').next().unwrap_or(""))
                .unwrap_or("");
            result = Some(split_flow(inner));
        } else if val.is_empty() {
            // Block list: `- item` lines (indented or not) until another key.
            let mut items = Vec::new();
            while i < lines.len() {
                let l = strip_comment(lines[i]);
                let t = l.trim();
                if t.is_empty() {
                    i += 1;
                    continue;
                }
                if let Some(item) = t.strip_prefix('-') {
                    if items.len() < MAX_ITEMS {
                        items.push(scalar(item));
                    }
                    i += 1;
                } else {
                    break;
                }
            }
            // `datasource_list:` with nothing under it is null.
            result = (!items.is_empty()).then_some(items);
        } else if val == "~" || val == "null" {
            result = None;
        } else {
            // A bare scalar is not a list; cloud-init would reject it. Treat
            // it as a one-item list so the finding can name it.
            result = Some(vec![scalar(val)]);
        }
    }
    result
}

/// Indentation of a line (spaces; a tab counts as one).
fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// `system_info.default_user.name` from one YAML document, if set.
pub fn parse_default_user(text: &str) -> Option<String> {
    let mut found = None;
    // The indentation of the `system_info:` and `default_user:` keys we
    // are inside, if any.
    let mut in_system_info: Option<usize> = None;
    let mut in_default_user: Option<usize> = None;
    for raw in text.lines().take(100_000) {
        let l = strip_comment(raw);
        if l.trim().is_empty() {
            continue;
        }
        let ind = indent(l);
        let t = l.trim();
        if in_default_user.is_some_and(|d| ind <= d) {
            in_default_user = None;
        }
        if in_system_info.is_some_and(|d| ind <= d) {
            in_system_info = None;
        }
        if ind == 0 {
            // A new top-level key; `system_info:` opens the block we want.
            if t.starts_with("system_info:") {
                in_system_info = Some(0);
            }
            continue;
        }
        if let Some(si) = in_system_info {
            if in_default_user.is_none() {
                if let Some(v) = t.strip_prefix("default_user:")
                    && ind > si
                {
                    let v = v.trim();
                    if let Some(inner) = v.strip_prefix('{').and_then(|x| x.split('}').next()) {
                        // Flow mapping: {name: foo, ...}
                        for kv in inner.split(',') {
                            if let Some(n) = kv.trim().strip_prefix("name:") {
                                found = Some(scalar(n)).filter(|s| !s.is_empty());
                            }
                        }
                    } else {
                        in_default_user = Some(ind);
                    }
                }
            } else if let Some(n) = t.strip_prefix("name:") {
                found = Some(scalar(n)).filter(|s| !s.is_empty());
            }
        }
    }
    found
}

/// The datasource named on a kernel command line (`ds=nocloud;s=...`,
/// `ci.ds=`, `ci.datasource=`); the last occurrence wins, as in the kernel.
pub fn cmdline_datasource(cmdline: &str) -> Option<String> {
    let mut found = None;
    for tok in cmdline.split_whitespace() {
        let tok = tok.trim_matches(|c| c == '"' || c == '\'');
        let v = tok
            .strip_prefix("ds=")
            .or_else(|| tok.strip_prefix("ci.ds="))
            .or_else(|| tok.strip_prefix("ci.datasource="));
        if let Some(v) = v {
            let name = v.split([';', ',']).next().unwrap_or("").trim();
            if !name.is_empty() {
                found = Some(canonical(name));
            }
        }
    }
    found
}

/// Kernel command lines in a grub.cfg: arguments of `linux`, `linux16` and
/// `linuxefi` lines.
fn grub_cfg_cmdlines(text: &str) -> Vec<String> {
    text.lines()
        .take(100_000)
        .filter_map(|l| {
            let t = l.trim_start();
            let mut w = t.split_whitespace();
            match w.next() {
                Some("linux" | "linux16" | "linuxefi") => Some(w.collect::<Vec<_>>().join(" ")),
                _ => None,
            }
        })
        .collect()
}

/// `GRUB_CMDLINE_LINUX*` values in /etc/default/grub.
fn default_grub_cmdlines(text: &str) -> Vec<String> {
    text.lines()
        .take(10_000)
        .filter_map(|l| {
            let t = l.trim();
            let (k, v) = t.split_once('=')?;
            k.starts_with("GRUB_CMDLINE_LINUX")
                .then(|| crate::facts::os::unquote(v))
        })
        .collect()
}

/// The config files in precedence order (lowest first).
fn config_files(g: &Guest) -> Vec<String> {
    let mut files = vec!["/etc/cloud/cloud.cfg".to_owned()];
    let mut d: Vec<String> = g
        .list_dir("/etc/cloud/cloud.cfg.d")
        .into_iter()
        .filter(|n| n.ends_with(".cfg"))
        .take(MAX_DROPINS)
        .collect();
    d.sort();
    files.extend(d.into_iter().map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")));
    files
}

/// Combines config files (path, text) in precedence order, lowest first,
/// with a datasource from the kernel command line (name, file it came
/// from), which wins.
pub fn effective(
    configs: &[(String, String)],
    cmdline: Option<(String, String)>,
) -> DatasourceFacts {
    let mut f = DatasourceFacts::default();
    for (path, text) in configs {
        if let Some(list) = parse_datasource_list(text) {
            f.list = Some(list);
            f.source = Some(path.clone());
        }
        if let Some(u) = parse_default_user(text) {
            f.default_user = Some(u);
        }
    }
    if let Some((ds, p)) = cmdline {
        f.list = Some(vec![ds]);
        f.source = Some(format!("kernel command line in {p}"));
    }
    f
}

/// Reads the effective datasource_list and default user.
pub fn gather(g: &Guest) -> DatasourceFacts {
    let configs: Vec<(String, String)> = config_files(g)
        .into_iter()
        .filter_map(|p| g.read_text(&p).map(|t| (p, t)))
        .collect();
    // The kernel command line wins over every file.
    let mut cmdline: Option<(String, String)> = None;
    for p in ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"] {
        if let Some(t) = g.read_text(p) {
            for c in grub_cfg_cmdlines(&t) {
                if let Some(ds) = cmdline_datasource(&c) {
                    cmdline.get_or_insert((ds, p.to_owned()));
                }
            }
        }
    }
    if cmdline.is_none()
        && let Some(t) = g.read_text("/etc/default/grub")
    {
        for c in default_grub_cmdlines(&t) {
            if let Some(ds) = cmdline_datasource(&c) {
                cmdline = Some((ds, "/etc/default/grub".to_owned()));
            }
        }
    }
    effective(&configs, cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn flow_lists() {
        assert_eq!(
            parse_datasource_list(
                "datasource_list: [ ConfigDrive, DigitalOcean, NoCloud, None ]\n"
            ),
            l(&["ConfigDrive", "DigitalOcean", "NoCloud", "None"])
        );
        assert_eq!(
            parse_datasource_list("datasource_list: ['NoCloud', \"ConfigDrive\"] # c\n"),
            l(&["NoCloud", "ConfigDrive"])
        );
        assert_eq!(
            parse_datasource_list("datasource_list: [\n  NoCloud, # first\n  ConfigDrive\n]\n"),
            l(&["NoCloud", "ConfigDrive"])
        );
        assert_eq!(parse_datasource_list("datasource_list: []\n"), l(&[]));
        assert_eq!(
            parse_datasource_list("datasource_list: [ 'a,b', c ]"),
            l(&["a,b", "c"])
        );
    }

    #[test]
    fn block_lists_comments_and_nesting() {
        let t = "# comment\ndatasource_list:\n  - NoCloud   # local\n  - 'ConfigDrive'\n\n  - None\nsystem_info:\n  distro: debian\n";
        assert_eq!(
            parse_datasource_list(t),
            l(&["NoCloud", "ConfigDrive", "None"])
        );
        let t = "datasource_list:\n- A\n- B\nother: 1\n- C\n";
        assert_eq!(parse_datasource_list(t), l(&["A", "B"]));
        // Commented out or nested keys do not count.
        assert_eq!(parse_datasource_list("# datasource_list: [A]\n"), None);
        assert_eq!(
            parse_datasource_list("datasource:\n  datasource_list: [A]\n"),
            None
        );
        assert_eq!(parse_datasource_list("datasource_list_x: [A]\n"), None);
        assert_eq!(parse_datasource_list("datasource_list:\n"), None);
        // The last occurrence in a file wins.
        assert_eq!(
            parse_datasource_list("datasource_list: [A]\ndatasource_list: [B]\n"),
            l(&["B"])
        );
        // Unterminated flow list is bounded and still yields items.
        assert_eq!(
            parse_datasource_list("datasource_list: [A, B\n"),
            l(&["A", "B"])
        );
    }

    #[test]
    fn default_user() {
        let t = "system_info:\n  distro: ubuntu\n  default_user:\n    name: ubuntu\n    lock_passwd: true\n  paths:\n    name: wrong\n";
        assert_eq!(parse_default_user(t).as_deref(), Some("ubuntu"));
        let t = "system_info:\n   default_user: {name: 'alpine', groups: [wheel]}\n";
        assert_eq!(parse_default_user(t).as_deref(), Some("alpine"));
        assert_eq!(parse_default_user("users:\n  - name: x\n"), None);
        assert_eq!(
            parse_default_user("default_user:\n  name: top\nsystem_info:\n  foo: 1\n"),
            None
        );
    }

    #[test]
    fn later_file_replaces_and_cmdline_wins() {
        let c = |p: &str, t: &str| (p.to_owned(), t.to_owned());
        let files = vec![
            c(
                "/etc/cloud/cloud.cfg",
                "datasource_list: [ConfigDrive, NoCloud]\nsystem_info:\n  default_user:\n    name: debian\n",
            ),
            c("/etc/cloud/cloud.cfg.d/50-x.cfg", "# nothing\n"),
            c(
                "/etc/cloud/cloud.cfg.d/90-x.cfg",
                "datasource_list:\n - NoCloud\n - ConfigDrive\n",
            ),
        ];
        let f = effective(&files, None);
        assert_eq!(f.list, l(&["NoCloud", "ConfigDrive"]));
        assert_eq!(f.source.as_deref(), Some("/etc/cloud/cloud.cfg.d/90-x.cfg"));
        assert_eq!(f.default_user.as_deref(), Some("debian"));
        let f = effective(
            &files,
            Some(("NoCloud".into(), "/boot/grub/grub.cfg".into())),
        );
        assert_eq!(f.list, l(&["NoCloud"]));
        assert_eq!(
            f.source.as_deref(),
            Some("kernel command line in /boot/grub/grub.cfg")
        );
    }

    #[test]
    fn kernel_cmdline() {
        assert_eq!(
            cmdline_datasource("root=/dev/vda1 ro ds=nocloud;s=http://x/ quiet").as_deref(),
            Some("NoCloud")
        );
        assert_eq!(
            cmdline_datasource("ci.ds=ConfigDrive").as_deref(),
            Some("ConfigDrive")
        );
        assert_eq!(
            cmdline_datasource("ci.datasource=Foo").as_deref(),
            Some("Foo")
        );
        assert_eq!(cmdline_datasource("root=/dev/vda1 ro"), None);
        let g =
            "menuentry 'x' {\n\tlinux /vmlinuz root=UUID=1 ro ds=nocloud\n\tinitrd /initrd\n}\n";
        assert_eq!(
            grub_cfg_cmdlines(g),
            vec!["/vmlinuz root=UUID=1 ro ds=nocloud"]
        );
        let d = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"ci.ds=NoCloud\"\n";
        assert_eq!(default_grub_cmdlines(d), vec!["quiet", "ci.ds=NoCloud"]);
    }
}
