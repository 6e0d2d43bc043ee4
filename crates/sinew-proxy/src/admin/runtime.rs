//! `/runtime` and `/runtime_modify`: Envoy's runtime (a bootstrap's `layered_runtime`),
//! shown as JSON (GET) and changed in its admin layer (POST `?key=value`), through a
//! [`RuntimeControl`] the binary provides, since the runtime lives where configs are
//! mapped. Without one (a Sinew config), both answer 501.

use std::sync::{Arc, OnceLock};

use http::StatusCode;

use super::{text, Admin, Query, Reply};

/// Reads and changes the runtime.
pub trait RuntimeControl: Send + Sync {
    /// The layers and each key's values, as Envoy's `/runtime` shows them.
    fn show(&self) -> serde_json::Value;
    /// Sets admin-layer values (an empty value removes one); Err says why not.
    fn modify(&self, pairs: &[(String, String)]) -> Result<(), String>;
}

static CONTROL: OnceLock<Arc<dyn RuntimeControl>> = OnceLock::new();

/// Installs the process's runtime control (once; later calls change nothing).
pub fn install(control: Arc<dyn RuntimeControl>) {
    let _ = CONTROL.set(control);
}

pub(super) fn show() -> Reply {
    let Some(control) = CONTROL.get() else {
        return unavailable();
    };
    let mut r = text(StatusCode::OK, format!("{:#}\n", control.show()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn modify(admin: &Admin, query: &Query) -> Reply {
    let Some(control) = CONTROL.get() else {
        return unavailable();
    };
    if query.pairs().is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "say what to change: ?key=value (an empty value removes the key)\n".into(),
        );
    }
    let pairs: Vec<(String, String)> = query.pairs().to_vec();
    match control.modify(&pairs) {
        Ok(()) => {
            // The runtime is read when a config is mapped: map the file again.
            admin.proxy.request_reload();
            text(StatusCode::OK, "OK\n".into())
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn unavailable() -> Reply {
    text(
        StatusCode::NOT_IMPLEMENTED,
        "this proxy has no runtime: only an Envoy bootstrap's layered_runtime has one\n".into(),
    )
}
