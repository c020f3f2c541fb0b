//! SIGINT (Ctrl-C) and SIGTERM end the process gracefully; SIGHUP is logged and
//! ignored.

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

/// The line logged for each SIGHUP.
pub const HANGUP_IGNORED: &str = "SIGHUP: reload is not supported yet; ignoring";

/// Keeps SIGHUP from ending the process (its default action): from now on each one is
/// logged and otherwise ignored. Live reload is not implemented yet. Call it inside
/// the tokio runtime, before serving.
pub fn ignore_hangup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Once registered, tokio's handler replaces the default action for the rest of
        // the process's life.
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::warn!("{HANGUP_IGNORED}");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP"),
        }
    }
}
