//! Reloading the config file on SIGHUP or when it changes on disk.
//!
//! The file is polled once a second rather than watched with inotify: it needs no
//! extra dependency, works across editors that replace the file, and a second's delay
//! is fine for config. A change is detected by content, not modification time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use sinew_config::{Diagnostics, LoadedConfig};

use crate::Proxy;

/// Reads and checks a config file: [`crate::load_file`], or one that also reads other
/// formats (the `sinew` binary's, which takes Envoy bootstraps too).
pub type Loader = fn(&Path) -> Result<LoadedConfig, Diagnostics>;

/// Watches `path` and reloads `proxy` until the process ends.
pub async fn watch(proxy: Arc<Proxy>, path: PathBuf, load: Loader) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file change only");
            None
        }
    };
    let mut last = std::fs::read(&path).ok();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let forced = tokio::select! {
            _ = poll.tick() => None,
            _ = async { match hangup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => Some("SIGHUP"),
            _ = proxy.reload_requested() => Some("requested (the runtime changed)"),
        };
        let now = std::fs::read(&path).ok();
        if forced.is_none() && now == last {
            continue;
        }
        last = now;
        tracing::info!(file = %path.display(), reason = forced.unwrap_or("file changed"), "reloading config");
        let loaded = match load(&path) {
            Ok(l) => l,
            Err(d) => {
                proxy.note_reload_failed();
                tracing::error!("config refused; the running config keeps serving:\n{d}");
                continue;
            }
        };
        if let Err(d) = proxy.reload(loaded).await {
            tracing::error!("config refused; the running config keeps serving:\n{d}");
        }
    }
}
