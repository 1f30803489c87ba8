//! `imgcheck terraform`: Terraform's `external` data source protocol, so a
//! plan can check an image before a `digitalocean_custom_image`,
//! `linode_image` or `kakaocloud_image` uploads or registers it.
//!
//! The protocol (hashicorp/terraform-provider-external,
//! `internal/provider/data_source.go`): Terraform writes the `query` map as
//! one JSON object of strings to stdin and closes it; the program prints one
//! JSON object whose values are all strings to stdout; a non-zero exit fails
//! the plan and Terraform shows stderr as the error message.
//!
//! Query keys: `image` (path or URL) and `provider` (required); `for`
//! (`linode` or `digitalocean`: check what `imgcheck convert --for P IMAGE`
//! would write instead of the image itself); `strict` (`"true"`, the
//! default: a failing check exits 1 with the findings on stderr; `"false"`:
//! the result is printed anyway, for a `precondition`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write as _};
use std::path::Path;
use std::process::ExitCode;

use imgcheck::{CheckOptions, Error, Provider, Report, Severity};
use md5::{Digest, Md5};
use serde_json::Value;

use super::args::{self, TerraformArgs};
use super::convert;
use super::info::open_options;

/// Exit code when the check fails (as `imgcheck check`).
const EXIT_FAIL: u8 = 1;

/// A query is a few short strings; anything this large is not one.
const MAX_QUERY: u64 = 1 << 20;

/// The keys a query may have.
const KEYS: &[&str] = &["image", "provider", "for", "strict"];

/// A parsed query.
#[derive(Debug, PartialEq)]
struct Query {
    image: String,
    provider: Provider,
    convert_for: Option<args::Provider>,
    strict: bool,
}

/// Runs the command: query on stdin, result on stdout.
pub fn run(a: &TerraformArgs) -> Result<ExitCode, Error> {
    let mut raw = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_QUERY + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Error::Usage(format!("terraform: reading the query from stdin: {e}")))?;
    let q = parse_query(&raw).map_err(|e| Error::Usage(format!("terraform: {e}")))?;

    let options = CheckOptions {
        providers: vec![q.provider],
        open: open_options(&a.open),
    };
    // With `for`, the file judged is the conversion, written to a temporary
    // directory that is removed on return.
    let tmp;
    let (checked, file) = match q.convert_for {
        None => (q.image.clone(), q.image.clone()),
        Some(p) => {
            tmp = tempfile::tempdir().map_err(|e| {
                Error::Usage(format!(
                    "terraform: cannot create a temporary directory for the conversion ({e}); set TMPDIR"
                ))
            })?;
            let (path, named) = convert::convert_for(&q.image, p, tmp.path(), &a.open)?;
            (path.to_string_lossy().into_owned(), named)
        }
    };
    let report = imgcheck::check(&checked, &options)?;
    let md5 = if is_url(&checked) {
        String::new()
    } else {
        md5_file(Path::new(&checked))?
    };
    let result = result_map(&report, q.provider, &file, md5);

    if q.strict && !report.pass() {
        eprint!("{}", findings_text(&report, &q.image, q.convert_for));
        return Ok(ExitCode::from(EXIT_FAIL));
    }
    let mut out = serde_json::to_string(&result).unwrap_or_default();
    out.push('\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(ExitCode::SUCCESS)
}

/// Parses and validates the query; the error names the key at fault.
fn parse_query(raw: &[u8]) -> Result<Query, String> {
    if raw.len() as u64 > MAX_QUERY {
        return Err(format!(
            "the query on stdin is over {MAX_QUERY} bytes; expected one JSON object of strings"
        ));
    }
    let v: Value = serde_json::from_slice(raw).map_err(|e| {
        format!("the query on stdin is not JSON ({e}); expected one object of strings, e.g. {{\"image\":\"disk.img\",\"provider\":\"linode\"}}")
    })?;
    let Value::Object(map) = v else {
        return Err(format!(
            "the query on stdin is a JSON {}, expected one object of strings",
            json_kind(&v)
        ));
    };
    let mut strings = BTreeMap::new();
    for (k, v) in &map {
        if !KEYS.contains(&k.as_str()) {
            return Err(format!(
                "query key {k:?} is not known (expected {})",
                KEYS.join(", ")
            ));
        }
        let Value::String(s) = v else {
            return Err(format!(
                "query key {k:?} is a JSON {}, expected a string",
                json_kind(v)
            ));
        };
        strings.insert(k.as_str(), s.as_str());
    }
    let required = |k: &str| match strings.get(k) {
        Some(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(_) => Err(format!("query key {k:?} is empty")),
        None => Err(format!("query key {k:?} is missing")),
    };
    let image = required("image")?;
    let provider = required("provider")?
        .parse::<Provider>()
        .map_err(|e| format!("query key \"provider\": {e}"))?;
    let convert_for = match strings.get("for").map(|s| s.trim()) {
        None | Some("") => None,
        Some(s) => Some(parse_for(s)?),
    };
    let strict = match strings.get("strict").map(|s| s.trim()) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(format!(
                "query key \"strict\" is {other:?}, expected \"true\" or \"false\""
            ));
        }
    };
    Ok(Query {
        image,
        provider,
        convert_for,
        strict,
    })
}

