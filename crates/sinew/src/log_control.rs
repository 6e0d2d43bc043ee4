//! The process's log filter, changeable at run time: tracing-subscriber's reload layer
//! around the `EnvFilter` (`RUST_LOG`, default `info`), handed to the admin API's
//! `/logging` as a [`LogControl`]. Lines are coloured only on a terminal.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use sinew_proxy::admin::LogControl;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

struct ReloadableFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter's text as last set (EnvFilter's Display reorders directives).
    text: Mutex<String>,
}

impl LogControl for ReloadableFilter {
    fn current(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn modules(&self) -> Option<&[&str]> {
        Some(LOGGING_CRATES)
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let parsed = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.handle.reload(parsed).map_err(|e| e.to_string())?;
        if let Ok(mut t) = self.text.lock() {
            *t = filter.to_string();
        }
        tracing::info!(filter, "log filter changed");
        Ok(())
    }
}

/// The crates in this binary that write log events (through `tracing`, or `log` which
/// tracing-subscriber forwards), by the name their events carry as target. Sinew's own,
/// and the dependencies whose logs help: Cargo.lock's packages that depend on `tracing`
/// or `log`.
const LOGGING_CRATES: &[&str] = &[
    "sinew",
    "sinew_control",
    "sinew_proxy",
    "sinew_ratelimit",
    "sinew_upstream",
    "sinew_xds_client",
    "h2",
    "hyper_rustls",
    "hyper_util",
    "kube_client",
    "kube_runtime",
    "rustls",
    "tonic",
    "tower",
    "tower_http",
];

/// Whether log lines get ANSI colours: only on a terminal, and never under `NO_COLOR`
/// (set and not empty, as no-color.org says), so files and pipes get plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber (stderr) and returns the control over its filter.
pub fn init() -> Arc<dyn LogControl> {
    let text = std::env::var("RUST_LOG")
        .ok()
        .filter(|t| EnvFilter::try_new(t).is_ok())
        .unwrap_or_else(|| "info".to_string());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&text));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(colour(
                    std::io::stderr().is_terminal(),
                    std::env::var_os("NO_COLOR"),
                ))
                .with_writer(std::io::stderr),
        )
        .init();
    Arc::new(ReloadableFilter {
        handle,
        text: Mutex::new(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
