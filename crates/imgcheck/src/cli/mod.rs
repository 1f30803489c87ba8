//! Command-line front end.

mod args;
mod check;
mod convert;
mod info;
mod output;
mod packer;
mod terraform;
mod upload;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Exit code: an operation failed (usage, I/O, unreadable image).
pub const EXIT_ERROR: u8 = 2;

/// Parses `argv` and runs the command.
pub fn run(argv: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args::with_default_command(argv)) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Info(a) => info::run(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Check(a) => check::run(&a),
        Command::Upload(a) => upload::run(&a),
        Command::Packer(a) => packer::run(&a),
        Command::Terraform(a) => terraform::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(output::exit_code(&e))
        }
    }
}
