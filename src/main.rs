//! The `dlogp` command: parse, run, map errors to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = dlogp::cli::Cli::parse_from(dlogp::cli::llama_argv(std::env::args_os()));
    dlogp::cli::init_logging(cli.verbose);
    match dlogp::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if dlogp::cli::is_broken_pipe(&err) => {
            dlogp::io::remove_live_temps();
            ExitCode::from(dlogp::cli::BROKEN_PIPE_EXIT as u8)
        }
        Err(err) => {
            dlogp::cli::report_error(&err);
            ExitCode::FAILURE
        }
    }
}
