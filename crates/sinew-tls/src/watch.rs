//! Polling files for changes: certificates, keys and trust bundles on disk are re-read
//! when they change, without a restart or a config reload.
//!
//! A poll (one `stat` per file a second) rather than inotify: it works the same for files
//! replaced by rename (as Kubernetes updates mounted secrets, through a symlink swap), on
//! every filesystem, and costs nothing measurable.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// How often watched files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a file's content without reading it.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

fn stamp(path: &str) -> Option<Stamp> {
    // `metadata` follows symlinks, so a swapped symlink (Kubernetes' `..data`) shows as a
    // change of the file it now points to.
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// What a set of files looked like when last looked at: [`FileStamps::changed`] says
/// whether any of them has changed since (written, replaced, created or removed; a
/// directory's stamp changes when a file is moved into it).
#[derive(Debug)]
pub struct FileStamps {
    paths: Vec<String>,
    stamps: Vec<Option<Stamp>>,
}

impl FileStamps {
    /// Stamps `paths` as they are now.
    pub fn new(paths: Vec<String>) -> Self {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        FileStamps { paths, stamps }
    }

    /// Whether any file changed since the last look; the new stamps are kept.
    pub fn changed(&mut self) -> bool {
        let now: Vec<Option<Stamp>> = self.paths.iter().map(|p| stamp(p)).collect();
        if now == self.stamps {
            return false;
        }
        self.stamps = now;
        true
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }
}

/// Calls `reload` on `target` whenever one of `paths` changes, until `target` is dropped.
/// A failed reload is logged and the last good state kept; it is retried at the next
/// change (a certificate and its key are often written one after the other).
/// Does nothing outside a tokio runtime (as when `sinew validate` compiles a config).
pub fn spawn<T: Send + Sync + 'static>(
    target: &Arc<T>,
    paths: Vec<String>,
    reload: fn(&T) -> Result<(), String>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<T> = Arc::downgrade(target);
    let mut stamps = FileStamps::new(paths);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(target) = weak.upgrade() else { return };
            if !stamps.changed() {
                continue;
            }
            let paths = stamps.paths();
            match reload(&target) {
                Ok(()) => tracing::info!(files = ?paths, "reloaded changed TLS files"),
                Err(e) => tracing::warn!(
                    files = ?paths,
                    error = %e,
                    "changed TLS files not loaded; keeping the last good ones"
                ),
            }
        }
    });
}