/// The `for` key: a provider `imgcheck convert --for` has a target for.
fn parse_for(s: &str) -> Result<args::Provider, String> {
    match s.parse::<Provider>() {
        Ok(Provider::Linode) => Ok(args::Provider::Linode),
        Ok(Provider::DigitalOcean) => Ok(args::Provider::Digitalocean),
        Ok(Provider::KakaoCloud) => Err(
            "query key \"for\": `imgcheck convert --for` has no kakaocloud target (KakaoCloud images come from root volumes); expected linode or digitalocean"
                .into(),
        ),
        Err(e) => Err(format!("query key \"for\": {e}")),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_url(s: &str) -> bool {
    let head = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}

/// The MD5 of a file, lowercase hex (what `md5sum` and Terraform's
/// `filemd5()` print, and `linode_image.file_hash` takes).
fn md5_file(path: &Path) -> Result<String, Error> {
    let open_err = |e: std::io::Error| {
        Error::Source(imgcheck::source::SourceError::open(
            &path.display().to_string(),
            e,
        ))
    };
    let mut f = File::open(path).map_err(open_err)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(open_err)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// The flat map of strings Terraform reads.
fn result_map(
    r: &Report,
    provider: Provider,
    file: &str,
    md5: String,
) -> BTreeMap<&'static str, String> {
    let verdict = r.verdicts.iter().find(|v| v.provider == provider);
    let codes_of = |s: Severity| {
        verdict
            .map(|v| {
                v.findings
                    .iter()
                    .filter(|f| f.severity == s)
                    .map(|f| f.code)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let guest = r.guest.as_ref();
    let k = guest.map(|g| &g.kakaocloud);
    let opt = |s: Option<&String>| s.cloned().unwrap_or_default();
    let mut m = BTreeMap::new();
    m.insert("pass", verdict.is_some_and(|v| v.pass).to_string());
    m.insert("codes", codes_of(Severity::Error));
    m.insert("warnings", codes_of(Severity::Warning));
    m.insert(
        "format",
        r.image
            .format
            .as_ref()
            .map(|f| f.name().to_owned())
            .unwrap_or_default(),
    );
    m.insert(
        "compression",
        r.image
            .compression
            .map(|c| c.to_string())
            .unwrap_or_default(),
    );
    m.insert(
        "virtual_size",
        r.image
            .virtual_size
            .map(|v| v.to_string())
            .unwrap_or_default(),
    );
    m.insert("file", file.to_owned());
    m.insert("md5", md5);
    m.insert(
        "distribution",
        imgcheck::digitalocean_distribution(guest.and_then(|g| g.os.id.as_deref())).to_owned(),
    );
    m.insert(
        "cloud_init",
        guest
            .is_some_and(|g| imgcheck::linode_cloud_init(&g.cloud_init))
            .to_string(),
    );
    m.insert("os_type", opt(k.and_then(|k| k.os_type.as_ref())));
    m.insert("os_distro", opt(k.and_then(|k| k.distro.as_ref())));
    m.insert(
        "os_architecture",
        opt(k.and_then(|k| k.architecture.as_ref())),
    );
    m.insert("admin_user", opt(k.and_then(|k| k.admin_user.as_ref())));
    m.insert(
        "min_disk",
        k.map(|k| k.min_disk_gb.to_string()).unwrap_or_default(),
    );
    m
}

/// The findings of a failed check, for stderr (Terraform shows it as the
/// error).
fn findings_text(r: &Report, image: &str, convert_for: Option<args::Provider>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for v in r.verdicts.iter().filter(|v| !v.pass) {
        let what = match convert_for {
            None => image.to_owned(),
            Some(p) => format!(
                "{image} (as `imgcheck convert --for {}` would write it)",
                convert::provider_name(p)
            ),
        };
        let _ = writeln!(s, "imgcheck: {what} fails the {} check:", v.provider);
        for f in v.findings.iter().filter(|f| f.severity != Severity::Info) {
            let _ = writeln!(s, "  {} {}: {}", f.severity, f.code, f.message);
            if let Some(h) = &f.hint {
                let _ = writeln!(s, "    hint: {h}");
            }
        }
    }
    s.push_str(
        "(add strict = \"false\" to the query to get the result instead and test it in a precondition)\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgcheck::guest::CloudInitFacts;
    use imgcheck::{digitalocean_distribution, linode_cloud_init};

    fn err(q: &str) -> String {
        parse_query(q.as_bytes()).unwrap_err()
    }

    #[test]
    fn query_parses_with_defaults() {
        let q = parse_query(br#"{"image":"d.img","provider":"linode"}"#).unwrap();
        assert_eq!(
            q,
            Query {
                image: "d.img".into(),
                provider: Provider::Linode,
                convert_for: None,
                strict: true,
            }
        );
        let q = parse_query(br#"{"image":"d","provider":"do","for":"linode","strict":"false"}"#)
            .unwrap();
        assert_eq!(q.provider, Provider::DigitalOcean);
        assert_eq!(q.convert_for, Some(args::Provider::Linode));
        assert!(!q.strict);
    }

    #[test]
    fn each_malformed_query_names_its_key() {
        assert!(err("").contains("not JSON"));
        assert!(err("[1]").contains("array"));
        assert!(err(r#"{"provider":"linode"}"#).contains(r#""image" is missing"#));
        assert!(err(r#"{"image":"x"}"#).contains(r#""provider" is missing"#));
        assert!(err(r#"{"image":" ","provider":"linode"}"#).contains(r#""image" is empty"#));
        assert!(err(r#"{"image":1,"provider":"linode"}"#).contains(r#""image" is a JSON number"#));
        assert!(err(r#"{"image":"x","provider":"aws"}"#).contains(r#""provider""#));
        assert!(err(r#"{"image":"x","provider":"linode","strict":"no"}"#).contains(r#""strict""#));
        assert!(err(r#"{"image":"x","provider":"linode","for":"kakao"}"#).contains(r#""for""#));
        assert!(err(r#"{"image":"x","provider":"linode","imgae":"y"}"#).contains(r#""imgae""#));
        for q in [
            r#"{"image":"x","provider":null}"#,
            r#"{"image":"x","provider":"l","strict":false}"#,
        ] {
            assert!(!err(q).contains('\n'), "{}", err(q));
        }
    }

    #[test]
    fn distribution_names_are_digitaloceans() {
        assert_eq!(digitalocean_distribution(Some("debian")), "Debian");
        assert_eq!(digitalocean_distribution(Some("ubuntu")), "Ubuntu");
        assert_eq!(digitalocean_distribution(Some("rocky")), "Rocky Linux");
        assert_eq!(digitalocean_distribution(Some("opensuse-leap")), "openSUSE");
        assert_eq!(digitalocean_distribution(Some("alpine")), "Unknown");
        assert_eq!(digitalocean_distribution(None), "Unknown");
    }

    #[test]
    fn cloud_init_capability_needs_23_3_1_and_akamai() {
        let ci = |v: &str, list: Option<&[&str]>| CloudInitFacts {
            installed: true,
            version: Some(v.into()),
            datasource_list: list.map(|l| l.iter().map(|s| (*s).to_owned()).collect()),
            datasource_decided_by: list.map(|_| "config".to_owned()),
            ..Default::default()
        };
        assert!(linode_cloud_init(&ci("23.3.1", None)));
        assert!(linode_cloud_init(&ci(
            "1:24.1.3-0ubuntu1~22.04.1",
            Some(&["Akamai", "None"])
        )));
        assert!(!linode_cloud_init(&ci("23.3", None)));
        assert!(!linode_cloud_init(&ci("22.4.2", None)));
        assert!(!linode_cloud_init(&ci(
            "26.1",
            Some(&["ConfigDrive", "NoCloud"])
        )));
        assert!(!linode_cloud_init(&CloudInitFacts::default()));
    }
}
