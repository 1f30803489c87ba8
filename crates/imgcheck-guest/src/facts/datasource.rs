//! cloud-init's effective `datasource_list`, who decides it, the
//! `system_info.default_user`, and the markers that disable cloud-init.
//!
//! Configuration is read as cloud-init reads it (`util.read_conf_with_confd`,
//! `read_conf_d`, `mergemanydict` in cloudinit/util.py):
//! * each file is loaded with PyYAML `safe_load` semantics ([`super::yaml`]);
//!   a file that does not parse, or whose document is not a mapping, counts
//!   as `{}` (cloud-init logs a warning and goes on);
//! * `/etc/cloud/cloud.cfg.d/*.cfg` (or the directory cloud.cfg's `conf_d`
//!   names) are merged in reverse lexical order with the default mergers,
//!   so for every key the lexically last file that sets it wins; nested
//!   mappings merge key by key, lists and scalars are replaced whole
//!   (`datasource_list` is never concatenated); the drop-ins beat cloud.cfg.
//!
//! Who decides the list at boot, strongest first:
//! 1. `ds=`, `ci.ds=` or `ci.datasource=` on the kernel command line (grub.cfg
//!    `linux` lines, BLS entries, grubenv `kernelopts`, `GRUB_CMDLINE_LINUX*`
//!    in /etc/default/grub): ds-identify then searches only that one;
//! 2. on an image that runs ds-identify at boot (from cloud-init's systemd
//!    generator, or from the OpenRC service `cloud-init-ds-identify` of
//!    cloud-init 24.1+) in its default `search` mode: what ds-identify
//!    reads ([`super::ds_identify`]): `datasource:` in ds-identify.cfg, else
//!    the last one-line `datasource_list:` of the files, else its own
//!    default order (`DI_DSLIST_DEFAULT`, ConfigDrive before NoCloud). Its
//!    result goes to /run/cloud-init/cloud.cfg, which outranks /etc/cloud,
//!    so a block-style list cloud-init would read is overridden;
//! 3. otherwise the configuration files as cloud-init reads them, when one
//!    sets `datasource_list`;
//! 4. nothing configured: cloud-init's built-in list (settings.py
//!    `CFG_BUILTIN`, NoCloud first).
//!
//! Disabled markers (ds-identify `is_disabled`, the systemd generator):
//! `/etc/cloud/cloud-init.disabled`, `cloud-init=disabled` on the kernel
//! command line, or ds-identify's policy `disabled`.

use super::ds_identify::{self, DsIdentify, Mode};
use super::yaml::{self, Value};
use crate::root::{Guest, Kind};

/// Most items kept from one list.
pub const MAX_ITEMS: usize = 256;
/// Most drop-in files read from cloud.cfg.d.
pub const MAX_DROPINS: usize = 256;
/// Most BLS entries read.
const MAX_BLS: usize = 64;

/// cloud-init's built-in `datasource_list` (cloudinit/settings.py
/// `CFG_BUILTIN`, canonical/cloud-init at 04eacd06).
pub const BUILTIN_LIST: &[&str] = &[
    "NoCloud",
    "ConfigDrive",
    "LXD",
    "OpenNebula",
    "DigitalOcean",
    "Azure",
    "AltCloud",
    "VMware",
    "OVF",
    "MAAS",
    "GCE",
    "OpenStack",
    "AliYun",
    "Vultr",
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
    "NWCS",
    "Akamai",
    "WSL",
    "CloudCIX",
    "None",
];

/// ds-identify's default search order (tools/ds-identify
/// `DI_DSLIST_DEFAULT`, same commit).
pub const DS_IDENTIFY_LIST: &[&str] = &[
    "MAAS",
    "ConfigDrive",
    "NoCloud",
    "AltCloud",
    "Azure",
    "Bigstep",
    "CloudSigma",
    "CloudStack",
    "DigitalOcean",
    "Vultr",
    "AliYun",
    "Ec2",
    "GCE",
    "OpenNebula",
    "OpenStack",
    "VMware",
    "OVF",
    "SmartOS",
    "Scaleway",
    "Hetzner",
    "IBMCloud",
    "Oracle",
    "Exoscale",
    "RbxCloud",
    "UpCloud",
    "LXD",
    "NWCS",
    "Akamai",
    "WSL",
    "CloudCIX",
];

/// The canonical spelling of a datasource name, if we know it.
pub fn canonical(name: &str) -> String {
    BUILTIN_LIST
        .iter()
        .chain(["NoCloudNet"].iter())
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |k| (*k).to_owned())
}

