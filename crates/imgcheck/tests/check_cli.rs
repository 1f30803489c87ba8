//! `imgcheck [check] IMAGE...` end to end: the built binary on the fixtures
//! of tools/gen-fixtures (testdata/generated/manifest.tsv).
//!
//! * exit status: 0 all pass, 1 some verdict fails (damaged images too), 2
//!   an image could not be checked (missing file) or bad usage;
//! * `--json` parses and has every field docs/check-json.md documents;
//! * damaged copies of fixtures (truncated, bit-flipped) give verdicts, never
//!   a panic or exit 2;
//! * the guest fixtures give exactly the DigitalOcean codes their manifest
//!   notes expect (`expected=...`, written by tools/fixtures/50-guests.sh).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::{Fixture, imgcheck, manifest};
use serde_json::Value;

/// Runs imgcheck with `args`, asserting it did not crash.
fn run(args: &[&str]) -> Output {
    let out = imgcheck(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{args:?} panicked:\n{stderr}"
    );
    assert!(
        out.status.code().is_some(),
        "{args:?} was killed by a signal"
    );
    out
}

/// Runs `imgcheck --json ARGS` and parses stdout.
fn run_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not JSON ({e}):\n{text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// docs/check-report.schema.json, compiled once.
fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/check-report.schema.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        jsonschema::validator_for(&v)
            .unwrap_or_else(|e| panic!("{}: not a valid JSON Schema: {e}", path.display()))
    })
}

/// Asserts `doc` (a report, an error object, or an array of them) validates
/// against docs/check-report.schema.json.
fn assert_valid(doc: &Value) {
    let errors: Vec<String> = schema()
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid against docs/check-report.schema.json:\n{}\n{doc}",
        errors.join("\n")
    );
}

/// Asserts `report` validates against the schema, plus what a schema
/// cannot say: `pass` agrees with the findings, and inspection ran exactly
/// when the image opened.
fn assert_schema(report: &Value) {
    assert_valid(report);
    assert!(
        report["image"].is_object(),
        "a report, not an error: {report}"
    );
    let opened = report["image"]["error"].is_null();
    assert_eq!(report["partitions"].is_object(), opened, "{report}");
    assert_eq!(report["guest"].is_object(), opened, "{report}");
    for v in report["verdicts"].as_array().expect("verdicts array") {
        let has_error = v["findings"]
            .as_array()
            .expect("findings array")
            .iter()
            .any(|f| f["severity"] == "error");
        assert_eq!(v["pass"].as_bool(), Some(!has_error), "{v}");
    }
}

fn verdict<'a>(report: &'a Value, provider: &str) -> &'a Value {
    report["verdicts"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["provider"] == provider))
        .unwrap_or_else(|| panic!("no {provider} verdict in {report}"))
}

fn codes(v: &Value) -> BTreeSet<String> {
    v["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn all_pass(report: &Value) -> bool {
    report["verdicts"]
        .as_array()
        .is_some_and(|vs| vs.iter().all(|v| v["pass"] == true))
}

fn disk_fixtures() -> Vec<Fixture> {
    let all: Vec<Fixture> = manifest()
        .into_iter()
        .filter(|f| f.kind == "disk")
        .collect();
    assert!(!all.is_empty(), "manifest has no disk fixtures");
    all
}

fn guest_fixtures() -> Vec<Fixture> {
    let all: Vec<Fixture> = manifest()
        .into_iter()
        .filter(|f| f.kind == "guest")
        .collect();
    assert!(
        !all.is_empty(),
        "manifest has no guest fixtures: run tools/gen-fixtures (tools/fixtures/50-guests.sh)"
    );
    all
}

/// The `key=value` of a fixture's ';'-separated notes.
fn note<'a>(f: &'a Fixture, key: &str) -> Option<&'a str> {
    f.notes
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

