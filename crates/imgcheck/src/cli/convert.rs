//! `imgcheck convert`.

use std::process::ExitCode;

use imgcheck::Error;
use imgcheck::convert::{AtomicOutput, write_raw};
use serde_json::json;

use super::args::{ConvertArgs, OutFormat};
use super::info::open_options;
use super::output::progress_bar;

/// Runs the command.
pub fn run(a: &ConvertArgs) -> Result<ExitCode, Error> {
    let input = imgcheck::open(&a.input, &open_options(&a.open))?;
    let out = AtomicOutput::create(&a.output, a.force)?;
    let pb = progress_bar(input.disk.virtual_size(), a.quiet || a.json, "converting");
    let tick = |n: u64| pb.inc(n);
    let stats = match a.out_format {
        OutFormat::Raw => write_raw(&input.disk, out.file(), out.temp_path(), &tick)?,
    };
    out.commit()?;
    pb.finish_and_clear();
    if a.json {
        println!(
            "{}",
            json!({
                "input": a.input, "output": a.output, "format": "raw",
                "virtual-size": stats.virtual_size, "bytes-read": stats.bytes_read,
                "bytes-written": stats.bytes_written,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
