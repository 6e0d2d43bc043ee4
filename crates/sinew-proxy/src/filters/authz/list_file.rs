//! Black and white lists kept in files (Istio Mixer's listchecker): one entry per line,
//! re-read when the file changes.
//!
//! The entries sit behind an `ArcSwap`, so a request reads the current list without a
//! lock. A small thread per file polls its modification time and size every
//! `refresh_interval` and swaps in the new list when they change; a file that cannot be
//! read or has a bad line keeps the last good list and the reason is logged. The thread
//! holds only a weak reference: when the config that compiled the list is replaced and
//! its last request ends, the thread notices at its next poll and stops.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sinew_config::authz::{parse_list, ListFile};

/// A list file's current entries.
pub(crate) struct WatchedList<T> {
    entries: ArcSwap<Box<[T]>>,
    path: PathBuf,
    parse: fn(&str) -> Result<T, String>,
}

/// What identifies a version of the file without reading it.
type Stamp = (Option<SystemTime>, u64);

impl<T: Send + Sync + 'static> WatchedList<T> {
    /// Reads the file (an error says why it cannot be used) and, with `watch`, starts
    /// polling it.
    pub(crate) fn open(
        file: &ListFile,
        parse: fn(&str) -> Result<T, String>,
        watch: bool,
    ) -> Result<Arc<Self>, String> {
        let path = PathBuf::from(&file.from_file);
        let stamp = stamp(&path);
        let entries = read(&path, parse)?;
        let list = Arc::new(WatchedList {
            entries: ArcSwap::from_pointee(entries),
            path,
            parse,
        });
        if watch {
            let weak = Arc::downgrade(&list);
            let interval = file.refresh_interval;
            std::thread::Builder::new()
                .name("sinew-authz-list".into())
                .spawn(move || poll(weak, interval, stamp))
                .map_err(|e| format!("cannot start the thread that watches the file: {e}"))?;
        }
        Ok(list)
    }

    /// The entries as of now.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Box<[T]>>> {
        self.entries.load()
    }

    /// Re-reads the file if its stamp is not `last`; returns the stamp seen.
    fn refresh(&self, last: Stamp) -> Stamp {
        let now = stamp(&self.path);
        if now == last {
            return now;
        }
        match read(&self.path, self.parse) {
            Ok(entries) => {
                tracing::info!(file = %self.path.display(), entries = entries.len(), "authorization list reloaded");
                self.entries.store(Arc::new(entries));
            }
            Err(e) => tracing::warn!(
                file = %self.path.display(),
                "authorization list not reloaded, the last good one stays: {e}"
            ),
        }
        now
    }
}

fn stamp(path: &std::path::Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    }
}

fn read<T>(
    path: &std::path::Path,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Box<[T]>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_list(&text, parse)
        .map(Vec::into_boxed_slice)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn poll<T: Send + Sync + 'static>(list: Weak<WatchedList<T>>, interval: Duration, mut last: Stamp) {
    loop {
        std::thread::sleep(interval);
        let Some(list) = list.upgrade() else {
            return;
        };
        last = list.refresh(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_config::authz::Cidr;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sinew-authz-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("list.txt")
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_one_keeps_the_last_good_list() {
        let path = scratch("refresh");
        std::fs::write(&path, "# allowed\n10.0.0.0/8\n").unwrap();
        let file = ListFile {
            from_file: path.display().to_string(),
            refresh_interval: Duration::from_secs(3600),
        };
        let list = WatchedList::open(&file, Cidr::parse, false).unwrap();
        assert_eq!(list.current().len(), 1);
        let first = stamp(&path);

        std::fs::write(&path, "10.0.0.0/8\n192.168.0.0/16\n127.0.0.1\n").unwrap();
        let second = list.refresh(first);
        assert_eq!(list.current().len(), 3);

        std::fs::write(&path, "10.0.0.0/8\nnot an address at all\n").unwrap();
        list.refresh(second);
        assert_eq!(list.current().len(), 3, "the bad file is not taken");

        std::fs::remove_file(&path).unwrap();
        list.refresh(stamp(&path));
        assert_eq!(
            list.current().len(),
            3,
            "a missing file is not taken either"
        );
    }

    #[test]
    fn a_missing_or_bad_file_at_start_is_an_error_naming_it() {
        let path = scratch("missing");
        let _ = std::fs::remove_file(&path);
        let file = ListFile {
            from_file: path.display().to_string(),
            refresh_interval: Duration::from_secs(1),
        };
        let err = WatchedList::open(&file, Cidr::parse, false).err().unwrap();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::write(&path, "10.0.0.1\n10.0.0.0/99\n").unwrap();
        let err = WatchedList::open(&file, Cidr::parse, false).err().unwrap();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn the_watching_thread_follows_the_file() {
        let path = scratch("watch");
        std::fs::write(&path, "10.0.0.1\n").unwrap();
        let file = ListFile {
            from_file: path.display().to_string(),
            refresh_interval: Duration::from_millis(20),
        };
        let list = WatchedList::open(&file, Cidr::parse, true).unwrap();
        std::fs::write(&path, "10.0.0.1\n10.0.0.2\n").unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while list.current().len() != 2 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(list.current().len(), 2);
    }
}
