//! The `imgcheck` command. Thin: parse arguments, call the library, print.
//!
//! Exit codes are a contract: 0 success (every selected provider passes),
//! 1 a check failed, 2 usage or I/O error. Errors print as one line plus a
//! hint, never a backtrace.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run(std::env::args_os().collect())
}