fn guest(name: &str) -> Fixture {
    guest_fixtures()
        .into_iter()
        .find(|f| f.path.file_stem().is_some_and(|s| s == name))
        .unwrap_or_else(|| panic!("no guest fixture {name}"))
}

#[test]
fn every_disk_fixture_gives_a_report_in_argument_order() {
    let fixtures = disk_fixtures();
    let paths: Vec<&str> = fixtures.iter().map(|f| path_str(&f.path)).collect();
    let (code, doc) = run_json(&paths);
    let reports = doc.as_array().expect("several images give an array");
    assert_eq!(reports.len(), fixtures.len());
    for (f, r) in fixtures.iter().zip(reports) {
        assert_eq!(r["image"]["path"], path_str(&f.path), "argument order");
        assert_schema(r);
        let providers: Vec<&str> = r["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["provider"].as_str())
            .collect();
        assert_eq!(providers, ["digitalocean", "linode", "kakaocloud"]);
        // Whether each format opens is tests/formats.rs's business; when
        // it does, the format is the manifest's.
        if r["image"]["error"].is_null() {
            let format = r["image"]["format"].as_str().unwrap_or("");
            assert_eq!(format, f.format, "{}", f.name());
        }
    }
    let want = if reports.iter().all(all_pass) { 0 } else { 1 };
    assert_eq!(code, want);
}

#[test]
fn human_output_has_verdicts_summary_and_no_colour_in_a_pipe() {
    let good = guest("good");
    let blank = disk_fixtures()
        .into_iter()
        .find(|f| f.path.ends_with("base/pattern.raw"))
        .expect("base/pattern.raw");
    let out = run(&[path_str(&good.path), path_str(&blank.path)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no ANSI colours when stdout is a pipe"
    );
    // One verdict line per provider per image.
    for p in ["digitalocean", "linode", "kakaocloud"] {
        let lines = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                (t.starts_with("PASS ") || t.starts_with("FAIL ")) && t.contains(p)
            })
            .count();
        assert_eq!(lines, 2, "{p}:\n{text}");
    }
    // The blank disk fails DigitalOcean with a hint.
    assert!(text.contains("partition_table.missing"), "{text}");
    assert!(text.contains("hint: "), "{text}");
    assert!(
        text.trim_end().ends_with("0 passed, 2 failed"),
        "summary line:\n{text}"
    );
}

#[test]
fn check_subcommand_and_default_command_agree() {
    let good = guest("good");
    let p = path_str(&good.path);
    let a = run(&["--json", "-p", "do", p]);
    let b = run(&["check", "--json", "--provider", "digitalocean", p]);
    let strip = |o: &Output| {
        let mut v: Value = serde_json::from_slice(&o.stdout).expect("json");
        v["stats"] = Value::Null;
        v
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a.status.code(), b.status.code());
}