/// Who decided the effective list (serialised in the report).
pub mod decided_by {
    /// A `ds=` / `ci.ds=` on the kernel command line.
    pub const KERNEL_CMDLINE: &str = "kernel_cmdline";
    /// A configuration file, as cloud-init reads it (no ds-identify binds
    /// it at boot).
    pub const CONFIG: &str = "config";
    /// What ds-identify reads at boot: the `datasource_list:` line of a
    /// configuration file, or `datasource:` in /etc/cloud/ds-identify.cfg.
    pub const DS_IDENTIFY_CONFIG: &str = "ds_identify_config";
    /// ds-identify's default order (images that run ds-identify at boot).
    pub const DS_IDENTIFY_DEFAULT: &str = "ds_identify_default";
    /// cloud-init's built-in default.
    pub const BUILTIN_DEFAULT: &str = "builtin_default";
}

/// What [`gather`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DatasourceFacts {
    /// The effective list.
    pub list: Option<Vec<String>>,
    /// Where it came from, in words.
    pub source: Option<String>,
    /// One of the [`decided_by`] values.
    pub decided_by: Option<String>,
    /// `system_info.default_user.name`.
    pub default_user: Option<String>,
    /// Configuration files cloud-init would ignore, with the reason.
    pub ignored: Vec<String>,
    /// Markers that disable cloud-init, in words.
    pub disabled_by: Vec<String>,
    /// ds-identify runs at boot (the systemd generator and ds-identify).
    pub ds_identify: bool,
    /// cloud-init's own reading of the configuration, when ds-identify
    /// overrides it at boot with a different list.
    pub config_list: Option<Vec<String>>,
    /// The file of [`Self::config_list`].
    pub config_source: Option<String>,
}

/// One configuration file loaded the way cloud-init's read_conf does:
/// `Ok(None)` for an empty document, `Err` (the reason) for one cloud-init
/// ignores.
pub fn load(text: &str) -> Result<Option<Value>, yaml::YamlError> {
    yaml::load_config(text)
}

/// Items of a `datasource_list` value: a sequence's items rendered, a
/// scalar as a one-item list (so a finding can name it), null as unset.
fn list_items(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Null => None,
        Value::Seq(items) => Some(items.iter().take(MAX_ITEMS).map(|i| i.render()).collect()),
        other => Some(vec![other.render()]),
    }
}

/// `system_info.default_user.name` of a loaded configuration.
fn default_user_of(cfg: &Value) -> Option<String> {
    let name = cfg.get("system_info")?.get("default_user")?.get("name")?;
    match &**name {
        Value::Null => None,
        v => Some(v.render()),
    }
}

/// `datasource_list` of one configuration text, as cloud-init reads that
/// file alone (`None` when it does not set one or is ignored).
pub fn parse_datasource_list(text: &str) -> Option<Vec<String>> {
    let cfg = load(text).ok()??;
    list_items(cfg.get("datasource_list")?)
}

/// `system_info.default_user.name` of one configuration text.
pub fn parse_default_user(text: &str) -> Option<String> {
    default_user_of(&load(text).ok()??)
}

/// cloud-init's dict merger with its defaults (`no_replace`): keys of `low`
/// missing from `high` are added; where both have a key, a mapping in `low`
/// merges into a mapping in `high`, replaces a list or string there (the
/// list and string mergers return the new value for a non-list/non-string),
/// and anything else in `high` stays.
pub fn merge(high: &Value, low: &Value) -> Value {
    let (Value::Map(h), Value::Map(l)) = (high, low) else {
        return high.clone();
    };
    let mut out = h.clone();
    for (k, lv) in l {
        match out.iter_mut().find(|(hk, _)| hk == k) {
            None => out.push((k.clone(), lv.clone())),
            Some((_, hv)) => {
                if let Value::Map(_) = &**lv {
                    match &**hv {
                        Value::Map(_) => *hv = std::rc::Rc::new(merge(hv, lv)),
                        Value::Seq(_) | Value::Str(_) => *hv = lv.clone(),
                        _ => {}
                    }
                }
            }
        }
    }
    Value::Map(out)
}

