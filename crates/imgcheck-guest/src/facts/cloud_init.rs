//! Is cloud-init installed, which version, and which alternatives are
//! present.
//!
//! The version comes, most precise first, from cloud-init's own Python
//! package (`cloudinit/version.py`; from 26.1 on the meson-generated
//! `cloudinit/meson_versions.py`), its Python metadata (egg-info /
//! dist-info), then the dpkg, apk, pacman and rpm databases. Every RPM
//! build of cloud-init (CentOS 7 to RHEL 10, Fedora, openSUSE) installs
//! version.py and egg-info, which answer first; the rpm database answers
//! when they are gone but the package is still registered
//! ([`super::rpmdb`]: SQLite `rpmdb.sqlite` and the Berkeley DB `Packages`
//! of CentOS/RHEL 7 and 8). openSUSE's ndb is not read: there that case
//! stays `cloud_init.version_unknown`, with a note saying so, never a
//! wrong version.

use crate::report::CloudInitFacts;
use crate::root::{Guest, Kind};

/// Package databases can be large; the cap is higher than for config files.
const PKGDB_CAP: u64 = 64 * 1024 * 1024;
/// Most python3.* directories looked into per lib directory.
const MAX_PY_DIRS: usize = 32;

/// Value of `NAME = "value"` (or single quotes) in a Python source file.
pub fn py_assign(text: &str, name: &str) -> Option<String> {
    for l in text.lines().take(10_000) {
        let l = l.trim();
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        let Some(v) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let v = v.trim();
        for q in ['"', '\''] {
            if let Some(inner) = v.strip_prefix(q).and_then(|r| r.split(q).next()) {
                return Some(inner.to_owned());
            }
        }
    }
    None
}

/// A version string that is a real value, not a build placeholder.
fn real(v: Option<String>) -> Option<String> {
    v.filter(|v| {
        !v.is_empty() && !v.starts_with('@') && v.chars().next().is_some_and(|c| c.is_ascii_digit())
    })
}

/// The version in a `version.py` / `meson_versions.py` pair.
pub fn version_from_python(version_py: Option<&str>, meson_py: Option<&str>) -> Option<String> {
    if let Some(m) = meson_py
        && let Some(v) = real(py_assign(m, "UPSTREAM_VERSION"))
    {
        return Some(v);
    }
    let v = version_py?;
    real(py_assign(v, "__VERSION__"))
        .or_else(|| real(py_assign(v, "_PACKAGED_VERSION")))
        .or_else(|| real(py_call_arg(v, "StrictVersion")))
        .or_else(|| real(py_call_arg(v, "LooseVersion")))
}

/// The string argument of the first `NAME("value")` call in Python source:
/// cloud-init up to 0.7.6 wrote its version as
/// `vr.StrictVersion("0.7.5")` (CentOS 7's package).
pub fn py_call_arg(text: &str, name: &str) -> Option<String> {
    for l in text.lines().take(10_000) {
        let Some(at) = l.find(name) else { continue };
        let rest = l.get(at + name.len()..)?.trim_start();
        let Some(rest) = rest.strip_prefix('(') else {
            continue;
        };
        let rest = rest.trim_start();
        for q in ['"', '\''] {
            if let Some(inner) = rest.strip_prefix(q).and_then(|r| r.split(q).next()) {
                return Some(inner.to_owned());
            }
        }
    }
    None
}

/// `Version:` of an installed package in a dpkg status file.
pub fn dpkg_version(status: &str, package: &str) -> Option<String> {
    for para in status.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut installed = true;
        for l in para.lines() {
            if let Some(v) = l.strip_prefix("Package:") {
                name = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Version:") {
                version = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Status:") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if name == Some(package) && installed {
            return version.map(str::to_owned);
        }
    }
    None
}

/// `V:` of package `P:` in an apk `installed` database.
pub fn apk_version(db: &str, package: &str) -> Option<String> {
    for para in db.split("\n\n") {
        let mut name = None;
        let mut version = None;
        for l in para.lines() {
            if let Some(v) = l.strip_prefix("P:") {
                name = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("V:") {
                version = Some(v.trim());
            }
        }
        if name == Some(package) {
            return version.map(str::to_owned);
        }
    }
    None
}

/// `%VERSION%` of a pacman `desc` file.
pub fn pacman_version(desc: &str) -> Option<String> {
    let mut lines = desc.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "%VERSION%" {
            return lines
                .next()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
        }
    }
    None
}

