//! SIGINT (Ctrl-C) and SIGTERM end the process gracefully; SIGHUP never ends it: the
//! server reloads its configuration ([`crate::reload`]), other commands log and
//! ignore it.

/// Waits for SIGINT or SIGTERM; returns its name.
pub async fn wait() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                None
            }
        };
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// The line logged for each SIGHUP by commands that do not reload.
pub const HANGUP_IGNORED: &str = "SIGHUP: only `h2rev2 server` reloads its configuration; ignoring";

/// Keeps SIGHUP from ending the process (its default action), from now on; each one
/// is logged unless `quiet` (the server, whose reload task logs its own line). Call
/// it inside the tokio runtime, first.
pub fn ignore_hangup(quiet: bool) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Once registered, tokio's handler replaces the default action for the rest of
        // the process's life.
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if !quiet {
                            tracing::warn!("{HANGUP_IGNORED}");
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP"),
        }
    }
}
