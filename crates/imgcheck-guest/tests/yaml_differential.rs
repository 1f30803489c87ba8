//! cloud.cfg YAML, imgcheck against PyYAML (what cloud-init uses).
//!
//! Every `*.cfg` under testdata/cloud-cfg (real cloud.cfg files from
//! cloud-init's packaging, and the probe forms of issue 10; see
//! testdata/cloud-cfg/SOURCES.md) is loaded by imgcheck and by
//! `python3 -c 'import yaml'` with cloud-init's `util.load_yaml` rules
//! (`safe_load`; an error or a non-mapping document means "ignored"). Both
//! must agree on whether the file is ignored, on `datasource_list` and on
//! `system_info.default_user.name`. python3 with PyYAML is required: a
//! missing one fails the test (tools/install-deps installs python3-yaml).

use std::path::{Path, PathBuf};
use std::process::Command;

use imgcheck_guest::facts::datasource::{load, parse_datasource_list, parse_default_user};

/// The Python side: one JSON line per file, values rendered the way
/// imgcheck renders non-strings (`!!null`, `!!bool true`, `!!int N`, ...).
const PY: &str = r#"
import datetime, json, sys, yaml

def render(v):
    if isinstance(v, str):
        return v
    if v is None:
        return "!!null"
    if isinstance(v, bool):
        return "!!bool " + ("true" if v else "false")
    if isinstance(v, int):
        return "!!int %d" % v
    if isinstance(v, float):
        return "!!float"
    if isinstance(v, (datetime.date, datetime.datetime)):
        return "!!timestamp"
    if isinstance(v, bytes):
        return "!!binary"
    if isinstance(v, list):
        return "!!seq"
    return "!!map"

for path in sys.argv[1:]:
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    out = {"path": path, "ignored": False, "ds": None, "user": None}
    try:
        cfg = yaml.safe_load(text)
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, dict):
            raise TypeError("not a dict")
    except (yaml.YAMLError, TypeError, ValueError):
        out["ignored"] = True
        cfg = {}
    ds = cfg.get("datasource_list")
    if isinstance(ds, list):
        out["ds"] = [render(i) for i in ds]
    elif ds is not None:
        out["ds"] = [render(ds)]
    si = cfg.get("system_info")
    du = si.get("default_user") if isinstance(si, dict) else None
    name = du.get("name") if isinstance(du, dict) else None
    if name is not None:
        out["user"] = render(name)
    print(json.dumps(out))
"#;

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/cloud-cfg");
    let mut out = Vec::new();
    for sub in ["distro", "probes"] {
        let dir = root.join(sub);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "cfg") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn imgcheck_agrees_with_pyyaml_safe_load() {
    let files = corpus();
    assert!(files.len() >= 25, "corpus too small: {}", files.len());
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for this test: {e}"));
    assert!(
        out.status.success(),
        "python3 with PyYAML is required (apt-get install python3-yaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    let mut bad = Vec::new();
    let (mut ignored, mut with_ds) = (0, 0);
    for (p, py) in files.iter().zip(&lines) {
        let text = String::from_utf8(std::fs::read(p).unwrap()).unwrap();
        let ours_ignored = load(&text).is_err();
        let ours_ds = parse_datasource_list(&text);
        let ours_user = parse_default_user(&text);
        let py_ignored = py["ignored"].as_bool().unwrap();
        let py_ds: Option<Vec<String>> = serde_json::from_value(py["ds"].clone()).unwrap();
        let py_user: Option<String> = serde_json::from_value(py["user"].clone()).unwrap();
        let name = p.file_name().unwrap().to_string_lossy();
        if ours_ignored != py_ignored {
            bad.push(format!(
                "{name}: ignored imgcheck={ours_ignored} ({:?}) pyyaml={py_ignored}",
                load(&text).err()
            ));
        }
        if ours_ds != py_ds {
            bad.push(format!(
                "{name}: datasource_list imgcheck={ours_ds:?} pyyaml={py_ds:?}"
            ));
        }
        if ours_user != py_user {
            bad.push(format!(
                "{name}: default_user imgcheck={ours_user:?} pyyaml={py_user:?}"
            ));
        }
        ignored += usize::from(py_ignored);
        with_ds += usize::from(py_ds.is_some());
    }
    // The corpus exercises both sides of every question.
    assert!(ignored >= 4, "only {ignored} ignored files");
    assert!(with_ds >= 10, "only {with_ds} files with a datasource_list");
    assert!(
        bad.is_empty(),
        "{} disagreements:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Hostile variants of every corpus file (byte flips, truncation, inserted
/// YAML syntax, a file repeated to near the 1 MiB cap, anchors and merge
/// keys multiplied): loading never panics and stays fast.
#[test]
fn mutated_configs_never_panic_and_stay_bounded() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    // xorshift, reduced to usize for indexing.
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed >> 40).unwrap_or(0)
    };
    let inserts: &[&str] = &[
        "[",
        "{",
        "]",
        "}",
        "&a ",
        "*a",
        "<<: ",
        "!!seq ",
        "!!map ",
        "---\n",
        "? ",
        "- ",
        "'",
        "\"",
        "|\n",
        ">-\n",
        "\t",
        "\u{FEFF}",
        "%YAML 1.1\n",
        "!!binary ",
        "#",
        ": ",
        ",",
    ];
    let start = std::time::Instant::now();
    let mut loads = 0usize;
    for p in corpus() {
        let base = std::fs::read(&p).unwrap();
        for _ in 0..150 {
            let mut b = base.clone();
            match next() % 4 {
                0 => {
                    for _ in 0..4 {
                        if !b.is_empty() {
                            let i = next() % b.len();
                            b[i] ^= 1 << (next() % 8);
                        }
                    }
                }
                1 => b.truncate(next() % (b.len() + 1)),
                _ => {
                    for _ in 0..3 {
                        let at = next() % (b.len() + 1);
                        let ins = inserts[next() % inserts.len()];
                        b.splice(at..at, ins.bytes());
                    }
                }
            }
            let text = String::from_utf8_lossy(&b);
            let _ = load(&text);
            let _ = parse_datasource_list(&text);
            loads += 1;
        }
    }
    // Near the size cap: a real file repeated, and a flow list with
    // thousands of aliases to a nested anchor.
    let big = std::fs::read_to_string(corpus()[0].clone())
        .unwrap()
        .repeat(300);
    let _ = load(&big);
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x]\n");
    for i in 1..60 {
        let p = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 8].join(", ")));
    }
    bomb.push_str(&"datasource_list: [*a59, *a59, *a59]\n".repeat(2000));
    let _ = load(&bomb);
    let took = start.elapsed();
    assert!(loads > 3000);
    assert!(took.as_secs() < 60, "{loads} loads took {took:?}");
}
