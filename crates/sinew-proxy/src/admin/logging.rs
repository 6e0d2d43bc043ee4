//! `/logging`: shows the log filter (GET) and changes it (POST `?level=debug` for every
//! module, `?sinew_proxy=debug` for one), through a [`LogControl`] the binary provides
//! (tracing-subscriber's reload handle around its `EnvFilter`).

use http::StatusCode;

use super::{text, Admin, Query, Reply};

/// Reads and replaces the process's log filter.
pub trait LogControl: Send + Sync {
    /// The filter now, in `EnvFilter` syntax (`info,sinew_proxy=debug`).
    fn current(&self) -> String;
    /// Replaces the filter; Err with the parser's message when `filter` is not valid.
    fn set(&self, filter: &str) -> Result<(), String>;
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

pub(super) fn show(admin: &Admin) -> Reply {
    match &admin.log {
        Some(log) => text(StatusCode::OK, format!("{}\n", log.current())),
        None => unavailable(),
    }
}

pub(super) fn set(admin: &Admin, query: &Query) -> Reply {
    let Some(log) = &admin.log else {
        return unavailable();
    };
    if query.pairs().is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "say what to change: ?level=debug, or ?MODULE=LEVEL (e.g. sinew_proxy=debug)\n".into(),
        );
    }
    let mut filter = log.current();
    for (name, level) in query.pairs() {
        let level = level.to_ascii_lowercase();
        if !LEVELS.contains(&level.as_str()) {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "{name}={level}: the level is one of {}\n",
                    LEVELS.join(", ")
                ),
            );
        }
        if name == "level" {
            filter = level;
        } else if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            // Later directives for the same module replace earlier ones.
            let kept: Vec<&str> = filter
                .split(',')
                .filter(|d| !d.is_empty() && d.split('=').next() != Some(name.as_str()))
                .collect();
            filter = kept.join(",");
            if !filter.is_empty() {
                filter.push(',');
            }
            filter.push_str(&format!("{name}={level}"));
        } else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{name}: not a module path (letters, digits, _ and ::)\n"),
            );
        }
    }
    match log.set(&filter) {
        Ok(()) => text(StatusCode::OK, format!("{}\n", log.current())),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{filter}: {e}\n")),
    }
}

fn unavailable() -> Reply {
    text(
        StatusCode::NOT_IMPLEMENTED,
        "this process has no log control (embedded proxy)\n".into(),
    )
}
