//! Live reload of `h2rev2 server`: on SIGHUP, and when a file it reads changes (the
//! config file, token and caller files, the certificate and its key, the admin token
//! file), the command line is read again as it was given (flags, environment, config
//! file) and applied while every session stays up:
//!
//! * Listener tokens, caller access control, limits, timeouts and routes: through
//!   [`h2rev2_tokio::Server::reload`], which ends exactly the sessions whose token was
//!   removed or changed;
//! * the certificate (`--cert`/`--key`): served from the next TLS handshake (a certbot
//!   renewal takes effect without a restart);
//! * TCP forwards: new ones are bound, removed ones closed, the others untouched;
//! * the admin token.
//!
//! A new configuration that does not load (a syntax error, an unknown key, a missing
//! file, a key that is not the certificate's, a forward port in use) is refused as a
//! whole with a logged reason, and the one in force keeps serving. Settings that need
//! a restart (`--listen`, `--admin`, `--client-ca`, the self-signed certificate's
//! settings) are logged as such and keep their value.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _};
use notify::Watcher as _;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::cli::{Cli, Command, ServerArgs};
use crate::config::Prepared;
use crate::error::CliError;
use crate::server::{self, Live};

/// How long file changes are collected before one reload (an editor or certbot writes
/// several files, or one file several times).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The line logged when a reload is applied (followed by its details).
pub const RELOADED: &str = "configuration reloaded";
/// The line logged when a new configuration is refused (followed by the reason).
pub const REFUSED: &str = "reload refused, the configuration in force keeps serving";

/// Starts reloading `live` on SIGHUP and on file changes; `args` is what it was
/// started with.
pub fn spawn(live: Arc<Live>, args: ServerArgs) {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() {
                let _ = tx.send(event.paths);
            }
        }
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "cannot watch files for changes: only SIGHUP reloads");
            None
        }
    };
    tokio::spawn(run(live, args, watcher, rx));
}

async fn run(
    live: Arc<Live>,
    mut args: ServerArgs,
    mut watcher: Option<notify::RecommendedWatcher>,
    mut changes: mpsc::UnboundedReceiver<Vec<PathBuf>>,
) {
    let mut hup = hangups();
    let mut files = watch(watcher.as_mut(), &BTreeSet::new(), &args);
    loop {
        let why = tokio::select! {
            Some(()) = next(&mut hup) => "SIGHUP".to_string(),
            Some(paths) = changes.recv() => {
                let Some(changed) = paths.iter().find(|p| files.contains(&absolute(p))) else {
                    continue;
                };
                let changed = changed.display().to_string();
                // Let the writer finish, then take every change of the batch at once.
                tokio::time::sleep(DEBOUNCE).await;
                while changes.try_recv().is_ok() {}
                format!("{changed} changed")
            }
            else => return,
        };
        info!("{why}: reloading the configuration");
        match reload(&live, &args).await {
            Ok(new) => {
                files = watch(watcher.as_mut(), &files, &new);
                args = new;
            }
            Err(e) => {
                live.server.metrics().reload_refused();
                error!("{REFUSED}: {e}");
                // A file that came back (or a new one the broken config named) is
                // watched too, so fixing it reloads.
                files = watch(watcher.as_mut(), &files, &args);
            }
        }
    }
}

/// SIGHUPs, as a stream; `None` where there are none to watch.
#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot watch SIGHUP: only file changes reload");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Option<()> {
    None
}

