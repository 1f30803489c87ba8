//! The SSH daemon: installed, and enabled at boot under the init system we
//! recognise (systemd, OpenRC, sysvinit, BSD rc.d).
//!
//! systemd is judged the way systemd itself decides (systemd.unit(5),
//! systemd.special(7)):
//! * a unit is looked up by name along the system unit path
//!   ([`UNIT_DIRS`], first hit wins); a unit file that is a symlink to
//!   /dev/null or is empty (size 0) is *masked* and never starts;
//! * a unit is enabled when a `.wants/` or `.requires/` link names it under
//!   a unit that boot reaches from `default.target` (following
//!   `Wants=`/`Requires=` lines and `.wants`/`.requires` directories, plus
//!   the dependencies systemd's own targets ship with); a link under
//!   `rescue.target.wants` alone does not count;
//! * the link's unit must exist: a name with no unit file on the path (and
//!   a link that does not resolve to one) is "not found" and never starts;
//! * `ssh.socket` / `sshd.socket` reached the same way counts (socket
//!   activation).

use std::collections::{BTreeSet, VecDeque};

use crate::report::{OsFacts, SshdFacts};
use crate::root::{Guest, Kind};

const BINARIES: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/sshd",
    "/usr/local/sbin/sshd",
    "/sbin/sshd",
];
/// Unit names that start sshd.
const UNITS: &[&str] = &["ssh.service", "sshd.service", "ssh.socket", "sshd.socket"];
/// The system unit search path, strongest first (systemd.unit(5); /lib for
/// images without merged /usr).
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
/// Dependencies systemd's shipped targets carry (units/*.target in
/// systemd), used besides whatever the image's target files say.
const BUILTIN_EDGES: &[(&str, &[&str])] = &[
    ("graphical.target", &["multi-user.target"]),
    ("multi-user.target", &["basic.target"]),
    (
        "basic.target",
        &[
            "sysinit.target",
            "sockets.target",
            "timers.target",
            "paths.target",
            "slices.target",
        ],
    ),
    ("sysinit.target", &["local-fs.target", "swap.target"]),
    ("rescue.target", &["sysinit.target"]),
];
/// Most units walked while computing what boot reaches.
const MAX_UNITS: usize = 2_000;

/// The value of `sshd_enable` in rc.conf text (last assignment wins).
pub fn rc_conf_sshd(text: &str) -> Option<bool> {
    let mut v = None;
    for l in text.lines().take(10_000) {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("sshd_enable=") {
            let val = crate::facts::os::unquote(rest);
            v = Some(val.eq_ignore_ascii_case("yes"));
        }
    }
    v
}

/// How systemd loads a unit name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitState {
    /// No unit file by that name on the unit path.
    Missing,
    /// Masked; the evidence says how.
    Masked(String),
    /// Loaded from this path.
    Loaded(String),
}

/// Looks `name` up along [`UNIT_DIRS`].
pub fn unit_state(g: &Guest, name: &str) -> UnitState {
    for d in UNIT_DIRS {
        let p = format!("{d}/{name}");
        match g.lstat(&p) {
            None => continue,
            Some(Kind::Symlink) => {
                // `systemctl mask` writes /dev/null; a relative spelling
                // (../../dev/null) masks too.
                if g.read_link(&p)
                    .is_some_and(|t| t == "/dev/null" || t.ends_with("/dev/null"))
                {
                    return UnitState::Masked(format!("{p} -> /dev/null (masked)"));
                }
                match g.stat(&p) {
                    Some(Kind::File(0)) => {
                        return UnitState::Masked(format!("{p} links to an empty file (masked)"));
                    }
                    Some(Kind::File(_)) => return UnitState::Loaded(p),
                    // A dangling link does not provide the unit.
                    _ => continue,
                }
            }
            Some(Kind::File(0)) => return UnitState::Masked(format!("{p} is empty (masked)")),
            Some(Kind::File(_)) => return UnitState::Loaded(p),
            Some(_) => continue,
        }
    }
    UnitState::Missing
}

/// `Wants=` and `Requires=` names in a unit file.
pub fn unit_deps(text: &str) -> Vec<String> {
    text.lines()
        .take(10_000)
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("Wants=")
                .or_else(|| l.strip_prefix("Requires="))
        })
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// The unit `default.target` stands for, and how we know.
fn default_target(g: &Guest) -> (String, String) {
    for d in UNIT_DIRS {
        let p = format!("{d}/default.target");
        match g.lstat(&p) {
            Some(Kind::Symlink) => {
                if let Some(t) = g.read_link(&p) {
                    let name = t.rsplit('/').next().unwrap_or("").to_owned();
                    if !name.is_empty() {
                        return (name.clone(), format!("{p} -> {t}"));
                    }
                }
            }
            Some(Kind::File(_)) => return ("default.target".into(), p),
            _ => {}
        }
    }
    (
        "graphical.target".into(),
        "no default.target on the unit path: systemd's own default, graphical.target".into(),
    )
}

/// Every unit boot reaches from default.target, with the `.wants` /
/// `.requires` link that pulled each unit in (for evidence).
fn reachable(g: &Guest, start: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut seen = BTreeSet::new();
    let mut links = Vec::new();
    let mut queue = VecDeque::from([start.to_owned()]);
    while let Some(u) = queue.pop_front() {
        if seen.len() >= MAX_UNITS || !seen.insert(u.clone()) {
            continue;
        }
        let mut deps: Vec<String> = Vec::new();
        for d in UNIT_DIRS {
            for suffix in ["wants", "requires"] {
                let dir = format!("{d}/{u}.{suffix}");
                for e in g.list_dir(&dir) {
                    links.push((e.clone(), format!("{dir}/{e}")));
                    deps.push(e);
                }
            }
        }
        if let UnitState::Loaded(p) = unit_state(g, &u)
            && let Some(t) = g.read_text(&p)
        {
            deps.extend(unit_deps(&t));
        }
        if let Some((_, extra)) = BUILTIN_EDGES.iter().find(|(n, _)| *n == u) {
            deps.extend(extra.iter().map(|s| (*s).to_owned()));
        }
        queue.extend(deps.into_iter().filter(|d| !seen.contains(d)));
    }
    (seen, links)
}

