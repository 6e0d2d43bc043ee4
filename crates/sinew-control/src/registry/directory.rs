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
