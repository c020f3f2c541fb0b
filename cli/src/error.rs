//! Errors a user can act on, each with the exit code scripts rely on.

use std::fmt;
use std::io;
use std::process::ExitCode;

/// Exit codes, documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A failure while running (the server stopped, the client gave up connecting).
    Runtime = 1,
    /// A bad command line: unknown flag, bad URL, bad id (clap also exits with 2).
    Usage = 2,
    /// A certificate, key or token file is missing, unreadable or invalid.
    Config = 3,
    /// The public server refused the client's credentials (401/403) and it gave up.
    AuthRefused = 4,
    /// An address could not be listened on (port in use, permission denied).
    Bind = 5,
}

/// An error for the user: a message and an exit code.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: Code,
    /// What went wrong and, where possible, what to do.
    pub message: String,
}

impl CliError {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: Code::Usage,
            message: message.into(),
        }
    }

    /// A configuration (certificate, key, token file) error.
    pub fn config(message: impl Into<String>) -> Self {
        CliError {
            code: Code::Config,
            message: message.into(),
        }
    }

    /// A runtime failure.
    pub fn runtime(message: impl Into<String>) -> Self {
        CliError {
            code: Code::Runtime,
            message: message.into(),
        }
    }

    /// Failing to listen on `addr` for `what`, with a hint for the usual causes.
    pub fn bind(what: &str, addr: &str, e: &io::Error) -> Self {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => {
                " (the port is in use: stop the other program or choose another port)"
            }
            io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need privileges: choose a port above 1024)"
            }
            io::ErrorKind::AddrNotAvailable => " (no local interface has this address)",
            _ => "",
        };
        CliError {
            code: Code::Bind,
            message: format!("cannot listen on {addr} for {what}: {e}{hint}"),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code as u8)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
