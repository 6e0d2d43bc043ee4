//! `/logging`: shows the log filter (GET) and changes it (POST `?level=debug` for every
//! module, `?sinew_proxy=debug` for one), through a [`LogControl`] the binary provides
//! (tracing-subscriber's reload handle around its `EnvFilter`). A module or level it does
//! not know is refused with 400, never taken silently.

use http::StatusCode;

use super::{text, Admin, Query, Reply};

/// Reads and replaces the process's log filter.
pub trait LogControl: Send + Sync {
    /// The filter now, in `EnvFilter` syntax (`info,sinew_proxy=debug`).
    fn current(&self) -> String;
    /// Replaces the filter; Err with the parser's message when `filter` is not valid.
    fn set(&self, filter: &str) -> Result<(), String>;
    /// The crates that log in this process (a module path's first segment, such as
    /// `sinew_proxy`); a name outside them is refused, as it would change nothing. None
    /// when the process cannot tell, and then any module path is taken.
    fn modules(&self) -> Option<&[&str]> {
        None
    }
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
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{name}: not a module path (letters, digits, _ and ::)\n"),
            );
        } else if let Some(unknown) = unknown_module(log.modules(), name) {
            return text(StatusCode::BAD_REQUEST, unknown);
        } else {
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
        }
    }
    match log.set(&filter) {
        Ok(()) => text(StatusCode::OK, format!("{}\n", log.current())),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{filter}: {e}\n")),
    }
}

/// Why `name` names no module that logs here, or None when it does (or nobody knows).
fn unknown_module(modules: Option<&[&str]>, name: &str) -> Option<String> {
    let modules = modules?;
    let krate = name.split("::").next().unwrap_or(name);
    if modules.contains(&krate) {
        return None;
    }
    Some(format!(
        "{name}: no such module; the crates that log here are {} (a module inside one, \
         such as sinew_proxy::protocol, works too), or use ?level=L for all of them\n",
        modules.join(", ")
    ))
}

fn unavailable() -> Reply {
    text(
        StatusCode::NOT_IMPLEMENTED,
        "this process has no log control (embedded proxy)\n".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_known_by_its_crate() {
        let known: &[&str] = &["sinew_proxy", "h2"];
        assert_eq!(unknown_module(Some(known), "sinew_proxy"), None);
        assert_eq!(
            unknown_module(Some(known), "sinew_proxy::stream::handler"),
            None
        );
        let refused = unknown_module(Some(known), "no_such_module").unwrap();
        assert!(
            refused.starts_with(
                "no_such_module: no such module; the crates that log here are sinew_proxy, h2"
            ),
            "{refused}"
        );
        assert!(unknown_module(Some(known), "sinew_proxyx").is_some());
        assert_eq!(unknown_module(None, "anything"), None);
    }
}
