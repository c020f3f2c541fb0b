//! Go-style command lines: single-dash long flags (`-cert FILE`, `-public`) and the
//! original CLI's form without a subcommand.
//!
//! clap parses everything; this only rewrites argv first:
//! * no subcommand (the first argument is not `server`, `client`, `demo`, `help` nor a
//!   help or version flag): the original Go form, routed to the hidden `legacy`
//!   subcommand;
//! * `-name` and `-name=value`, where `name` is a long flag of the chosen subcommand,
//!   become `--name` and `--name=value`. Go's flag package accepts both spellings, so
//!   does h2rev2.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// Subcommands a user may name.
const SUBCOMMANDS: [&str; 5] = ["server", "client", "demo", "status", "help"];

/// Rewrites `args` (with the program name first) as described in the module docs.
pub fn rewrite(args: Vec<OsString>) -> Vec<OsString> {
    let mut it = args.into_iter();
    let program = it.next().unwrap_or_else(|| "h2rev2".into());
    let rest: Vec<OsString> = it.collect();
    let first = rest.first().and_then(|a| a.to_str()).unwrap_or("");
    let top_level_flag = matches!(
        first,
        "-h" | "--help" | "-V" | "--version" | "-help" | "-version"
    );
    if rest.is_empty() || top_level_flag {
        let mut out = vec![program];
        out.extend(rest.into_iter().map(|a| match a.to_str() {
            Some("-help") => "--help".into(),
            Some("-version") => "--version".into(),
            _ => a,
        }));
        return out;
    }
    let (sub, flags): (&str, Vec<OsString>) = if SUBCOMMANDS.contains(&first) {
        (first, rest[1..].to_vec())
    } else {
        ("legacy", rest)
    };
    let longs = long_flags(sub);
    let mut out = vec![program, sub.into()];
    let mut done = false;
    for a in flags {
        if done {
            out.push(a);
            continue;
        }
        match a.to_str() {
            Some("--") => {
                done = true;
                out.push(a);
            }
            Some(s) if is_single_dash_long(s, &longs) => out.push(format!("-{s}").into()),
            _ => out.push(a),
        }
    }
    out
}

fn is_single_dash_long(arg: &str, longs: &[String]) -> bool {
    let Some(body) = arg.strip_prefix('-') else {
        return false;
    };
    if body.starts_with('-') {
        return false;
    }
    let name = body.split_once('=').map_or(body, |(n, _)| n);
    name.len() > 1 && longs.iter().any(|l| l == name)
}

/// The long flags of subcommand `sub`, plus `help` and `version`.
fn long_flags(sub: &str) -> Vec<String> {
    let cmd = Cli::command();
    let mut out = vec!["help".to_string(), "version".to_string()];
    if let Some(c) = cmd.get_subcommands().find(|c| c.get_name() == sub) {
        out.extend(
            c.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(s: &str) -> Vec<String> {
        rewrite(s.split_whitespace().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn original_example() {
        assert_eq!(
            rw(
                "h2rev2 -cert /tmp/server.crt -dialer-key dialerid -dialer-id 001 \
                -dialer-path /revdial -proxy-host http://localhost:8000 localhost 9090"
            ),
            "h2rev2 legacy --cert /tmp/server.crt --dialer-key dialerid --dialer-id 001 \
             --dialer-path /revdial --proxy-host http://localhost:8000 localhost 9090"
                .split_whitespace()
                .collect::<Vec<_>>()
        );
        assert_eq!(
            rw("h2rev2 -public -cert=a -key b localhost 9090"),
            [
                "h2rev2",
                "legacy",
                "--public",
                "--cert=a",
                "--key",
                "b",
                "localhost",
                "9090"
            ]
        );
    }

    #[test]
    fn subcommands_and_values() {
        assert_eq!(
            rw("h2rev2 server -listen 127.0.0.1:1 --self-signed -x -- -tcp"),
            [
                "h2rev2",
                "server",
                "--listen",
                "127.0.0.1:1",
                "--self-signed",
                "-x",
                "--",
                "-tcp"
            ]
        );
        // A value that happens to start with '-' but names no flag is left alone.
        assert_eq!(
            rw("h2rev2 client -token -abc"),
            ["h2rev2", "client", "--token", "-abc"]
        );
        assert_eq!(rw("h2rev2 -help"), ["h2rev2", "--help"]);
        assert_eq!(rw("h2rev2"), ["h2rev2"]);
    }
}