/// The config files (path, text) in priority order, highest first, and the
/// files cloud-init would ignore.
fn load_configs(
    g: &Guest,
    ignored: &mut Vec<String>,
    raw: &mut Vec<(String, Vec<u8>)>,
) -> Vec<(String, Value)> {
    let mut read = |p: &str| -> Option<Value> {
        let data = match g.read_file(p, crate::root::CONFIG_CAP) {
            Ok(Some(d)) => {
                raw.push((p.to_owned(), d.clone()));
                d
            }
            Ok(None) => return None,
            Err(e) => {
                ignored.push(format!("{p}: not read ({e})"));
                return None;
            }
        };
        let Ok(text) = String::from_utf8(data) else {
            ignored.push(format!("{p}: not UTF-8 (cloud-init fails reading it)"));
            return None;
        };
        match load(&text) {
            Ok(v) => v,
            Err(e) => {
                ignored.push(format!("{p}: ignored by cloud-init: {e}"));
                None
            }
        }
    };
    let main = read("/etc/cloud/cloud.cfg");
    // cloud.cfg may move the drop-in directory with `conf_d`.
    let confd = match main.as_ref().and_then(|m| m.get("conf_d")) {
        Some(v) => match &**v {
            Value::Str(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            _ => None,
        },
        None => Some("/etc/cloud/cloud.cfg.d".to_owned()),
    };
    let mut out = Vec::new();
    if let Some(dir) = confd {
        let mut names: Vec<String> = g
            .list_dir(&dir)
            .into_iter()
            .filter(|n| n.ends_with(".cfg"))
            .collect();
        // Python's sorted(..., reverse=True): later names first.
        names.sort();
        names.reverse();
        for n in names.into_iter().take(MAX_DROPINS) {
            let p = format!("{}/{n}", dir.trim_end_matches('/'));
            if !matches!(g.stat(&p), Some(Kind::File(_))) {
                continue;
            }
            if let Some(v) = read(&p) {
                out.push((p, v));
            }
        }
    }
    if let Some(m) = main {
        out.push(("/etc/cloud/cloud.cfg".to_owned(), m));
    }
    out
}

/// The datasource named on a kernel command line (`ds=nocloud;s=...`,
/// `ci.ds=`, `ci.datasource=`); the last occurrence wins, as in ds-identify.
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

/// True when a kernel command line disables cloud-init.
pub fn cmdline_disables(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|t| t.trim_matches(|c| c == '"' || c == '\'') == "cloud-init=disabled")
}

/// Kernel command lines in a grub.cfg: arguments of `linux`, `linux16` and
/// `linuxefi` lines.
fn grub_cfg_cmdlines(text: &str) -> Vec<String> {
    text.lines()
        .take(100_000)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
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
            let (k, v) = l.trim().split_once('=')?;
            k.starts_with("GRUB_CMDLINE_LINUX")
                .then(|| crate::facts::os::unquote(v))
        })
        .collect()
}

/// `options` of a Boot Loader Specification entry, or `kernelopts=` of a
/// grubenv.
fn keyed_cmdlines(text: &str, key: &str, sep: char) -> Vec<String> {
    text.lines()
        .take(10_000)
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix(key)?;
            rest.strip_prefix(sep)
                .or_else(|| (sep == ' ').then(|| rest.strip_prefix('\t')).flatten())
                .map(|v| v.trim().to_owned())
        })
        .collect()
}

/// Every kernel command line the image's boot configuration holds, with
/// the file it is in (grub.cfg, BLS entries, grubenv, /etc/default/grub).
pub fn kernel_cmdlines(g: &Guest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"] {
        if let Some(t) = g.read_text(p) {
            out.extend(grub_cfg_cmdlines(&t).into_iter().map(|c| (c, p.to_owned())));
        }
    }
    for e in g.list_dir("/boot/loader/entries").into_iter().take(MAX_BLS) {
        if !e.ends_with(".conf") {
            continue;
        }
        let p = format!("/boot/loader/entries/{e}");
        if let Some(t) = g.read_text(&p) {
            out.extend(
                keyed_cmdlines(&t, "options", ' ')
                    .into_iter()
                    .map(|c| (c, p.clone())),
            );
        }
    }
    for p in ["/boot/grub2/grubenv", "/boot/grub/grubenv"] {
        if let Some(t) = g.read_text(p) {
            out.extend(
                keyed_cmdlines(&t, "kernelopts", '=')
                    .into_iter()
                    .map(|c| (c, p.to_owned())),
            );
        }
    }
    if let Some(t) = g.read_text("/etc/default/grub") {
        out.extend(
            default_grub_cmdlines(&t)
                .into_iter()
                .map(|c| (c, "/etc/default/grub".to_owned())),
        );
    }
    out
}