#[test]
fn provider_selection() {
    let good = guest("good");
    let p = path_str(&good.path);
    let (_, v) = run_json(&["--provider", "linode", p]);
    assert_eq!(v["verdicts"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["verdicts"][0]["provider"], "linode");
    let (_, v) = run_json(&["-p", "kakaocloud,digitalocean", p]);
    let ps: Vec<&str> = v["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["provider"].as_str())
        .collect();
    assert_eq!(ps, ["kakaocloud", "digitalocean"]);
    let out = run(&["--provider", "aws", p]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown provider is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("aws"));
}

#[test]
fn missing_file_exits_2() {
    let out = run(&["/nonexistent/imgcheck/disk.img"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("disk.img"), "{stderr}");
    // With a good image beside it: still 2 (never "some failed" when some
    // were not checked), and the good one is still reported.
    let good = guest("good");
    let (code, v) = run_json(&[path_str(&good.path), "/nonexistent/imgcheck/disk.img"]);
    assert_eq!(code, 2);
    let arr = v.as_array().expect("array");
    assert_schema(&arr[0]);
    assert_eq!(arr[1]["image"]["path"], "/nonexistent/imgcheck/disk.img");
    assert!(arr[1]["error"]["message"].is_string(), "{v}");
}

/// A copy of `src` in `dir` with `f` applied to its bytes.
fn damaged_copy(dir: &Path, src: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    f(&mut bytes);
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Non-raw disk fixtures that are a single file (a raw file has no
/// structure to damage; multi-file VMDKs would need their extents copied).
fn single_file_structured_fixtures() -> Vec<Fixture> {
    disk_fixtures()
        .into_iter()
        .filter(|f| f.format != "raw")
        .filter(|f| {
            let (_, v) = run_json(&[path_str(&f.path)]);
            v["image"]["external_refs"]
                .as_array()
                .is_some_and(Vec::is_empty)
        })
        .collect()
}

/// `qemu-img check -f FMT PATH` found corruption (exit 1: could not finish,
/// 2: corruptions; 3 means leaked clusters only, which is not damage).
fn qemu_finds_damage(format: &str, path: &Path) -> bool {
    let st = std::process::Command::new("qemu-img")
        .args(["check", "-q", "-f", format, path_str(path)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("qemu-img is required (install qemu-utils; tools/install-deps does)");
    matches!(st.code(), Some(1 | 2))
}

/// Asserts every verdict of `v` fails with `image.corrupt`.
fn assert_corrupt_everywhere(name: &str, code: i32, v: &Value) {
    assert_eq!(code, 1, "{name}: a damaged image is a failing verdict: {v}");
    for p in ["digitalocean", "linode", "kakaocloud"] {
        let d = verdict(v, p);
        assert_eq!(d["pass"], false, "{name} {p}: {d}");
        assert!(codes(d).contains("image.corrupt"), "{name} {p}: {d}");
    }
}

#[test]
fn truncated_images_fail_with_image_corrupt() {
    let fixtures = single_file_structured_fixtures();
    assert!(
        !fixtures.is_empty(),
        "no single-file non-raw disk fixture to damage"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut qemu_flagged = 0;
    for f in &fixtures {
        let len = std::fs::metadata(&f.path).unwrap().len();
        let file = f.path.file_name().unwrap().to_string_lossy();
        // A cut through the header is always damage.
        let name = format!("head-{file}");
        let p = damaged_copy(dir.path(), &f.path, &name, |b| {
            b.truncate(usize::try_from(len.min(4096) / 2).unwrap())
        });
        let (code, v) = run_json(&[path_str(&p)]);
        assert_schema(&v);
        assert_corrupt_everywhere(&name, code, &v);
        // A cut in the middle may only remove unused space (qemu-img
        // agrees then); when qemu-img check finds damage, so must we.
        let name = format!("half-{file}");
        let p = damaged_copy(dir.path(), &f.path, &name, |b| {
            b.truncate(usize::try_from(len / 2).unwrap())
        });
        let (code, v) = run_json(&[path_str(&p)]);
        assert_schema(&v);
        assert!(code == 0 || code == 1, "{name}: exit {code}");
        if qemu_finds_damage(&f.format, &p) {
            qemu_flagged += 1;
            assert_corrupt_everywhere(&name, code, &v);
        }
    }
    assert!(
        qemu_flagged > 0,
        "qemu-img check found no damage in any half-truncated fixture; the test checks nothing"
    );
}

#[test]
fn bit_flipped_images_never_crash() {
    let fixtures = single_file_structured_fixtures();
    let dir = tempfile::tempdir().unwrap();
    // A small deterministic generator (no dependency on a RNG crate).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut paths = Vec::new();
    for (n, f) in fixtures.iter().enumerate() {
        let len = std::fs::metadata(&f.path).unwrap().len();
        for k in 0..4 {
            // Flip 4 bits in the first 64 KiB, where headers and tables are.
            let flips: Vec<(u64, u8)> = (0..4)
                .map(|_| (next() % len.min(64 << 10), 1u8 << (next() % 8)))
                .collect();
            let name = format!("flip{n}-{k}");
            paths.push(damaged_copy(dir.path(), &f.path, &name, |b| {
                for (at, bit) in flips {
                    if let Some(byte) = b.get_mut(usize::try_from(at).unwrap()) {
                        *byte ^= bit;
                    }
                }
            }));
        }
    }
    let args: Vec<&str> = paths.iter().map(|p| path_str(p)).collect();
    let (code, v) = run_json(&args);
    assert!(
        code == 0 || code == 1,
        "bit flips give verdicts, not errors: {code}"
    );
    for r in v.as_array().unwrap() {
        assert_schema(r);
    }
}

#[test]
fn guest_fixtures_give_the_expected_digitalocean_codes() {
    let mut failures = Vec::new();
    for f in guest_fixtures() {
        let Some(expected) = note(&f, "expected") else {
            failures.push(format!("{}: no expected= in the notes", f.name()));
            continue;
        };
        let want: BTreeSet<String> = expected
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let (code, v) = run_json(&["-p", "digitalocean", path_str(&f.path)]);
        assert_schema(&v);
        let d = verdict(&v, "digitalocean");
        let got = codes(d);
        if got != want {
            failures.push(format!("{}: expected {want:?}, got {got:?}", f.name()));
        }
        let pass = d["pass"] == true;
        if code != if pass { 0 } else { 1 } {
            failures.push(format!("{}: exit {code} with pass={pass}", f.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn guest_fixtures_other_providers() {
    for f in guest_fixtures() {
        let (_, v) = run_json(&[path_str(&f.path)]);
        // Uncompressed raw: Linode always asks for gzip.
        assert!(
            codes(verdict(&v, "linode")).contains("compression.unsupported"),
            "{}",
            f.name()
        );
        // KakaoCloud's volume-only import is always said, never fails.
        let k = verdict(&v, "kakaocloud");
        assert!(
            codes(k).contains("kakaocloud.volume_import"),
            "{}",
            f.name()
        );
        for finding in k["findings"].as_array().unwrap() {
            if finding["severity"] == "warning"
                && !finding["code"].as_str().unwrap_or("").starts_with("boot.")
                && !finding["code"].as_str().unwrap_or("").starts_with("image.")
            {
                assert!(
                    finding["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("UNCONFIRMED"),
                    "{}: {finding}",
                    f.name()
                );
            }
        }
    }
    let good = guest("good-unpartitioned");
    let (_, v) = run_json(&["-p", "linode", path_str(&good.path)]);
    assert_eq!(
        codes(verdict(&v, "linode")),
        set(&["compression.unsupported"])
    );
}

/// The hint's promise: `imgcheck convert --for linode` makes an image Linode
/// takes.
#[test]
fn converted_for_linode_passes_linode() {
    let good = guest("good-unpartitioned");
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("good.img.gz");
    let out = run(&[
        "convert",
        "--for",
        "linode",
        "-q",
        path_str(&good.path),
        path_str(&out_path),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, v) = run_json(&["-p", "linode", path_str(&out_path)]);
    assert_schema(&v);
    assert_eq!(v["image"]["compression"], "gzip");
    assert_eq!(codes(verdict(&v, "linode")), BTreeSet::new(), "{v}");
    assert_eq!(code, 0);
}

fn bad_compressed(name: &str) -> Fixture {
    manifest()
        .into_iter()
        .find(|f| f.kind == "badcompressed" && f.path.file_name().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no badcompressed fixture {name}"))
}

#[test]
fn damaged_compressed_files_fail_with_image_corrupt() {
    for name in ["truncated.img.gz", "badcrc.img.gz", "badblock.img.bz2"] {
        let f = bad_compressed(name);
        let (code, v) = run_json(&[path_str(&f.path)]);
        assert_schema(&v);
        assert_eq!(code, 1, "{name}: {v}");
        for p in ["digitalocean", "linode", "kakaocloud"] {
            assert!(
                codes(verdict(&v, p)).contains("image.corrupt"),
                "{name} {p}: {v}"
            );
        }
    }
}

#[test]
fn xz_is_refused_by_digitalocean_and_linode() {
    let f = bad_compressed("gpt-ext4.img.xz");
    let (code, v) = run_json(&[path_str(&f.path)]);
    assert_schema(&v);
    assert_eq!(code, 1);
    assert_eq!(v["image"]["compression"], "xz");
    for p in ["digitalocean", "linode"] {
        assert!(
            codes(verdict(&v, p)).contains("compression.unsupported"),
            "{p}: {v}"
        );
    }
    let d = verdict(&v, "digitalocean");
    let f = d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "compression.unsupported")
        .unwrap();
    assert!(f["message"].as_str().unwrap().contains("xz"), "{f}");
}

/// A decompression bomb costs the limit and gives a failing verdict, not an
/// error (library call with a small limit: the CLI's default is 100 GB).
#[test]
fn decompression_limit_is_a_verdict() {
    let f = bad_compressed("bomb.img.gz");
    let mut options = imgcheck::CheckOptions::default();
    options.open.max_uncompressed = Some(64 << 20);
    let r = imgcheck::check(path_str(&f.path), &options).expect("a report");
    let e = r.image.error.as_ref().expect("open error");
    assert_eq!(e.kind, imgcheck::rules::ImageErrorKind::TooLarge);
    assert!(
        e.uncompressed_at_least.is_some_and(|n| n > 64 << 20),
        "{e:?}"
    );
    assert!(!r.pass());
    for v in &r.verdicts {
        assert!(v.codes().contains(&"image.unreadable"), "{v:?}");
    }
}

/// gzip and bzip2 are read in place: the guest inside is checked.
#[test]
fn compressed_images_are_checked_inside() {
    for name in ["gpt-ext4.img.gz", "gpt-ext4.img.bz2"] {
        let f = disk_fixtures()
            .into_iter()
            .find(|f| f.path.file_name().is_some_and(|n| n == name))
            .unwrap_or_else(|| panic!("no disk fixture {name}"));
        let (_, v) = run_json(&[path_str(&f.path)]);
        assert_schema(&v);
        assert!(v["image"]["error"].is_null(), "{name}: {v}");
        assert_eq!(v["partitions"]["kind"], "gpt", "{name}");
        let d = codes(verdict(&v, "digitalocean"));
        assert!(!d.contains("compression.unsupported"), "{name}: {d:?}");
        let l = codes(verdict(&v, "linode"));
        assert_eq!(
            l.contains("compression.unsupported"),
            name.ends_with(".bz2"),
            "{name}: {l:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["check"][..],
        &["check", "--json"][..],
        &["--no-such-flag", "x.img"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// A VMDK whose data is in a second file: DigitalOcean and Linode fetch one
/// file (error), KakaoCloud is written with the user's tools (warning).
#[test]
fn split_vmdk_is_an_external_reference() {
    let f = disk_fixtures()
        .into_iter()
        .find(|f| f.path.ends_with("vmdk/pattern-monolithicFlat.vmdk"))
        .expect("vmdk/pattern-monolithicFlat.vmdk");
    let (code, v) = run_json(&[path_str(&f.path)]);
    assert_schema(&v);
    assert_eq!(code, 1);
    let severity = |p: &str| {
        verdict(&v, p)["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "image.external_reference")
            .map(|f| f["severity"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(severity("digitalocean").as_deref(), Some("error"), "{v}");
    assert_eq!(severity("linode").as_deref(), Some("error"), "{v}");
    assert_eq!(severity("kakaocloud").as_deref(), Some("warning"), "{v}");
}

/// Every fixture of the manifest (disks, guests, damaged compressed files,
/// split VMDKs), checked in one run: the whole array validates against
/// docs/check-report.schema.json. The bzip2 bomb (105 GiB of zeros) would
/// cost minutes of decompression up to the CLI's 100 GB limit, so its
/// report comes from the library with a 64 MiB limit: the same struct the
/// CLI serialises.
#[test]
fn every_fixture_output_validates_against_the_json_schema() {
    let all = manifest();
    assert!(all.len() > 50, "manifest has only {} lines", all.len());
    let bomb = |p: &str| p.ends_with("bomb.img.bz2");
    let paths: Vec<&str> = all
        .iter()
        .map(|f| path_str(&f.path))
        .filter(|p| !bomb(p))
        .collect();
    let (_, doc) = run_json(&paths);
    let reports = doc.as_array().expect("several images give an array");
    assert_eq!(reports.len(), paths.len());
    assert_valid(&doc);
    let mut seen = BTreeSet::new();
    for r in reports {
        assert_schema(r);
        seen.extend(assert_documented_severities(r));
    }
    // The fixtures exercise most of the table; a shrinking coverage means
    // fixtures were lost.
    assert!(
        seen.len() >= 30,
        "only {} (provider, code) pairs seen: {seen:?}",
        seen.len()
    );

    let f = bad_compressed("bomb.img.bz2");
    let mut options = imgcheck::CheckOptions::default();
    options.open.max_uncompressed = Some(64 << 20);
    let r = imgcheck::check(path_str(&f.path), &options).expect("a report");
    let v = serde_json::to_value(&r).expect("report serialises");
    assert_schema(&v);
    assert_eq!(v["image"]["error"]["kind"], "too_large", "{v}");
}

/// Severity of each code per provider, typed from the table in
/// docs/check-json.md ("Finding codes"): DigitalOcean, Linode, KakaoCloud;
/// `-` = the profile has no such rule. `image.external_reference` is a
/// KakaoCloud warning, or an error when the image could not be opened
/// because of the reference (`we`).
const SEVERITIES: &[(&str, [&str; 3])] = &[
    ("image.corrupt", ["e", "e", "e"]),
    ("image.external_reference", ["e", "e", "we"]),
    ("image.unreadable", ["e", "e", "e"]),
    ("image.dirty", ["w", "w", "w"]),
    ("url.head_unsupported", ["e", "-", "-"]),
    ("format.unsupported", ["e", "e", "-"]),
    ("compression.unsupported", ["e", "e", "-"]),
    ("size.too_large", ["e", "e", "-"]),
    ("size.compressed_unknown", ["-", "i", "-"]),
    ("partition_table.missing", ["e", "-", "-"]),
    ("partition_table.present", ["-", "w", "-"]),
    ("partition_table.sector_size", ["w", "w", "w"]),
    ("filesystem.unsupported", ["e", "w", "-"]),
    ("filesystem.unconfirmed", ["w", "-", "-"]),
    ("os.not_found", ["e", "-", "w"]),
    ("guest.unverified", ["w", "-", "w"]),
    ("os.unsupported", ["e", "-", "-"]),
    ("cloud_init.missing", ["e", "i", "w"]),
    ("cloud_init.too_old", ["e", "-", "-"]),
    ("cloud_init.version_unknown", ["w", "-", "-"]),
    ("cloud_init.disabled", ["e", "i", "w"]),
    ("cloud_init.config_ignored", ["w", "-", "-"]),
    ("cloud_init.nocloud_before_configdrive", ["e", "-", "-"]),
    ("cloud_init.datasource_missing", ["w", "-", "-"]),
    ("cloud_init.nocloud_first_overridden", ["w", "-", "-"]),
    ("sshd.missing", ["e", "-", "w"]),
    ("sshd.not_enabled", ["e", "-", "-"]),
    ("sshd.enabled_unknown", ["w", "-", "-"]),
    ("boot.uefi_only", ["e", "-", "-"]),
    ("boot.no_bootloader", ["w", "-", "w"]),
    ("boot.no_kernel", ["w", "w", "w"]),
    ("kakaocloud.volume_import", ["-", "-", "i"]),
    ("kakaocloud.os_info", ["-", "-", "i"]),
    ("kakaocloud.os_info_incomplete", ["-", "-", "w"]),
];

/// Asserts every finding of `report` has its documented severity for its
/// provider; returns the (provider, code) pairs seen.
fn assert_documented_severities(report: &Value) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for v in report["verdicts"].as_array().expect("verdicts") {
        let p = v["provider"].as_str().expect("provider");
        let col = match p {
            "digitalocean" => 0,
            "linode" => 1,
            "kakaocloud" => 2,
            other => panic!("provider {other}"),
        };
        for f in v["findings"].as_array().expect("findings") {
            let code = f["code"].as_str().expect("code");
            let sev = f["severity"].as_str().expect("severity");
            let (_, row) = SEVERITIES
                .iter()
                .find(|(c, _)| *c == code)
                .unwrap_or_else(|| {
                    panic!("{code} is not in docs/check-json.md's table (nor this test's copy)")
                });
            let allowed = row[col];
            assert!(
                allowed != "-",
                "{p} gives {code}, which docs/check-json.md says it does not have: {report}"
            );
            assert!(
                allowed.contains(&sev[..1]),
                "{p} {code} is {sev}, docs/check-json.md says {allowed}"
            );
            seen.push((p.to_owned(), code.to_owned()));
        }
    }
    seen
}

/// The schema is not vacuous: a report with a key missing, an unknown key
/// or a wrong type is refused.
#[test]
fn the_json_schema_rejects_what_the_doc_does_not_allow() {
    let good = guest("good");
    let (_, v) = run_json(&[path_str(&good.path)]);
    assert_valid(&v);
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut w = v.clone();
        f(&mut w);
        w
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "no image.read_error",
            broken(&|w| {
                w["image"].as_object_mut().unwrap().remove("read_error");
            }),
        ),
        (
            "unknown top-level key",
            broken(&|w| w["extra"] = Value::Bool(true)),
        ),
        (
            "unknown guest key",
            broken(&|w| w["guest"]["os"]["codename"] = "x".into()),
        ),
        (
            "severity not in the enum",
            broken(&|w| {
                // KakaoCloud always has kakaocloud.volume_import.
                w["verdicts"][2]["findings"][0]["severity"] = "fatal".into();
            }),
        ),
        (
            "virtual_size as a string",
            broken(&|w| w["image"]["virtual_size"] = "1".into()),
        ),
        (
            "filesystem kind not documented",
            broken(&|w| w["filesystems"][0]["kind"] = "hfs".into()),
        ),
        (
            "min_disk_gb missing",
            broken(&|w| {
                w["guest"]["kakaocloud"]
                    .as_object_mut()
                    .unwrap()
                    .remove("min_disk_gb");
            }),
        ),
    ];
    for (what, doc) in cases {
        assert!(!schema().is_valid(&doc), "{what}: the schema accepted it");
    }
}

/// Runs imgcheck with `args` and `stdin`, returning (exit code, stdout
/// lines parsed as JSON, stderr).
fn run_jsonl(args: &[&str], stdin: &str) -> (i32, Vec<Value>, String) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imgcheck");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn paths_of(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| l["image"]["path"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `--jsonl --from FILE`: one schema-valid object per listed image (comments
/// and blank lines skipped), the summary on stderr, exit 2 because one is
/// missing. Expected verdicts from the manifest: good passes every
/// provider but Linode (not gzip), uefi-only fails DigitalOcean.
#[test]
fn jsonl_from_file_one_line_per_image_and_a_summary() {
    let good = guest("good");
    let uefi = guest("uefi-only");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("images.txt");
    std::fs::write(
        &list,
        format!(
            "# images to check\n{}\n\n  {}  \n/nonexistent/imgcheck/disk.img\n",
            path_str(&good.path),
            path_str(&uefi.path)
        ),
    )
    .unwrap();
    let (code, lines, stderr) = run_jsonl(
        &[
            "check",
            "--jsonl",
            "-p",
            "digitalocean",
            "--from",
            path_str(&list),
        ],
        "",
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        paths_of(&lines),
        set(&[
            path_str(&good.path),
            path_str(&uefi.path),
            "/nonexistent/imgcheck/disk.img"
        ])
    );
    for l in &lines {
        assert_valid(l);
        match l["image"]["path"].as_str() {
            Some(p) if p == path_str(&good.path) => assert!(all_pass(l), "{l}"),
            Some(p) if p == path_str(&uefi.path) => {
                assert!(
                    codes(verdict(l, "digitalocean")).contains("boot.uefi_only"),
                    "{l}"
                );
            }
            _ => assert!(l["error"]["message"].is_string(), "{l}"),
        }
    }
    let summary: Vec<&str> = stderr.lines().filter(|l| l.contains("checked")).collect();
    assert_eq!(summary.len(), 1, "{stderr}");
    assert!(
        summary[0].contains("3 images checked")
            && summary[0].contains("1 passed, 1 failed, 1 could not be checked"),
        "{stderr}"
    );
}

/// `--from -` reads the list from stdin, and positional images add to it;
/// the default command takes the flags too.
#[test]
fn jsonl_from_stdin_plus_arguments() {
    let good = guest("good");
    let mbr = guest("good-mbr");
    let (code, lines, stderr) = run_jsonl(
        &[
            "--jsonl",
            "-p",
            "kakaocloud",
            "--from",
            "-",
            path_str(&mbr.path),
        ],
        &format!("{}\n", path_str(&good.path)),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        paths_of(&lines),
        set(&[path_str(&good.path), path_str(&mbr.path)])
    );
    assert!(stderr.contains("2 images checked"), "{stderr}");
    assert!(
        stderr.contains("2 passed, 0 failed, 0 could not be checked"),
        "{stderr}"
    );
}

/// Lines come as each check finishes, at most `--jobs` at a time: a slow
/// URL (the server sleeps before every answer) listed first comes out last
/// with `-j 2`, and first with `-j 1` (one at a time, in list order).
#[test]
fn jsonl_prints_in_completion_order_with_bounded_jobs() {
    #[path = "../../imgcheck-source/tests/support/http_server.rs"]
    mod http_server;
    use http_server::{Behaviour, Content, Server};

    let good = guest("good");
    let server = Server::start(
        vec![("good.img", Content::File(good.path.clone()))],
        Behaviour {
            delay: Some(std::time::Duration::from_millis(150)),
            ..Default::default()
        },
    );
    let slow = server.url("good.img");
    let fast = path_str(&good.path);
    let first = |jobs: &str| {
        let (code, lines, stderr) = run_jsonl(
            &["--jsonl", "-p", "digitalocean", "-j", jobs, &slow, fast],
            "",
        );
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(lines.len(), 2);
        for l in &lines {
            assert_valid(l);
        }
        // A URL report carries head_supported (documented as optional).
        let url_line = lines
            .iter()
            .find(|l| l["image"]["path"] == slow.as_str())
            .unwrap();
        assert_eq!(url_line["image"]["head_supported"], true, "{url_line}");
        lines[0]["image"]["path"].as_str().unwrap_or("").to_owned()
    };
    assert_eq!(
        first("2"),
        fast,
        "with two jobs the local file finishes first"
    );
    assert_eq!(first("1"), slow, "with one job the list order is kept");
}

#[test]
fn batch_usage_errors() {
    let good = guest("good");
    for args in [
        &["check", "--jsonl"][..],
        &["check", "--json", "--jsonl", path_str(&good.path)][..],
        &["check", "-j", "0", path_str(&good.path)][..],
        &["check", "--from", "/nonexistent/imgcheck/list.txt"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing\n\n").unwrap();
    let out = run(&["check", "--from", path_str(&empty)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lists no image"));
}
