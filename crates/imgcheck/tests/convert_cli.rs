//! `imgcheck convert` on every `kind=disk` fixture, checked by the real
//! tools: `-O qcow2` must pass `qemu-img check` and read back (through
//! `qemu-img convert -O raw`) as the fixture's reference raw; `--compress
//! gzip` must pass `gzip -t` and `gzip -dc` must equal the reference;
//! `--compress bzip2` likewise with bzip2; `-O qcow2 --compress gzip` must
//! pass `gzip -t` and gunzip to a qcow2 that passes the qcow2 checks. A missing tool fails the test.
//! qcow2 and gzip run on every fixture; the slower bzip2 and qcow2.gz
//! outputs run on the first fixture of each fixture directory (one per
//! input format and container), which keeps the suite within CI's budget.
//! Every disk fixture must be readable by imgcheck: one that is not fails
//! the test (no skips).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Fixture, fixtures, imgcheck, sha256_file};

/// Asserts imgcheck reads this fixture: every `kind=disk` fixture is in a
/// format imgcheck reads, so one it cannot read is a failure, not a skip.
fn assert_readable(f: &Fixture) {
    let p = f.path.to_str().expect("utf-8 path");
    let out = imgcheck(&["info", p]);
    assert!(
        out.status.success(),
        "{}: imgcheck info failed: {}",
        f.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True for the first fixture of its directory (`qcow2/`, `vmdk/`, ...).
fn representative(f: &Fixture, seen: &mut std::collections::HashSet<String>) -> bool {
    let dir = f.name().split('/').next().unwrap_or("").to_owned();
    seen.insert(dir)
}

fn tool(name: &str) -> Command {
    let probe = Command::new(name).arg("--version").output();
    assert!(
        probe.is_ok(),
        "{name} is required for this test (tools/install-deps)"
    );
    Command::new(name)
}

/// SHA-256 of a command's stdout, streamed; the command must succeed.
fn sha256_of_stdout(mut cmd: Command) -> String {
    use sha2::{Digest, Sha256};
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    assert!(child.wait().expect("wait").success(), "{cmd:?} failed");
    format!("{:x}", h.finalize())
}

fn convert_ok(args: &[&str]) {
    let out = imgcheck(args);
    assert!(
        out.status.success(),
        "imgcheck {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn qcow2_output_passes_qemu_img_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for f in fixtures("disk") {
        assert_readable(&f);
        let reference = f
            .reference
            .as_ref()
            .expect("disk fixtures have a reference");
        let q = dir.path().join("out.qcow2");
        let _ = std::fs::remove_file(&q);
        convert_ok(&["convert", "-q", "-O", "qcow2", s(&f.path), s(&q)]);
        let check = tool("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&q)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success() && text.contains("No errors were found"),
            "{}: qemu-img check: {text}{}",
            f.name(),
            String::from_utf8_lossy(&check.stderr)
        );
        let raw = dir.path().join("back.raw");
        let st = tool("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&q)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            sha256_file(&raw),
            sha256_file(reference),
            "{}: qcow2 guest bytes",
            f.name()
        );
        std::fs::remove_file(&raw).unwrap();
        if !representative(&f, &mut seen) {
            continue;
        }

        // The same through gzip: gzip -t passes, and gunzip gives a qcow2
        // that passes the same checks.
        let gz = dir.path().join("out.qcow2.gz");
        let _ = std::fs::remove_file(&gz);
        convert_ok(&[
            "convert",
            "-q",
            "-O",
            "qcow2",
            "--compress",
            "gzip",
            s(&f.path),
            s(&gz),
        ]);
        let t = tool("gzip").arg("-t").arg(&gz).output().unwrap();
        assert!(
            t.status.success() && t.stderr.is_empty(),
            "{}: gzip -t: {}",
            f.name(),
            String::from_utf8_lossy(&t.stderr)
        );
        let plain = std::fs::File::create(&q).unwrap();
        let st = tool("gzip")
            .arg("-dc")
            .arg(&gz)
            .stdout(plain)
            .status()
            .unwrap();
        assert!(st.success());
        let check = tool("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&q)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}: qemu-img check of gunzipped qcow2",
            f.name()
        );
        let st = tool("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&q)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            sha256_file(&raw),
            sha256_file(reference),
            "{}: qcow2.gz guest bytes",
            f.name()
        );
        std::fs::remove_file(&raw).unwrap();
    }
}

#[test]
fn gzip_and_bzip2_outputs_pass_the_tools() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for f in fixtures("disk") {
        assert_readable(&f);
        let want = sha256_file(f.reference.as_ref().expect("reference"));
        let tools: &[(&str, &str)] = if representative(&f, &mut seen) {
            &[("gzip", "gzip"), ("bzip2", "bzip2")]
        } else {
            &[("gzip", "gzip")]
        };
        for &(flag, prog) in tools {
            let o = dir.path().join(format!("out.{flag}"));
            let _ = std::fs::remove_file(&o);
            convert_ok(&["convert", "-q", "--compress", flag, s(&f.path), s(&o)]);
            let t = tool(prog).arg("-t").arg(&o).output().unwrap();
            assert!(
                t.status.success() && t.stderr.is_empty(),
                "{}: {prog} -t: {}",
                f.name(),
                String::from_utf8_lossy(&t.stderr)
            );
            let mut dc = tool(prog);
            dc.arg("-dc").arg(&o);
            assert_eq!(sha256_of_stdout(dc), want, "{}: {prog} -dc", f.name());
        }
    }
}

#[test]
fn for_linode_names_and_refuses_overwrite() {
    let f = fixtures("disk").into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("disk.raw");
    std::fs::copy(&f.path, &input).unwrap();
    let out = imgcheck(&["convert", "--for", "linode", "--json", s(&input)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gz = dir.path().join("disk.img.gz");
    assert_eq!(v["output"], s(&gz));
    assert_eq!(v["format"], "raw+gzip");
    assert!(gz.exists());
    // A second run must not overwrite without --force.
    let again = imgcheck(&["convert", "--for", "linode", s(&input)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    convert_ok(&["convert", "--for", "linode", "--force", "-q", s(&input)]);
    // DigitalOcean: gzip-compressed qcow2 next to the input, path printed.
    let out = imgcheck(&["convert", "--for", "digitalocean", s(&input)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = dir.path().join("disk.qcow2.gz");
    assert!(String::from_utf8_lossy(&out.stdout).contains(s(&q)));
    assert!(q.exists());
}

/// An input cut in half fails mid-way (the header and tables are at the
/// front, data clusters further in); nothing is left in the output
/// directory (no finished-looking file, no temp file). The input is the
/// first disk fixture converted to qcow2 by qemu-img (a raw file cannot be
/// short); the library test `read_error_leaves_no_output` covers the same
/// with a failing source.
#[test]
fn truncated_input_leaves_no_output() {
    let f = fixtures("disk").into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.qcow2");
    let st = tool("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&f.path)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let info = imgcheck(&["info", s(&img)]);
    assert!(
        info.status.success(),
        "imgcheck info {}: {}",
        img.display(),
        String::from_utf8_lossy(&info.stderr)
    );
    let len = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let outdir = tempfile::tempdir().unwrap();
    for args in [
        &["-O", "qcow2"][..],
        &["--compress", "gzip"],
        &["--compress", "bzip2"],
        &["-O", "raw"],
    ] {
        let o = outdir.path().join("out");
        let mut a = vec!["convert", "-q"];
        a.extend_from_slice(args);
        a.extend([s(&img), s(&o)]);
        let out = imgcheck(&a);
        assert!(
            !out.status.success(),
            "{args:?}: a truncated input must fail"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("not supported"), "{args:?}: {err}");
        let left: Vec<_> = std::fs::read_dir(outdir.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?}: left behind {left:?}");
    }
}
