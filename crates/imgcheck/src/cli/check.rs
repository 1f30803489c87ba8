//! `imgcheck check IMAGE...` (also `imgcheck IMAGE...`): every image is
//! checked in parallel (at most `--jobs` at once), results print in
//! argument order; with `--jsonl`, one JSON line per image as each finishes.
//! `--from FILE` (or `-`) adds paths/URLs listed one per line.
//!
//! Exit: 0 when every selected provider passes every image, 1 when some
//! verdict fails (a damaged image included), 2 when an image could not be
//! checked at all (missing file, I/O error). 2 wins over 1, as in ripgrep:
//! a script must not read "some failed" when some were never checked.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use imgcheck::{CheckOptions, Error, Report, Severity, Verdict};
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
    let mut images = a.images.clone();
    if let Some(from) = &a.from {
        images.extend(read_list(from)?);
    }
    if images.is_empty() {
        return Err(Error::Usage(format!(
            "{}: lists no image (one path or URL per line)",
            a.from
                .as_ref()
                .map_or_else(|| "--from".to_owned(), |p| p.display().to_string())
        )));
    }
    let jobs = a.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    if a.jsonl {
        return Ok(run_jsonl(&images, &options, jobs));
    }
    let results = check_all(&images, &options, jobs, |_, r| Some(r));

    let style = Style::detect();
    let mut stdout = std::io::stdout().lock();
    let mut text = String::new();
    if a.json {
        let docs: Vec<JsonDoc<'_>> = images
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
        for (i, (img, r)) in images.iter().zip(&results).enumerate() {
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
            let t = Tally::of(&results);
            let _ = write!(text, "\n{} passed, {} failed", t.passed, t.failed);
            if t.errors > 0 {
                let _ = write!(text, ", {} could not be checked", t.errors);
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
    Ok(ExitCode::from(Tally::of(&results).exit_code()))
}

/// `--jsonl`: one compact JSON document per line, printed (and flushed) as
/// each check finishes, so a consumer sees results while the batch runs and
/// no report is kept in memory; the tally goes to stderr at the end.
fn run_jsonl(images: &[String], options: &CheckOptions, jobs: usize) -> ExitCode {
    let start = Instant::now();
    let tally = Mutex::new(Tally::default());
    check_all(images, options, jobs, |img, r| {
        let mut line = serde_json::to_string(&JsonDoc::new(img, &r)).unwrap_or_default();
        line.push('\n');
        let mut t = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.add(&r);
        // Written while holding the tally's lock: lines never interleave.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(line.as_bytes());
        let _ = stdout.flush();
        // The result is printed; only the tally is kept.
        None
    });
    let t = tally
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    eprintln!(
        "imgcheck: {} image{} checked in {:.1} s: {} passed, {} failed, {} could not be checked",
        t.total(),
        if t.total() == 1 { "" } else { "s" },
        start.elapsed().as_secs_f64(),
        t.passed,
        t.failed,
        t.errors
    );
    ExitCode::from(t.exit_code())
}

/// Checks `images` on at most `jobs` threads. `done` sees each result as it
/// finishes (completion order) and returns what to keep of it; the kept
/// results come back in `images` order.
fn check_all<F>(
    images: &[String],
    options: &CheckOptions,
    jobs: usize,
    done: F,
) -> Vec<Result<Report, Error>>
where
    F: Fn(&str, Result<Report, Error>) -> Option<Result<Report, Error>> + Sync,
{
    let next = AtomicUsize::new(0);
    let kept: Mutex<Vec<Option<Result<Report, Error>>>> =
        Mutex::new((0..images.len()).map(|_| None).collect());
    let workers = jobs.clamp(1, images.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(img) = images.get(i) else { break };
                    let r = imgcheck::check(img, options);
                    if let Some(keep) = done(img, r) {
                        let mut k = kept
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if let Some(slot) = k.get_mut(i) {
                            *slot = Some(keep);
                        }
                    }
                }
            });
        }
    });
    kept.into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}

/// The paths/URLs listed in `path` (`-` = stdin), one per line; blank lines
/// and `#` comments skipped.
fn read_list(path: &Path) -> Result<Vec<String>, Error> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut s)
            .map_err(|e| Error::Usage(format!("--from -: reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            Error::Source(imgcheck::source::SourceError::open(
                &path.display().to_string(),
                e,
            ))
        })?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Counts of a batch.
#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    failed: usize,
    errors: usize,
}

impl Tally {
    fn of(results: &[Result<Report, Error>]) -> Self {
        let mut t = Self::default();
        for r in results {
            t.add(r);
        }
        t
    }

    fn add(&mut self, r: &Result<Report, Error>) {
        match r {
            Ok(report) if report.pass() => self.passed += 1,
            Ok(_) => self.failed += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn total(&self) -> usize {
        self.passed + self.failed + self.errors
    }

    /// 2 when any image could not be checked, else 1 when any failed.
    fn exit_code(&self) -> u8 {
        if self.errors > 0 {
            super::EXIT_ERROR
        } else if self.failed > 0 {
            EXIT_FAIL
        } else {
            0
        }
    }
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
