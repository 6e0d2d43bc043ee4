//! The directory registry: every `*.yaml` / `*.yml` file in a directory, polled twice a
//! second by content (no inotify dependency; editors that replace files are fine). A
//! file that does not parse is reported as `file:line:column: message` and its last
//! good content keeps being served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Report, Reports};
use crate::services::{self, Resource};

/// Polls `dir` until the builder goes away.
pub async fn watch(dir: PathBuf, reports: Reports) {
    let source = format!("directory {}", dir.display());
    let mut seen: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut good: BTreeMap<PathBuf, Vec<Resource>> = BTreeMap::new();
    let mut first = true;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        poll.tick().await;
        let now = read_all(&dir);
        if now == seen && !first {
            continue;
        }
        first = false;
        good.retain(|path, _| now.contains_key(path));
        for (path, bytes) in &now {
            if seen.get(path) == Some(bytes) {
                continue;
            }
            let text = String::from_utf8_lossy(bytes);
            match services::parse(&text) {
                Ok(resources) => {
                    good.insert(path.clone(), resources);
                }
                Err(e) => tracing::error!(
                    "{}:{e} (the file's last good content is still served)",
                    path.display()
                ),
            }
        }
        seen = now;
        let resources = good.values().flatten().cloned().collect();
        if reports
            .send(Report::Definitions {
                source: source.clone(),
                resources,
            })
            .is_err()
        {
            return;
        }
    }
}

fn read_all(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes)))
        .collect()
}

/// Checks a directory registry's file as the control plane would take it: it parses, and
/// building its services and listeners into Envoy resources finds nothing wrong (an `lb`
/// that is no policy, an address that is not `ip:port`). Ok with how many resources it
/// holds; else every problem as `line:column: message`. Routes may name services the
/// file does not define: other files and registries provide those.
pub fn check(text: &str) -> Result<usize, Vec<String>> {
    let located = services::parse_located(text).map_err(|e| vec![e])?;
    let mut catalog = crate::snapshot::Catalog::default();
    let mut labels = Vec::new();
    for (position, resource) in &located {
        let label = match resource {
            Resource::Service(s) => {
                catalog.services.insert(s.name.clone(), s.clone());
                format!("service {:?}", s.name)
            }
            Resource::Listener(l) => {
                catalog.listeners.insert(l.name.clone(), l.clone());
                format!("listener {:?}", l.name)
            }
        };
        labels.push((label, *position));
    }
    let built = crate::snapshot::Built::new(&catalog);
    let problems: Vec<String> = built
        .problems
        .iter()
        .map(|problem| {
            let at = labels
                .iter()
                .find(|(label, _)| problem.starts_with(&format!("{label}:")))
                .map_or(sinew_config::Position { line: 1, column: 1 }, |(_, p)| *p);
            format!("{}:{}: {problem}", at.line, at.column)
        })
        .collect();
    if problems.is_empty() {
        Ok(located.len())
    } else {
        Err(problems)
    }
}
