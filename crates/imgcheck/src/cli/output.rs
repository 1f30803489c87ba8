//! Printing helpers shared by the commands.

use std::io::IsTerminal;

use imgcheck::Error;

/// Prints `e` as one line, plus a hint line when there is one.
pub fn print_error(e: &Error) {
    let msg = e.to_string().replace('\n', " ");
    eprintln!("imgcheck: error: {msg}");
    if let Some(h) = e.hint() {
        eprintln!("  hint: {h}");
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
