//! Go-style command lines: single-dash long flags (`-cert FILE`, `-public`) and the
//! original CLI's form without a subcommand.
//!
//! clap parses everything; this only rewrites argv first:
//! * no subcommand, and the shape of the original Go form (a flag first, or `HOST PORT`
//!   alone): routed to the hidden `legacy` subcommand; another first word that names
//!   no subcommand (`sever`) is left to clap, which suggests the closest one;
//! * `-name` and `-name=value`, where `name` is a long flag of the chosen subcommand,
//!   become `--name` and `--name=value`. Go's flag package accepts both spellings, so
//!   does h2rev2.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// Subcommands a user may name.
const SUBCOMMANDS: [&str; 6] = ["server", "client", "demo", "status", "completions", "help"];

/// Whether `rest` (argv without the program) has the shape of the original Go form:
/// Go's flag package reads flags until the first other word, so the form starts with a
/// flag, or is `HOST PORT` alone. Anything else that does not name a subcommand is left
/// to clap, which says "unrecognized subcommand" and suggests the closest one.
fn looks_like_go_form(rest: &[OsString]) -> bool {
    let word = |i: usize| rest.get(i).and_then(|a| a.to_str()).unwrap_or("");
    word(0).starts_with('-') || (rest.len() == 2 && word(1).parse::<u16>().is_ok())
}

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
    } else if looks_like_go_form(&rest) {
        ("legacy", rest)
    } else {
        let mut out = vec![program];
        out.extend(rest);
        return out;
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
        // The Go form without flags, and a mistyped subcommand left to clap.
        assert_eq!(
            rw("h2rev2 localhost 9090"),
            ["h2rev2", "legacy", "localhost", "9090"]
        );
        assert_eq!(
            rw("h2rev2 sever --listen x"),
            ["h2rev2", "sever", "--listen", "x"]
        );
        assert_eq!(rw("h2rev2"), ["h2rev2"]);
    }
}
