//! The README's config files are what the binary accepts: the complete examples of
//! "Config file" and the files of "Two machines" load, every value is taken as
//! written, the limits shown as defaults are the defaults, and the commented-out
//! lines name real keys with values of the right type.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ```toml blocks of the README whose first line mentions `name`.
fn toml_block(text: &str, name: &str) -> String {
    let mut blocks = text.split("```toml\n").skip(1).map(|rest| {
        let end = rest.find("\n```").expect("a closed block");
        rest[..=end].to_string()
    });
    blocks
        .find(|b| b.lines().next().is_some_and(|l| l.contains(name)))
        .unwrap_or_else(|| panic!("no toml block for {name} in the README"))
}

/// The heredoc `cat > {name} <<'END'` ... `END` of the README.
fn heredoc(text: &str, name: &str) -> String {
    let start = format!("{name} <<'END'\n");
    let at = text
        .find(&start)
        .unwrap_or_else(|| panic!("no heredoc for {name}"));
    let rest = &text[at + start.len()..];
    rest[..rest.find("\nEND\n").expect("END")].to_string() + "\n"
}

/// `key = value` lines without comments, whitespace normalized.
fn settings(toml: &str) -> Vec<String> {
    toml.lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key = value");
            format!("{} = {}", k.trim(), v.trim())
        })
        .collect()
}

/// Runs `h2rev2 {sub} --config FILE --print-config` for `toml`; returns (exit code,
/// stdout, stderr).
fn print_config(sub: &str, toml: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "config.toml", toml);
    let file = file.display().to_string();
    let mut args = vec![sub, "--config", &file, "--print-config"];
    args.extend_from_slice(extra);
    let mut p = Proc::h2rev2(sub, &args, &[]);
    let st = p.wait_exit(Duration::from_secs(20));
    (st.code(), p.stdout(), p.stderr())
}

/// Checks that `toml` loads and that every value is in the effective configuration as
/// written (paths: by their file name, they are resolved against the file's directory).
fn loads_as_written(sub: &str, toml: &str) {
    let (code, out, err) = print_config(sub, toml, &[]);
    assert_eq!(code, Some(0), "{sub}: {err}\n{toml}");
    let printed = settings(&out);
    for line in settings(toml) {
        let (key, value) = line.split_once(" = ").unwrap();
        let found = printed.iter().find(|l| l.starts_with(&format!("{key} = ")));
        let found = found.unwrap_or_else(|| panic!("{sub}: {key} not printed:\n{out}"));
        let shown = found.split_once(" = ").unwrap().1;
        let is_path =
            value.ends_with(".txt\"") || value.ends_with(".crt\"") || value.ends_with(".key\"");
        if is_path {
            let name = value.trim_matches('"');
            assert!(
                shown.ends_with(&format!("/{name}\"")),
                "{sub}: {key}: {shown}"
            );
        } else {
            // A repeatable key written as one string is shown as a list of one.
            assert!(
                shown == value || shown == format!("[{value}]"),
                "{sub}: {key}: {shown} for {value}"
            );
        }
    }
}

/// Each commented-out `# key = value` line of `toml`, alone in a file, names a known
/// key with a value of the right type (it may still need other settings).
fn commented_lines_are_keys(sub: &str, toml: &str) {
    let mut seen = 0;
    for line in toml.lines() {
        let Some(body) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((key, _)) = body.split_once(" = ") else {
            continue;
        };
        if !key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        seen += 1;
        let (code, out, err) = print_config(sub, &format!("{body}\n"), &[]);
        assert!(
            !err.contains("unknown field") && !err.contains("invalid type"),
            "{sub}: `{body}`: {err}"
        );
        if code == Some(0) {
            assert!(out.contains(&format!("{key} = ")), "{out}");
        }
    }
    assert!(seen >= 3, "{sub}: only {seen} commented-out settings found");
}

#[test]
fn the_complete_examples_are_valid() {
    let text = readme();
    let server = toml_block(&text, "server.toml");
    let client = toml_block(&text, "client.toml");
    loads_as_written("server", &server);
    loads_as_written("client", &client);
    commented_lines_are_keys("server", &server);
    commented_lines_are_keys("client", &client);

    // "Limits and timeouts ..., at their defaults": the same as without a file.
    let (code, defaults, err) = print_config("server", "self-signed = true\n", &[]);
    assert_eq!(code, Some(0), "{err}");
    let defaults = settings(&defaults);
    let limits = server
        .split("at their defaults\n")
        .nth(1)
        .expect("the limits block");
    let limits = &limits[..limits.find("\n\n").expect("a blank line after it")];
    let limits = settings(limits);
    assert!(limits.len() >= 10, "{limits:?}");
    for line in limits {
        assert!(defaults.contains(&line), "{line} is not the default");
    }
}

#[test]
fn the_two_machines_files_are_valid() {
    let text = readme();
    loads_as_written("server", &heredoc(&text, "/etc/h2rev2/server.toml"));
    loads_as_written("client", &heredoc(&text, "client.toml"));
}
