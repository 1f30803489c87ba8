//! Printing helpers shared by the commands.

use std::io::IsTerminal;

use imgcheck::Error;

/// Prints `e` as one line, plus a hint line when there is one. A refused
/// upload lists the verdict's findings, each with its hint. Credentials in
/// URLs are redacted here too, whatever the error carries.
pub fn print_error(e: &Error) {
    let msg = imgcheck::providers::redact_text(&e.to_string().replace('\n', " "));
    eprintln!("imgcheck: error: {msg}");
    if let Error::CheckFailed { provider, findings } = e {
        print_findings(provider, findings);
    }
    if let Some(h) = e.hint() {
        eprintln!("  hint: {h}");
    }
}

/// The findings of a verdict on stderr, errors first, each with its hint.
pub fn print_findings(provider: &str, findings: &[imgcheck::Finding]) {
    for f in findings {
        eprintln!("  {provider} {} {}: {}", f.severity, f.code, f.message);
        if let Some(h) = &f.hint {
            eprintln!("    hint: {h}");
        }
    }
}

/// Writes `text` to stdout. A closed pipe (`imgcheck upload --json | head`)
/// ends the process quietly with success: the reader has what it wanted.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let r = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if let Err(e) = r
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// The exit code for an error: 1 when the check refused the image (as a
/// failed check), else 2.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::CheckFailed { .. } => 1,
        _ => super::EXIT_ERROR,
    }
}

/// Formats bytes as qemu-img does: "1 GiB (1073741824 bytes)".
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.3} {}", UNITS[u]).replace(".000 ", " ")
    }
}

/// A progress bar on stderr when it is a terminal and not quieted.
pub fn progress_bar(total: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// A progress bar for the one streaming pass over a compressed image, on a
/// terminal only; cleared when the pass ends.
pub fn decompress_progress() -> Option<imgcheck::source::ProgressFn> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = progress_bar(0, false, "decompressing");
    Some(imgcheck::source::ProgressFn::new(move |p| {
        pb.set_length(p.compressed_total);
        pb.set_position(p.compressed_done);
        if p.compressed_done >= p.compressed_total {
            pb.finish_and_clear();
        }
    }))
}
