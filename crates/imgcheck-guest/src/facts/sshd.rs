//! The SSH daemon: installed, and enabled at boot under the init system we
//! recognise (systemd, OpenRC, sysvinit, BSD rc.d).

use crate::report::{OsFacts, SshdFacts};
use crate::root::{Guest, Kind};

const BINARIES: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/sshd",
    "/usr/local/sbin/sshd",
    "/sbin/sshd",
];
const UNITS: &[&str] = &["ssh.service", "sshd.service", "ssh.socket", "sshd.socket"];
/// Directories whose `*.wants/` subdirectories enable units.
const WANTS_ROOTS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

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
        let mut masked = Vec::new();
        for u in UNITS {
            let p = format!("/etc/systemd/system/{u}");
            if g.read_link(&p).is_some_and(|t| t == "/dev/null") {
                masked.push(*u);
                f.evidence.push(format!("{p} -> /dev/null (masked)"));
            }
        }
        let mut enabled = false;
        for root in WANTS_ROOTS {
            for d in g
                .list_dir(root)
                .into_iter()
                .filter(|d| d.ends_with(".wants"))
            {
                for u in UNITS {
                    let p = format!("{root}/{d}/{u}");
                    if g.lstat(&p).is_some() {
                        f.evidence.push(p);
                        if !masked.contains(u) {
                            enabled = true;
                        }
                    }
                }
            }
        }
        f.enabled = Some(enabled);
    } else if openrc {
        f.init_system = Some("openrc".into());
        let mut enabled = false;
        for rl in ["default", "boot", "sysinit"] {
            let p = format!("/etc/runlevels/{rl}/sshd");
            if g.lstat(&p).is_some() {
                enabled = true;
                f.evidence.push(p);
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
}
