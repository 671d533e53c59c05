//! `webfence run`: the command line of the guard daemon. It sets up the
//! logs and hands the options to `daemon::runtime`.

use std::process::ExitCode;

use anyhow::Result;

use super::DaemonArgs;
use crate::daemon::runtime::{self, RunOptions};

/// Logs for a terminal or for journald (which stamps times itself and
/// shows no colours).
fn init_logging(verbose: u8, quiet: bool) {
    use std::io::IsTerminal;
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::WARN,
        (false, 0) => tracing::Level::INFO,
        (false, 1) => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::stderr().is_terminal());
    let _ = if journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

pub(super) fn run(args: DaemonArgs) -> Result<ExitCode> {
    init_logging(args.verbose, args.quiet);
    runtime::run(RunOptions {
        files: args.files,
        config: args.config.config,
        dry_run: args.dry_run,
        backend: args.backend,
        state_dir: args.state_dir,
        socket: args.socket,
        from_start: args.from_start,
        wait_for_logs: args.wait_for_logs,
    })
}