#[cfg(unix)]
async fn next(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next(_: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}

/// The files whose change reloads `args`: the config file and every file it reads.
fn files_of(args: &ServerArgs) -> BTreeSet<PathBuf> {
    let mut v: Vec<&Path> = Vec::new();
    v.extend(args.file.config.as_deref());
    v.extend(args.tokens.as_deref());
    v.extend(args.caller_tokens.as_deref());
    v.extend(args.caller_users.as_deref());
    v.extend(args.caller_certs.as_deref());
    v.extend(args.cert.as_deref());
    v.extend(args.key.as_deref());
    v.extend(args.admin.admin_token_file.as_deref());
    v.into_iter().map(absolute).collect()
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Watches the directories of `args`' files (a file replaced by a rename, as editors
/// and certbot's symlinks do, is seen there), dropping the ones `old` needed and `args`
/// does not; returns the files.
fn watch(
    watcher: Option<&mut notify::RecommendedWatcher>,
    old: &BTreeSet<PathBuf>,
    args: &ServerArgs,
) -> BTreeSet<PathBuf> {
    let files = files_of(args);
    let Some(w) = watcher else {
        return files;
    };
    let dirs = |f: &BTreeSet<PathBuf>| -> BTreeSet<PathBuf> {
        f.iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect()
    };
    let (before, now) = (dirs(old), dirs(&files));
    for d in before.difference(&now) {
        let _ = w.unwatch(d);
    }
    for d in now.difference(&before) {
        if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
            warn!(dir = %d.display(), error = %e, "cannot watch for changes");
        } else {
            debug!(dir = %d.display(), "watching for changes");
        }
    }
    files
}

/// The server's arguments read again from the command line it was started with, the
/// environment and the config file.
fn reparse() -> Result<ServerArgs, CliError> {
    let argv = crate::argv::rewrite(std::env::args_os().collect());
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| CliError::usage(e.to_string()))?;
    match crate::config::prepare(cli.command, &matches)? {
        Prepared::Run(Command::Server(args)) => Ok(args),
        _ => Err(CliError::usage("not a server command line")),
    }
}

/// Reads the configuration again and applies it; the new arguments, or why nothing
/// was applied.
async fn reload(live: &Live, old: &ServerArgs) -> Result<ServerArgs, CliError> {
    let args = reparse()?;
    let plan = server::plan(&args)?;
    // Everything that can fail is checked before anything is applied.
    let cert = if plan.self_signed.is_none() {
        Some(
            h2rev2_tokio::tls::CertSlot::new(plan.identity.clone())
                .map_err(|e| CliError::config(format!("--cert/--key: {e}")))?,
        )
    } else {
        None
    };
    let (keep, add): (Vec<_>, Vec<_>) = {
        let forwards = live.forwards.lock().unwrap_or_else(|e| e.into_inner());
        plan.tcp
            .iter()
            .cloned()
            .partition(|(a, id)| forwards.iter().any(|f| f.addr == *a && f.id == *id))
    };
    let bound = server::bind_forwards(&add).await?;
    for (what, changed) in [
        ("--listen", old.listen != args.listen),
        (
            "--admin/--metrics",
            (old.admin.admin, old.admin.metrics) != (args.admin.admin, args.admin.metrics),
        ),
        ("--client-ca", old.client_ca != args.client_ca),
        (
            "the --cluster-* settings",
            format!("{:?}", old.cluster) != format!("{:?}", args.cluster),
        ),
        (
            "--self-signed, --cert-out, --self-signed-key, --hostname",
            (
                old.self_signed,
                &old.cert_out,
                &old.self_signed_key,
                &old.hostnames,
            ) != (
                args.self_signed,
                &args.cert_out,
                &args.self_signed_key,
                &args.hostnames,
            ),
        ),
    ] {
        if changed {
            warn!("{what} changed: this needs a restart; the value in force is kept");
        }
    }

    // Apply.
    let mut notes = Vec::new();
    if let Some(new) = cert {
        let (now, next) = (live.cert.leaf(), new.leaf());
        if now != next {
            live.cert
                .replace(plan.identity.clone())
                .map_err(|e| CliError::config(format!("--cert/--key: {e}")))?;
            notes.push(format!("new certificate {}", plan.identity.fingerprint()));
        }
    }
    let done = live.server.reload(plan.config).await;
    {
        let mut forwards = live.forwards.lock().unwrap_or_else(|e| e.into_inner());
        let before = forwards.len();
        // Dropping a forward closes its port.
        forwards.retain(|f| keep.iter().any(|(a, id)| f.addr == *a && f.id == *id));
        let removed = before - forwards.len();
        let added = bound.len();
        forwards.extend(server::serve_forwards(&live.server, bound)?);
        if removed + added > 0 {
            notes.push(format!("TCP forwards: {added} added, {removed} removed"));
        }
    }
    if let Some(admin) = &live.admin {
        *admin.token.write().unwrap_or_else(|e| e.into_inner()) = plan.admin_token;
    }
    if !done.ended.is_empty() {
        let ids: Vec<&str> = done.ended.iter().map(|i| i.as_str()).collect();
        notes.push(format!(
            "ended the sessions of {} (credential revoked)",
            ids.join(", ")
        ));
    }
    info!(
        generation = done.generation,
        "{RELOADED}{}{}",
        if notes.is_empty() { "" } else { ": " },
        notes.join("; ")
    );
    Ok(args)
}
