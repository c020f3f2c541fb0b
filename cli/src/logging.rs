//! Logs on stderr: the level from `RUST_LOG`, text or JSON lines.
//!
//! h2, hyper and rustls log every frame, header block and record at debug and trace
//! level (about nine lines per proxied request). When `RUST_LOG` sets a default level
//! above info (`RUST_LOG=debug`), they are capped at info unless `RUST_LOG` names them
//! itself: `RUST_LOG=debug` shows h2rev2's own debug lines, `RUST_LOG=debug,h2=debug`
//! shows h2's frames too.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::cli::LogFormat;

/// The libraries whose debug output is hidden unless asked for by name.
const CHATTY: [&str; 3] = ["h2", "hyper", "rustls"];

/// The prefix of h2rev2's own targets (`h2rev2`, `h2rev2_driver`, ...).
const OURS: &str = "h2rev2";

/// The level when `RUST_LOG` is unset, empty or invalid.
const DEFAULT: &str = "info";

/// The filter directives for `rust_log` (the value of `RUST_LOG`).
pub fn directives(rust_log: Option<&str>) -> String {
    let Some(given) = rust_log.map(str::trim).filter(|s| !s.is_empty()) else {
        return DEFAULT.to_string();
    };
    if EnvFilter::try_new(given).is_err() {
        return DEFAULT.to_string();
    }
    // The default level (a directive that is only a level; the last one counts). Without
    // one, only the targets named are on, and the chatty libraries only if named.
    let Some(default) = given
        .split(',')
        .filter_map(|d| d.trim().parse::<LevelFilter>().ok())
        .next_back()
        .filter(|l| *l > LevelFilter::INFO)
    else {
        return given.to_string();
    };
    let mut out = given.to_string();
    for target in CHATTY {
        if !names(given, target) {
            out.push_str(&format!(",{target}=info"));
        }
    }
    // A directive matches every target that starts with its target, so `h2=info` would
    // cap h2rev2's own crates too: give them the default level back.
    if !names(given, OURS) {
        out.push_str(&format!(",{OURS}={default}"));
    }
    out
}

/// Whether a directive of `rust_log` is about exactly `target` (a directive for one of
/// its modules is more specific than `target=info` and wins anyway).
fn names(rust_log: &str, target: &str) -> bool {
    rust_log
        .split(',')
        .any(|d| d.split(['=', '[']).next().unwrap_or("").trim() == target)
}

/// Installs the global subscriber: level from `RUST_LOG` (see [`directives`]), to
/// stderr, in `format`.
pub fn init(format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::new(directives(rust_log.as_deref()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatty_libraries_are_capped_unless_named() {
        assert_eq!(directives(None), "info");
        assert_eq!(directives(Some(" ")), "info");
        assert_eq!(directives(Some("warn")), "warn");
        assert_eq!(directives(Some("info,h2rev2=warn")), "info,h2rev2=warn");
        assert_eq!(
            directives(Some("debug")),
            "debug,h2=info,hyper=info,rustls=info,h2rev2=debug"
        );
        assert_eq!(
            directives(Some("debug,h2=trace")),
            "debug,h2=trace,hyper=info,rustls=info,h2rev2=debug"
        );
        assert_eq!(
            directives(Some("TRACE,hyper::proto=debug,rustls,h2rev2=info")),
            "TRACE,hyper::proto=debug,rustls,h2rev2=info,h2=info,hyper=info"
        );
        // No default level: only what is named is on; nothing to cap.
        assert_eq!(
            directives(Some("h2rev2_driver=debug")),
            "h2rev2_driver=debug"
        );
        assert!(!names("hyper_util=debug", "hyper"));
        assert!(names("h2[conn]=debug", "h2"));
        assert_eq!(directives(Some("not a=filter=")), "info");
    }

    /// Whether `RUST_LOG=$log` lets debug events of `$target` through, asked of
    /// tracing-subscriber itself (a target must be a literal).
    macro_rules! debug_on {
        ($log:expr, $target:literal) => {{
            use tracing_subscriber::layer::SubscriberExt as _;
            let filter = EnvFilter::new(directives(Some($log)));
            let subscriber = tracing_subscriber::registry().with(filter);
            tracing::subscriber::with_default(subscriber, || {
                tracing::enabled!(target: $target, tracing::Level::DEBUG)
            })
        }};
    }

    #[test]
    fn the_filter_does_what_it_says() {
        assert!(!debug_on!("debug", "h2"));
        assert!(!debug_on!("debug", "h2::codec::framed_write"));
        assert!(!debug_on!("debug", "hyper"));
        assert!(!debug_on!("debug", "rustls::conn"));
        assert!(debug_on!("debug", "h2rev2_driver::listener"));
        assert!(debug_on!("debug", "h2rev2"));
        assert!(debug_on!("debug", "tokio_util"));
        assert!(debug_on!("debug,h2=debug", "h2::codec::framed_write"));
        assert!(debug_on!("debug,h2::codec=debug", "h2::codec"));
        assert!(!debug_on!("debug,h2::codec=debug", "h2::proto"));
        assert!(!debug_on!("info", "h2rev2"));
    }
}