/// `Version:` of Python package metadata (METADATA / PKG-INFO headers).
pub fn metadata_version(text: &str) -> Option<String> {
    text.lines()
        .take(200)
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Python package directories that may hold `cloudinit/`.
fn python_dirs(g: &Guest) -> Vec<String> {
    let mut out = vec!["/usr/lib/python3/dist-packages".to_owned()];
    for base in ["/usr/lib", "/usr/lib64", "/usr/local/lib"] {
        // python2.7 too: CentOS 7 and other old images run cloud-init on
        // Python 2.
        for d in g
            .list_dir(base)
            .into_iter()
            .filter(|d| d.starts_with("python3") || d.starts_with("python2"))
            .take(MAX_PY_DIRS)
        {
            for sub in ["dist-packages", "site-packages"] {
                let p = format!("{base}/{d}/{sub}");
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Reads the cloud-init facts (datasource fields are filled elsewhere).
pub fn gather(g: &Guest) -> CloudInitFacts {
    let mut f = CloudInitFacts::default();
    let pydirs = python_dirs(g);
    for d in &pydirs {
        let vp = format!("{d}/cloudinit/version.py");
        let mp = format!("{d}/cloudinit/meson_versions.py");
        let v = g.read_text(&vp);
        let m = g.read_text(&mp);
        if v.is_none() && m.is_none() {
            continue;
        }
        f.installed = true;
        if let Some(ver) = version_from_python(v.as_deref(), m.as_deref()) {
            f.version = Some(ver);
            f.version_source = Some(if m.is_some() { mp } else { vp });
            break;
        }
    }
    // Python package metadata (pip / setuptools installs, some RPMs).
    if f.version.is_none() {
        'dirs: for d in &pydirs {
            for e in g.list_dir(d) {
                let meta = if e.starts_with("cloud_init-") && e.ends_with(".dist-info") {
                    "METADATA"
                } else if e.starts_with("cloud_init-") && e.ends_with(".egg-info") {
                    "PKG-INFO"
                } else {
                    continue;
                };
                // A distutils install writes the egg-info as one file, not
                // a directory.
                let p = if matches!(g.stat(&format!("{d}/{e}")), Some(Kind::File(_))) {
                    format!("{d}/{e}")
                } else {
                    format!("{d}/{e}/{meta}")
                };
                if let Some(v) = g.read_text(&p).as_deref().and_then(metadata_version) {
                    f.installed = true;
                    f.version = Some(v);
                    f.version_source = Some(p);
                    break 'dirs;
                }
            }
        }
    }
    if f.version.is_none()
        && let Ok(Some(d)) = g.read_file("/var/lib/dpkg/status", PKGDB_CAP)
        && let Some(v) = dpkg_version(&String::from_utf8_lossy(&d), "cloud-init")
    {
        f.installed = true;
        f.version = Some(v);
        f.version_source = Some("/var/lib/dpkg/status".into());
    }
    if f.version.is_none()
        && let Ok(Some(d)) = g.read_file("/lib/apk/db/installed", PKGDB_CAP)
        && let Some(v) = apk_version(&String::from_utf8_lossy(&d), "cloud-init")
    {
        f.installed = true;
        f.version = Some(v);
        f.version_source = Some("/lib/apk/db/installed".into());
    }
    if f.version.is_none() {
        for e in g.list_dir("/var/lib/pacman/local") {
            // "cloud-init-23.1-1": name, then version-release.
            let Some(rest) = e.strip_prefix("cloud-init-") else {
                continue;
            };
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let p = format!("/var/lib/pacman/local/{e}/desc");
            if let Some(v) = g.read_text(&p).as_deref().and_then(pacman_version) {
                f.installed = true;
                f.version = Some(v);
                f.version_source = Some(p);
                break;
            }
        }
    }
    if f.version.is_none() {
        let rpm = super::rpmdb::lookup(g, &["cloud-init"]);
        for p in rpm.problems {
            g.note_problem(p);
        }
        if let (Some(src), Some(p)) = (rpm.source, rpm.packages.first()) {
            f.installed = true;
            f.version = Some(p.evr());
            f.version_source = Some(src);
        }
    }
    if !f.installed {
        f.installed = ["/usr/bin/cloud-init", "/usr/local/bin/cloud-init"]
            .iter()
            .any(|p| g.exists(p));
    }

    // Alternatives, detected by files.
    let any = |paths: &[&str]| paths.iter().any(|p| g.exists(p));
    if any(&["/usr/bin/cloudbase-init", "/usr/local/bin/cloudbase-init"])
        || pydirs
            .iter()
            .any(|d| g.exists(&format!("{d}/cloudbaseinit")))
    {
        f.alternatives.push("cloudbase-init".into());
    }
    if any(&[
        "/usr/bin/coreos-cloudinit",
        "/usr/local/bin/coreos-cloudinit",
    ]) {
        f.alternatives.push("coreos-cloudinit".into());
    }
    if any(&[
        "/usr/lib/dracut/modules.d/30ignition",
        "/usr/lib/dracut/modules.d/35ignition",
        "/usr/bin/ignition",
        "/usr/lib/ignition/ignition",
    ]) || g
        .list_dir("/usr/lib/dracut/modules.d")
        .iter()
        .any(|m| m.contains("ignition"))
    {
        f.alternatives.push("ignition".into());
    }
    if any(&[
        "/usr/local/bin/bsd-cloudinit",
        "/usr/local/etc/rc.d/bsdcloudinit",
        "/usr/local/etc/rc.d/bsd-cloudinit",
        "/usr/local/bsd-cloudinit",
        "/root/bsd-cloudinit",
    ]) {
        f.alternatives.push("bsd-cloudinit".into());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_versions() {
        let v = "__VERSION__ = \"22.4.2\"\n_PACKAGED_VERSION = \"@@PACKAGED_VERSION@@\"\n";
        assert_eq!(
            version_from_python(Some(v), None).as_deref(),
            Some("22.4.2")
        );
        // 26.1+: version.py imports meson_versions.
        let v26 = "try:\n    from cloudinit import meson_versions\n    __VERSION__ = meson_versions.UPSTREAM_VERSION\nexcept ImportError:\n    __VERSION__ = \"@MISSING_MESON_BUILD_ARTIFACT@\"\n";
        let m = "UPSTREAM_VERSION = \"26.1\"\nDOWNSTREAM_VERSION = \"26.1-0ubuntu1\"\n";
        assert_eq!(
            version_from_python(Some(v26), Some(m)).as_deref(),
            Some("26.1")
        );
        assert_eq!(version_from_python(Some(v26), None), None);
        assert_eq!(
            version_from_python(Some("version = '0.7.5'\n__VERSION__ = '0.7.5'"), None).as_deref(),
            Some("0.7.5")
        );
        // CentOS 7's cloud-init 0.7.5.
        let c7 = "from distutils import version as vr\n\n\ndef version():\n    return vr.StrictVersion(\"0.7.5\")\n";
        assert_eq!(
            version_from_python(Some(c7), None).as_deref(),
            Some("0.7.5")
        );
    }

    #[test]
    fn package_dbs() {
        let s = "Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.2\n\nPackage: cloud-init\nStatus: install ok installed\nVersion: 22.4.2-1\n";
        assert_eq!(dpkg_version(s, "cloud-init").as_deref(), Some("22.4.2-1"));
        let s2 = "Package: cloud-init\nStatus: deinstall ok config-files\nVersion: 20.1\n";
        assert_eq!(dpkg_version(s2, "cloud-init"), None);
        let a = "C:Q1x\nP:musl\nV:1.2\n\nC:Q1y\nP:cloud-init\nV:23.1.1-r0\nA:noarch\n";
        assert_eq!(apk_version(a, "cloud-init").as_deref(), Some("23.1.1-r0"));
        assert_eq!(
            pacman_version("%NAME%\ncloud-init\n\n%VERSION%\n23.1-1\n").as_deref(),
            Some("23.1-1")
        );
    }
}
