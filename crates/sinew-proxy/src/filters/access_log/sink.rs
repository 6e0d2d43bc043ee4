//! Where access-log lines go: stdout or a file, written by one thread per sink from a
//! bounded queue, in batches. Logs naming the same path share a sink (and its writer),
//! across reloads too, so two writers never interleave in one file.
//!
//! Reopening for logrotate: [`reopen_files`] (SIGUSR1 in the binary) bumps a generation;
//! each writer reopens its file before its next batch when the generation moved, so after
//! `mv access.log access.log.1; kill -USR1` the next lines land in a new `access.log`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::render::render;
use super::{Entry, Format};

/// How long a writer lets entries gather after the first before it formats and writes
/// them: one wake-up and one write per interval under load instead of one per request
/// (Envoy buffers file logs too, for up to `file_flush_interval_msec`, 1 s by default).
/// The default queue (4096) holds this long at 400,000 requests/s.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);
/// A write happens at least every this many bytes.
const WRITE_BYTES: usize = 64 * 1024;

/// Bumped on every reopen request.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Entries dropped by every sink since the process started.
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Asks every file sink to reopen its file before its next write (SIGUSR1).
pub fn reopen_files() {
    REOPEN_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Access-log entries dropped because a queue was full, over all sinks, since start
/// (for the metrics).
pub fn dropped_entries() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

type Item = (Arc<Format>, Arc<Entry>);

pub(crate) struct Sink {
    queue: SyncSender<Item>,
    dropped: AtomicU64,
}

impl Sink {
    /// The sink writing to `path`, shared with any other live log naming it; a new one
    /// (and its writer thread) otherwise. Called at config compile time only.
    pub(crate) fn for_path(path: &str, queue_size: usize) -> Arc<Sink> {
        static SINKS: OnceLock<Mutex<HashMap<String, Weak<Sink>>>> = OnceLock::new();
        let mut sinks = SINKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sinks.retain(|_, s| s.strong_count() > 0);
        if let Some(sink) = sinks.get(path).and_then(Weak::upgrade) {
            return sink;
        }
        let (queue, receiver) = sync_channel(queue_size.max(1));
        let sink = Arc::new(Sink {
            queue,
            dropped: AtomicU64::new(0),
        });
        let target = path.to_string();
        let spawned = std::thread::Builder::new()
            .name("sinew-access-log".into())
            .spawn(move || write_loop(&target, receiver));
        if let Err(e) = spawned {
            tracing::error!(path, error = %e, "cannot start the access-log writer");
        }
        sinks.insert(path.to_string(), Arc::downgrade(&sink));
        sink
    }

    /// Queues an entry without waiting; counts it as dropped when the queue is full.
    pub(crate) fn offer(&self, format: Arc<Format>, entry: Arc<Entry>) {
        match self.queue.try_send((format, entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

enum Output {
    Stdout,
    Stderr,
    File(Option<File>),
}

/// The writer thread: waits for an entry, then lets entries gather for [`GATHER`] rather
/// than being woken (and writing) once per request, formats what came and writes it in
/// writes of up to [`WRITE_BYTES`]. Ends when every log using the sink is gone.
fn write_loop(path: &str, receiver: Receiver<Item>) {
    let mut output = match path {
        sinew_config::access_log::STDOUT_PATH => Output::Stdout,
        sinew_config::access_log::STDERR_PATH => Output::Stderr,
        _ => Output::File(None),
    };
    let mut generation = REOPEN_GENERATION.load(Ordering::Relaxed);
    let mut buffer = String::with_capacity(WRITE_BYTES + 4096);
    while let Ok(first) = receiver.recv() {
        buffer.clear();
        render(&first.0, &first.1, &mut buffer);
        drop(first);
        std::thread::sleep(GATHER);
        for (format, entry) in receiver.try_iter() {
            render(&format, &entry, &mut buffer);
            if buffer.len() >= WRITE_BYTES {
                write_out(path, &mut output, &mut generation, &buffer);
                buffer.clear();
            }
        }
        if !buffer.is_empty() {
            write_out(path, &mut output, &mut generation, &buffer);
        }
    }
}

fn write_out(path: &str, output: &mut Output, generation: &mut u64, buffer: &str) {
    match output {
        Output::Stdout => {
            let _ = std::io::stdout().lock().write_all(buffer.as_bytes());
        }
        Output::Stderr => {
            let _ = std::io::stderr().lock().write_all(buffer.as_bytes());
        }
        Output::File(file) => {
            let now = REOPEN_GENERATION.load(Ordering::Relaxed);
            if now != *generation {
                *generation = now;
                *file = None;
            }
            if file.is_none() {
                // Opening may block (a FIFO with no reader): only this thread waits.
                match OpenOptions::new().create(true).append(true).open(path) {
                    Ok(f) => *file = Some(f),
                    Err(e) => {
                        tracing::warn!(path, error = %e, "cannot open the access log; lines lost");
                        return;
                    }
                }
            }
            if let Some(f) = file {
                if let Err(e) = f.write_all(buffer.as_bytes()) {
                    tracing::warn!(path, error = %e, "cannot write the access log");
                    *file = None;
                }
            }
        }
    }
}
