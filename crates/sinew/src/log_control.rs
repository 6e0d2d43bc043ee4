//! The process's log filter, changeable at run time: tracing-subscriber's reload layer
//! around the `EnvFilter` (`RUST_LOG`, default `info`), handed to the admin API's
//! `/logging` as a [`LogControl`].

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

/// Installs the global subscriber (stderr) and returns the control over its filter.
pub fn init() -> Arc<dyn LogControl> {
    let text = std::env::var("RUST_LOG")
        .ok()
        .filter(|t| EnvFilter::try_new(t).is_ok())
        .unwrap_or_else(|| "info".to_string());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&text));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    Arc::new(ReloadableFilter {
        handle,
        text: Mutex::new(text),
    })
}