/// True when the image runs ds-identify at boot: ds-identify is installed
/// (paths of the Debian, Ubuntu, SUSE, Arch, Alpine and RHEL-family
/// packages) and something starts it: cloud-init's systemd generator, or
/// (cloud-init 24.1+) the OpenRC service `cloud-init-ds-identify` in a
/// runlevel.
fn has_ds_identify(g: &Guest) -> bool {
    let generator = [
        "/usr/lib/systemd/system-generators/cloud-init-generator",
        "/lib/systemd/system-generators/cloud-init-generator",
    ]
    .iter()
    .any(|p| g.exists(p))
        || ["boot", "default", "sysinit"]
            .iter()
            .any(|rl| g.exists(&format!("/etc/runlevels/{rl}/cloud-init-ds-identify")));
    let ds_identify = [
        "/usr/lib/cloud-init/ds-identify",
        "/lib/cloud-init/ds-identify",
        "/usr/libexec/cloud-init/ds-identify",
    ]
    .iter()
    .any(|p| g.exists(p));
    generator && ds_identify
}

/// Combines loaded configs (path, value; highest priority first) with a
/// datasource from the kernel command line (name, file) and what
/// ds-identify reads (`None` when it does not run at boot), into the
/// effective facts.
pub fn effective(
    configs: &[(String, Value)],
    cmdline: Option<(String, String)>,
    di: Option<&DsIdentify>,
) -> DatasourceFacts {
    use decided_by::*;
    let mut f = DatasourceFacts {
        ds_identify: di.is_some(),
        ..Default::default()
    };
    let mut merged = Value::Map(Vec::new());
    for (_, v) in configs {
        merged = merge(&merged, v);
    }
    f.default_user = default_user_of(&merged);
    let configured = merged.get("datasource_list").and_then(|v| list_items(v));
    // The highest-priority file that sets it is the one whose list won
    // (lists are never merged).
    let configured_in = || {
        configs
            .iter()
            .find(|(_, v)| {
                v.get("datasource_list")
                    .is_some_and(|d| list_items(d).is_some())
            })
            .map_or_else(
                || "the cloud-init configuration".to_owned(),
                |(p, _)| p.clone(),
            )
    };
    // Only in `search` mode does ds-identify's result bind cloud-init.
    let binding = di.filter(|d| d.mode == Mode::Search);
    let defaults = |l: &[&str]| Some(l.iter().map(|s| (*s).to_owned()).collect());
    if let Some((ds, p)) = cmdline {
        f.list = Some(vec![ds]);
        f.source = Some(format!("kernel command line in {p}"));
        f.decided_by = Some(KERNEL_CMDLINE.into());
    } else if let Some(name) = binding.and_then(|d| d.dsname.as_ref()) {
        f.list = Some(vec![name.clone()]);
        f.source = Some("`datasource:` in /etc/cloud/ds-identify.cfg".into());
        f.decided_by = Some(DS_IDENTIFY_CONFIG.into());
    } else if let Some((list, p)) = binding
        .and_then(|d| d.config_list.as_ref())
        .filter(|(l, _)| !l.is_empty())
    {
        f.list = Some(list.clone());
        // decided_by says it is ds-identify's reading of that file.
        f.source = Some(p.clone());
        f.decided_by = Some(DS_IDENTIFY_CONFIG.into());
    } else if binding.is_some() {
        f.list = defaults(DS_IDENTIFY_LIST);
        f.source = Some(match &configured {
            Some(_) => format!(
                "ds-identify's default order: ds-identify reads only a one-line `datasource_list: [ ... ]` and sees none in {}, and what it finds at boot overrides cloud-init's configuration",
                configured_in()
            ),
            None => "ds-identify's default order (no datasource_list configured; ds-identify runs at boot)".into(),
        });
        f.decided_by = Some(DS_IDENTIFY_DEFAULT.into());
    } else if let Some(list) = configured.clone() {
        f.list = Some(list);
        f.source = Some(configured_in());
        f.decided_by = Some(CONFIG.into());
    } else {
        f.list = defaults(BUILTIN_LIST);
        f.source = Some(
            "cloud-init's built-in default (no datasource_list configured; settings.py CFG_BUILTIN)"
                .into(),
        );
        f.decided_by = Some(BUILTIN_DEFAULT.into());
    }
    if binding.is_some()
        && f.decided_by.as_deref() != Some(KERNEL_CMDLINE)
        && let Some(c) = configured.filter(|c| Some(c) != f.list.as_ref())
    {
        f.config_list = Some(c);
        f.config_source = Some(configured_in());
    }
    f
}

