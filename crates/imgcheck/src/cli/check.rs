//! `imgcheck check IMAGE...` (also `imgcheck IMAGE...`): every image is
//! checked in parallel, results print in argument order.
//!
//! Exit: 0 when every selected provider passes every image, 1 when some
//! verdict fails (a damaged image included), 2 when an image could not be
//! checked at all (missing file, I/O error). 2 wins over 1, as in ripgrep:
//! a script must not read "some failed" when some were never checked.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;

use imgcheck::{CheckOptions, Error, Report, Severity, Verdict};
use rayon::prelude::*;
use serde::Serialize;

use super::args::CheckArgs;
use super::info::open_options;
use super::output::{human_size, print_error};

/// Exit code when a verdict fails.
const EXIT_FAIL: u8 = 1;

/// Runs the command.
pub fn run(a: &CheckArgs) -> Result<ExitCode, Error> {
    let options = CheckOptions {
        providers: a.providers.clone(),
        open: open_options(&a.open),
    };
    let results: Vec<Result<Report, Error>> = a
        .images
        .par_iter()
        .map(|img| imgcheck::check(img, &options))
        .collect();

    let style = Style::detect();
    let mut stdout = std::io::stdout().lock();
    let mut text = String::new();
    if a.json {
        let docs: Vec<JsonDoc<'_>> = a
            .images
            .iter()
            .zip(&results)
            .map(|(img, r)| JsonDoc::new(img, r))
            .collect();
        // Serialised straight from the structs (not through `Value`) so
        // keys keep the documented order.
        text = match docs.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            many => serde_json::to_string_pretty(many),
        }
        .unwrap_or_default();
        text.push('\n');
    } else {
        for (i, (img, r)) in a.images.iter().zip(&results).enumerate() {
            if i > 0 {
                text.push('\n');
            }
            match r {
                Ok(report) => render(&mut text, report, &style),
                Err(e) => {
                    let _ = writeln!(text, "{img}: {}", style.paint(Paint::Fail, "ERROR"));
                    let _ = writeln!(text, "  {}", e.to_string().replace('\n', " "));
                }
            }
        }
        if results.len() > 1 {
            let passed = results
                .iter()
                .filter(|r| r.as_ref().is_ok_and(Report::pass))
                .count();
            let errors = results.iter().filter(|r| r.is_err()).count();
            let failed = results.len() - passed - errors;
            let _ = write!(text, "\n{passed} passed, {failed} failed");
            if errors > 0 {
                let _ = write!(text, ", {errors} could not be checked");
            }
            text.push('\n');
        }
    }
    // A closed pipe (`imgcheck ... | head`) is not an error worth a message.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        print_error(e);
    }

    let code = if results.iter().any(Result::is_err) {
        super::EXIT_ERROR
    } else if results.iter().all(|r| r.as_ref().is_ok_and(Report::pass)) {
        0
    } else {
        EXIT_FAIL
    };
    Ok(ExitCode::from(code))
}

/// The JSON object for one image: the report, or `{image: {path}, error}`
/// when it could not be checked.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonDoc<'a> {
    Report(&'a Report),
    Error {
        image: JsonPath<'a>,
        error: JsonError,
    },
}

#[derive(Serialize)]
struct JsonPath<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct JsonError {
    message: String,
    hint: Option<String>,
}

impl<'a> JsonDoc<'a> {
    fn new(img: &'a str, r: &'a Result<Report, Error>) -> Self {
        match r {
            Ok(report) => JsonDoc::Report(report),
            Err(e) => JsonDoc::Error {
                image: JsonPath { path: img },
                error: JsonError {
                    message: e.to_string().replace('\n', " "),
                    hint: e.hint(),
                },
            },
        }
    }
}

/// ANSI colours, on only for a terminal without NO_COLOR.
struct Style {
    color: bool,
}

#[derive(Clone, Copy)]
enum Paint {
    Pass,
    Fail,
    Warn,
    Dim,
    Bold,
}

impl Style {
    fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: std::io::stdout().is_terminal() && !no_color,
        }
    }

    fn paint(&self, p: Paint, s: &str) -> String {
        if !self.color {
            return s.to_owned();
        }
        let code = match p {
            Paint::Pass => "1;32",
            Paint::Fail => "1;31",
            Paint::Warn => "33",
            Paint::Dim => "2",
            Paint::Bold => "1",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }

    fn severity(&self, s: Severity) -> String {
        let p = match s {
            Severity::Error => Paint::Fail,
            Severity::Warning => Paint::Warn,
            Severity::Info => Paint::Dim,
        };
        // Padded before painting so columns line up with or without colour.
        self.paint(p, &format!("{:<7}", s.as_str()))
    }
}

/// The human report of one image.
fn render(out: &mut String, r: &Report, style: &Style) {
    let img = &r.image;
    let mut what: Vec<String> = Vec::new();
    if let Some(f) = &img.format {
        what.push(f.name().to_owned());
    }
    if let Some(c) = img.compression {
        what.push(format!("{c}-compressed"));
    }
    if let Some(v) = img.virtual_size {
        what.push(format!("{} virtual", human_size(v)));
    }
    what.push(format!("{} file", human_size(img.file_size)));
    let _ = writeln!(
        out,
        "{}: {}",
        style.paint(Paint::Bold, &img.path),
        what.join(", ")
    );
    if let Some(g) = &r.guest {
        let os = &g.os;
        let name = os
            .pretty_name
            .clone()
            .or_else(|| os.id.clone())
            .filter(|s| !s.is_empty());
        if let Some(name) = name {
            let root = r
                .root
                .and_then(|i| r.filesystems.get(i))
                .and_then(|f| serde_json::to_value(f.kind).ok())
                .and_then(|v| v.as_str().map(str::to_owned));
            let mut line = name;
            if let Some(a) = &os.architecture {
                let _ = write!(line, ", {a}");
            }
            if let Some(fs) = root {
                let _ = write!(line, ", {fs} root");
            }
            let _ = writeln!(out, "  guest: {line}");
        }
    }
    for v in &r.verdicts {
        render_verdict(out, v, style);
    }
}

fn render_verdict(out: &mut String, v: &Verdict, style: &Style) {
    let head = if v.pass {
        style.paint(Paint::Pass, "PASS")
    } else {
        style.paint(Paint::Fail, "FAIL")
    };
    let mut counts = Vec::new();
    for (s, word) in [
        (Severity::Error, "error"),
        (Severity::Warning, "warning"),
        (Severity::Info, "info"),
    ] {
        let n = v.count(s);
        if n > 0 {
            counts.push(format!(
                "{n} {word}{}",
                if n > 1 && s != Severity::Info {
                    "s"
                } else {
                    ""
                }
            ));
        }
    }
    let counts = if counts.is_empty() {
        String::new()
    } else {
        format!(" ({})", counts.join(", "))
    };
    let _ = writeln!(out, "  {head} {:<12}{counts}", v.provider.as_str());
    for f in &v.findings {
        let _ = writeln!(
            out,
            "    {} {}: {}",
            style.severity(f.severity),
            f.code,
            f.message
        );
        if let Some(h) = &f.hint {
            let _ = writeln!(out, "            hint: {h}");
        }
    }
}
