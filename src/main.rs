//! The `rewind` command line: `serve` runs the daemon; every other subcommand talks to the
//! running daemon through its admin socket (`DIR/rewind.sock`).
//!
//! Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 no daemon is running on
//! the data directory.

use std::process::ExitCode;

use clap::Parser;

mod allocator;
mod cli;

fn main() -> ExitCode {
    allocator::tune();
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let not_running = e
                .downcast_ref::<rewind::admin::ClientError>()
                .is_some_and(|c| matches!(c, rewind::admin::ClientError::NotRunning));
            if not_running {
                eprintln!("hint: start it with `rewind --data DIR serve` (or pass the --data it runs with)");
                ExitCode::from(cli::EXIT_NOT_RUNNING)
            } else {
                ExitCode::from(cli::EXIT_FAILED)
            }
        }
    }
}