/// Reads the effective datasource_list, default user and disabled markers.
pub fn gather(g: &Guest) -> DatasourceFacts {
    let mut ignored = Vec::new();
    // The files as read, for ds-identify's reading of the same files.
    let mut raw = Vec::new();
    let configs = load_configs(g, &mut ignored, &mut raw);
    let lines = kernel_cmdlines(g);
    // grub.cfg and BLS entries are what boots; /etc/default/grub only
    // counts when nothing generated says otherwise.
    let cmdline = lines
        .iter()
        .filter(|(_, p)| p != "/etc/default/grub")
        .find_map(|(c, p)| cmdline_datasource(c).map(|d| (d, p.clone())))
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find_map(|(c, p)| cmdline_datasource(c).map(|d| (d, p.clone())))
        });
    let di = has_ds_identify(g).then(|| ds_identify::gather(g, &lines, &raw));
    let mut f = effective(&configs, cmdline, di.as_ref());
    f.ignored = ignored;
    if let Some(d) = di.as_ref().filter(|d| d.mode == Mode::Disabled) {
        let from = d.mode_source.as_deref().unwrap_or("ds-identify");
        f.disabled_by
            .push(format!("ds-identify policy `disabled` in {from}"));
    }
    if g.lstat("/etc/cloud/cloud-init.disabled").is_some() {
        f.disabled_by
            .push("/etc/cloud/cloud-init.disabled exists".into());
    }
    for (c, p) in &lines {
        let m = format!("cloud-init=disabled on the kernel command line in {p}");
        if cmdline_disables(c) && !f.disabled_by.contains(&m) {
            f.disabled_by.push(m);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| (*s).to_owned()).collect())
    }

    fn cfg(p: &str, t: &str) -> (String, Value) {
        (p.to_owned(), load(t).unwrap().unwrap())
    }

    #[test]
    fn per_file_values() {
        assert_eq!(
            parse_datasource_list(
                "datasource_list: [ ConfigDrive, DigitalOcean, NoCloud, None ]\n"
            ),
            l(&["ConfigDrive", "DigitalOcean", "NoCloud", "None"])
        );
        assert_eq!(
            parse_datasource_list("datasource_list:\n  - NoCloud   # local\n  - 'ConfigDrive'\n"),
            l(&["NoCloud", "ConfigDrive"])
        );
        assert_eq!(parse_datasource_list("datasource_list: []\n"), l(&[]));
        assert_eq!(parse_datasource_list("datasource_list:\n"), None);
        assert_eq!(
            parse_datasource_list("datasource:\n  datasource_list: [A]\n"),
            None
        );
        let t = "system_info:\n  distro: ubuntu\n  default_user:\n    name: ubuntu\n  paths:\n    name: wrong\n";
        assert_eq!(parse_default_user(t).as_deref(), Some("ubuntu"));
        let t = "system_info:\n   default_user: {name: 'alpine', groups: [wheel]}\n";
        assert_eq!(parse_default_user(t).as_deref(), Some("alpine"));
        assert_eq!(parse_default_user("default_user:\n  name: top\n"), None);
    }

    /// Priority order as cloud-init builds it: drop-ins reverse-sorted,
    /// then cloud.cfg; the first that sets a key wins; mappings merge.
    #[test]
    fn merge_like_mergemanydict() {
        let files = vec![
            cfg(
                "/etc/cloud/cloud.cfg.d/90-x.cfg",
                "datasource_list:\n - NoCloud\n - ConfigDrive\nsystem_info:\n  default_user:\n    groups: [x]\n",
            ),
            cfg(
                "/etc/cloud/cloud.cfg.d/10-x.cfg",
                "datasource_list: [ConfigDrive]\n",
            ),
            cfg(
                "/etc/cloud/cloud.cfg",
                "datasource_list: [ConfigDrive, NoCloud]\nsystem_info:\n  default_user:\n    name: debian\n",
            ),
        ];
        // No ds-identify: cloud-init's own reading governs.
        let f = effective(&files, None, None);
        assert_eq!(f.list, l(&["NoCloud", "ConfigDrive"]));
        assert_eq!(f.source.as_deref(), Some("/etc/cloud/cloud.cfg.d/90-x.cfg"));
        assert_eq!(f.decided_by.as_deref(), Some("config"));
        // default_user merged key-wise across files.
        assert_eq!(f.default_user.as_deref(), Some("debian"));
        let f = effective(
            &files,
            Some(("NoCloud".into(), "/boot/grub/grub.cfg".into())),
            None,
        );
        assert_eq!(f.list, l(&["NoCloud"]));
        assert_eq!(f.decided_by.as_deref(), Some("kernel_cmdline"));
        // A null in a stronger file blocks the weaker lists (the dict
        // merger keeps it), so nothing is configured.
        let files = vec![
            cfg("/etc/cloud/cloud.cfg.d/99.cfg", "datasource_list: ~\n"),
            cfg("/etc/cloud/cloud.cfg", "datasource_list: [NoCloud]\n"),
        ];
        assert_eq!(
            effective(&files, None, None).decided_by.as_deref(),
            Some("builtin_default")
        );
    }

    fn di(list: Option<&[&str]>) -> DsIdentify {
        DsIdentify {
            config_list: list.map(|l| {
                (
                    l.iter().map(|s| (*s).to_owned()).collect(),
                    "/etc/cloud/cloud.cfg.d/90-x.cfg".to_owned(),
                )
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ds_identify_binds_at_boot() {
        // cloud-init would read a block-style NoCloud-first list; ds-identify
        // sees no list and searches in its default order.
        let files = vec![cfg(
            "/etc/cloud/cloud.cfg.d/90-x.cfg",
            "datasource_list:\n - NoCloud\n - ConfigDrive\n",
        )];
        let f = effective(&files, None, Some(&di(Some(&[]))));
        assert_eq!(f.decided_by.as_deref(), Some("ds_identify_default"));
        assert!(f.source.unwrap().contains("90-x.cfg"));
        // A one-line list it does read.
        let f = effective(&files, None, Some(&di(Some(&["NoCloud"]))));
        assert_eq!(f.list, l(&["NoCloud"]));
        assert_eq!(f.decided_by.as_deref(), Some("ds_identify_config"));
        // `policy: enabled`: ds-identify binds nothing, cloud-init reads YAML.
        let mut d = di(Some(&["ConfigDrive"]));
        d.mode = Mode::Enabled;
        let f = effective(&files, None, Some(&d));
        assert_eq!(f.list, l(&["NoCloud", "ConfigDrive"]));
        assert_eq!(f.decided_by.as_deref(), Some("config"));
        // `datasource:` in ds-identify.cfg names the only one searched.
        let mut d = di(None);
        d.dsname = Some("Ec2".into());
        assert_eq!(effective(&files, None, Some(&d)).list, l(&["Ec2"]));
    }

    #[test]
    fn defaults_when_nothing_is_configured() {
        let f = effective(&[], None, Some(&di(None)));
        assert_eq!(f.decided_by.as_deref(), Some("ds_identify_default"));
        let list = f.list.unwrap();
        let pos = |n: &str| list.iter().position(|d| d == n).unwrap();
        assert!(pos("ConfigDrive") < pos("NoCloud"));
        let f = effective(&[], None, None);
        assert_eq!(f.decided_by.as_deref(), Some("builtin_default"));
        assert_eq!(f.list.unwrap()[0], "NoCloud");
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
        assert_eq!(cmdline_datasource("root=/dev/vda1 ro"), None);
        assert!(cmdline_disables("ro quiet cloud-init=disabled"));
        assert!(!cmdline_disables("ro cloud-init=enabled"));
        let g =
            "menuentry 'x' {\n\tlinux /vmlinuz root=UUID=1 ro ds=nocloud\n\tinitrd /initrd\n}\n";
        assert_eq!(
            grub_cfg_cmdlines(g),
            vec!["/vmlinuz root=UUID=1 ro ds=nocloud"]
        );
        let d = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"ci.ds=NoCloud\"\n";
        assert_eq!(default_grub_cmdlines(d), vec!["quiet", "ci.ds=NoCloud"]);
        let bls = "title Rocky\nversion 5.14\nlinux /vmlinuz\noptions root=UUID=x ro cloud-init=disabled\n";
        assert_eq!(
            keyed_cmdlines(bls, "options", ' '),
            vec!["root=UUID=x ro cloud-init=disabled"]
        );
        assert_eq!(
            keyed_cmdlines("# GRUB\nkernelopts=root=/dev/vda1 ro\n", "kernelopts", '='),
            vec!["root=/dev/vda1 ro"]
        );
    }
}
