//! `h2rev2`: a reverse tunnel over HTTP/2.
//!
//! * `h2rev2 server`: the public side (accepts clients' reverse connections, exposes
//!   their servers over HTTPS and TCP ports);
//! * `h2rev2 client`: the NAT side (connects out, serves an internal HTTP server or a
//!   TCP service over the reverse connections);
//! * `h2rev2 demo`: both, with a hello server, on loopback;
//! * the original Go CLI's form (`h2rev2 [-public] -cert ... HOST PORT`).
//!
//! Exit codes: see [`error::Code`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod argv;
mod certs;
mod cli;
mod client;
mod config;
mod demo;
mod error;
mod legacy;
mod logging;
mod reload;
mod server;
mod signal;
mod status;
mod tokens;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::cli::{Cli, Command, LogFormat};
use crate::config::Prepared;
use crate::error::CliError;

async fn run(command: Command) -> Result<(), CliError> {
    signal::ignore_hangup(matches!(command, Command::Server(_)));
    match command {
        Command::Server(a) => server::run(a).await,
        Command::Client(a) => client::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Legacy(a) => legacy::run(a).await,
        Command::Status(a) => status::run(a).await,
        // Handled in `main`, before a runtime is started.
        Command::Completions(_) => Ok(()),
    }
}

/// The command line that completions offer: everything but hidden subcommands (the Go
/// form, whose single-dash flags a completion script would only confuse).
fn completed() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("h2rev2")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default());
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime does for
/// every Go program: each Client connection, reverse connection and internal
/// connection is a file descriptor, and the usual soft limit of 1,024 (systemd's
/// default, most shells') would refuse Clients long before the server's own limits
/// do. Logged at debug; a limit that cannot be raised is a warning, not an error.
fn raise_open_files_limit() {
    // An unlimited hard limit cannot be the soft one (Linux caps it at nr_open, by
    // default 1,048,576): then that much.
    let raised =
        rlimit::increase_nofile_limit(u64::MAX).or_else(|_| rlimit::increase_nofile_limit(1 << 20));
    match raised {
        Ok(n) => tracing::debug!(limit = n, "open files limit"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}

fn main() -> ExitCode {
    let args = argv::rewrite(std::env::args_os().collect());
    // The matches are kept: the config file fills only what they did not set.
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            // Help and version go to stdout and succeed; usage errors exit 2.
            return if e.use_stderr() {
                ExitCode::from(error::Code::Usage as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Command::Completions(a) = &cli.command {
        let mut out = std::io::stdout().lock();
        clap_complete::generate(a.shell, &mut completed(), "h2rev2", &mut out);
        return ExitCode::SUCCESS;
    }
    let command = match config::prepare(cli.command, &matches) {
        Ok(Prepared::Run(c)) => c,
        Ok(Prepared::Print(text)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("h2rev2: error: {e}");
            return e.exit_code();
        }
    };
    logging::init(match &command {
        Command::Server(a) => a.log.log_format,
        Command::Client(a) => a.log.log_format,
        Command::Demo(a) => a.log.log_format,
        Command::Legacy(_) | Command::Status(_) | Command::Completions(_) => LogFormat::Text,
    });
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("h2rev2: error: cannot start the async runtime: {e}");
            return ExitCode::from(error::Code::Runtime as u8);
        }
    };
    let result = runtime.block_on(run(command));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("h2rev2: error: {e}");
            e.exit_code()
        }
    }
}