/// Enabled-at-boot under systemd, with evidence and masked units.
fn systemd_enabled(g: &Guest, f: &mut SshdFacts) -> bool {
    let (target, why) = default_target(g);
    f.evidence.push(format!("default target {target} ({why})"));
    let (reached, links) = reachable(g, &target);
    let mut unreached = Vec::new();
    for d in UNIT_DIRS {
        for e in g.list_dir(d) {
            let unit = e
                .strip_suffix(".wants")
                .or_else(|| e.strip_suffix(".requires"));
            if let Some(unit) = unit.filter(|u| !reached.contains(*u)) {
                unreached.push((format!("{d}/{e}"), unit.to_owned()));
            }
        }
    }
    let mut enabled = false;
    for u in UNITS {
        let state = unit_state(g, u);
        if let UnitState::Masked(e) = &state {
            f.masked_units.push((*u).to_owned());
            f.evidence.push(e.clone());
        }
        let wanted: Vec<&(String, String)> = links.iter().filter(|(n, _)| n == u).collect();
        for (_, link) in &wanted {
            let loaded = match &state {
                UnitState::Loaded(_) => true,
                UnitState::Masked(_) => false,
                // A link straight to a unit file outside the path (`systemctl
                // link`) still loads it.
                UnitState::Missing => matches!(g.stat(link), Some(Kind::File(n)) if n > 0),
            };
            if loaded {
                enabled = true;
                f.evidence.push(format!("{link} (reached from {target})"));
            } else if state == UnitState::Missing {
                f.evidence.push(format!(
                    "{link}, but no unit file {u} exists: not found, never started"
                ));
            } else {
                f.evidence.push(format!("{link}, but {u} is masked"));
            }
        }
        // Links under targets boot never reaches.
        for (dir, unit) in &unreached {
            let p = format!("{dir}/{u}");
            if g.lstat(&p).is_some() {
                f.evidence.push(format!(
                    "{p}: {unit} is not reached from {target}, does not count"
                ));
            }
        }
    }
    enabled
}

/// Reads the sshd facts.
pub fn gather(g: &Guest, os: &OsFacts) -> SshdFacts {
    let mut f = SshdFacts::default();
    for b in BINARIES {
        if matches!(g.stat(b), Some(Kind::File(_))) {
            f.installed = true;
            f.binary = Some((*b).to_owned());
            break;
        }
    }

    // systemd is PID 1 when /sbin/init points at it (the link may dangle
    // when /usr is not on this disk) or its binary is installed.
    let systemd = g
        .read_link("/sbin/init")
        .is_some_and(|t| t.ends_with("/systemd"))
        || ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .iter()
            .any(|p| g.exists(p));
    let openrc = g.exists("/sbin/openrc") || g.exists("/etc/runlevels");
    let bsd =
        os.kind == "freebsd" || (g.exists("/etc/rc.conf") && g.exists("/etc/rc.d") && !systemd);

    if systemd {
        f.init_system = Some("systemd".into());
        f.enabled = Some(systemd_enabled(g, &mut f));
    } else if openrc {
        f.init_system = Some("openrc".into());
        let mut enabled = false;
        for rl in ["default", "boot", "sysinit"] {
            let p = format!("/etc/runlevels/{rl}/sshd");
            if g.lstat(&p).is_none() {
                continue;
            }
            // The runlevel link must name an existing init script.
            if g.exists(&p) {
                enabled = true;
                f.evidence.push(p);
            } else {
                f.evidence.push(format!("{p} dangles: no init script"));
            }
        }
        f.enabled = Some(enabled);
    } else if bsd {
        f.init_system = Some("rc.d".into());
        let mut v = None;
        for p in ["/etc/rc.conf", "/etc/rc.conf.local"] {
            if let Some(t) = g.read_text(p)
                && let Some(e) = rc_conf_sshd(&t)
            {
                v = Some(e);
                f.evidence
                    .push(format!("{p}: sshd_enable={}", if e { "YES" } else { "NO" }));
            }
        }
        f.enabled = Some(v.unwrap_or(false));
    } else if g.exists("/etc/inittab") || g.exists("/etc/rc2.d") || g.exists("/etc/init.d") {
        f.init_system = Some("sysvinit".into());
        let mut enabled = false;
        for rl in 2..=5 {
            let d = format!("/etc/rc{rl}.d");
            for e in g.list_dir(&d) {
                if e.starts_with('S') && e.contains("ssh") {
                    enabled = true;
                    f.evidence.push(format!("{d}/{e}"));
                }
            }
        }
        f.enabled = Some(enabled);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_conf() {
        assert_eq!(
            rc_conf_sshd("hostname=x\nsshd_enable=\"YES\"\n"),
            Some(true)
        );
        assert_eq!(
            rc_conf_sshd("sshd_enable=YES\nsshd_enable=\"NO\"\n"),
            Some(false)
        );
        assert_eq!(rc_conf_sshd("#sshd_enable=YES\n"), None);
    }

    #[test]
    fn unit_file_deps() {
        let t = "[Unit]\nDescription=Graphical Interface\nRequires=multi-user.target\nWants=display-manager.service a.service\nConflicts=rescue.target\n";
        assert_eq!(
            unit_deps(t),
            ["multi-user.target", "display-manager.service", "a.service"]
        );
    }
}
