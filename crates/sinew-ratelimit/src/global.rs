//! Global rate limits: counters in Redis shared by every proxy that names the same Redis,
//! decided in one round trip, and never a wait longer than the configured timeout.
//!
//! One decision is one `EVALSHA` of `window.lua`, which reads and bumps every counter
//! of the request at once (fixed or sliding windows; the script says how). The script is
//! loaded when a connection is made; should Redis have lost it (a restart the connection
//! survived), the `redis` crate's invocation falls back to loading it and trying again.
//!
//! Connection: one multiplexed connection (the `redis` crate's `MultiplexedConnection`),
//! shared by every request without a lock; requests pipeline on it. It is made and remade
//! by a background task, never by a request: while there is none, a decision is
//! [`GlobalVerdict::Unavailable`] at once, and the caller applies its failure mode. The
//! task retries with backoff (50ms doubling to 1s). A connection is dropped and remade
//! when a command fails for a connection reason, or after three decisions in a row time
//! out (a stalled Redis: requests then stop waiting for it at all until it answers again).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};
use tokio::sync::{watch, Notify};

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `host:port`.
    pub address: String,
    /// Longest a decision may take.
    pub timeout: Duration,
    /// Longest a background connection attempt may take.
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Fixed,
    Sliding,
}

/// One counter a request is counted under: its full Redis key (without the window
/// number), and its limit per window.
#[derive(Debug, Clone)]
pub struct Counter {
    pub key: Vec<u8>,
    pub limit: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalVerdict {
    /// Under every limit; the tightest counter's limit, room left and time to its reset.
    Allowed {
        limit: u32,
        remaining: u32,
        reset: Duration,
    },
    /// Over a limit.
    OverLimit { limit: u32, reset: Duration },
    /// No connection, a connection error, or no answer within the timeout.
    Unavailable,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Timeouts in a row after which the connection counts as stalled.
const STALLED_AFTER: u32 = 3;

struct Shared {
    options: RedisOptions,
    window: Window,
    script: Script,
    connection: ArcSwapOption<MultiplexedConnection>,
    /// Wakes the connection task: the connection broke, or the limiter is gone.
    wake: Notify,
    closed: AtomicBool,
    timeouts_in_a_row: AtomicU32,
    /// Becomes true once the first connection attempt has ended, either way.
    first_attempt_done: watch::Sender<bool>,
}

/// A global limiter. Dropping it ends its connection task.
pub struct GlobalLimiter {
    shared: Arc<Shared>,
    started: AtomicBool,
}

impl GlobalLimiter {
    /// A limiter with no connection yet; [`GlobalLimiter::start`] begins connecting.
    pub fn new(options: RedisOptions, window: Window) -> Self {
        Self {
            shared: Arc::new(Shared {
                options,
                window,
                script: Script::new(include_str!("window.lua")),
                connection: ArcSwapOption::empty(),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
                timeouts_in_a_row: AtomicU32::new(0),
                first_attempt_done: watch::channel(false).0,
            }),
            started: AtomicBool::new(false),
        }
    }

    pub fn options(&self) -> &RedisOptions {
        &self.shared.options
    }

    pub fn window(&self) -> Window {
        self.shared.window
    }

    /// Starts the connection task (once; later calls do nothing). Needs a tokio runtime.
    pub fn start(&self) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(keep_connected(self.shared.clone()));
        }
    }

    /// Waits until the first connection attempt has ended, at most `bound`: a proxy that
    /// starts while Redis is up then counts its first requests instead of letting them
    /// through unseen.
    pub async fn first_attempt(&self, bound: Duration) {
        let mut done = self.shared.first_attempt_done.subscribe();
        let _ = tokio::time::timeout(bound, done.wait_for(|d| *d)).await;
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.shared.connection.load().is_some()
    }

    /// Counts one request under `counters` and says whether it may go.
    pub async fn decide(&self, counters: &[Counter]) -> GlobalVerdict {
        let shared = &self.shared;
        let Some(connection) = shared.connection.load_full() else {
            return GlobalVerdict::Unavailable;
        };
        let mut invocation = shared.script.prepare_invoke();
        invocation.arg(u8::from(shared.window == Window::Sliding));
        for c in counters {
            invocation
                .key(&c.key[..])
                .arg(c.limit)
                .arg(c.window.as_millis() as u64);
        }
        let mut conn = (*connection).clone();
        let answer = tokio::time::timeout(
            shared.options.timeout,
            invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok(reply)) => {
                shared.timeouts_in_a_row.store(0, Ordering::Relaxed);
                // Read as RESP's own integers and range-checked here: the redis crate
                // converts an integer to a narrower type by truncating it, which would
                // make 257 "allowed" and 4294967296 a limit of 0.
                let Some((allowed, limit, remaining, reset_ms)) = script_answer(reply) else {
                    tracing::debug!(
                        ?reply,
                        "global rate limit: the script's answer is out of range"
                    );
                    return GlobalVerdict::Unavailable;
                };
                let reset = Duration::from_millis(reset_ms);
                if allowed == 1 {
                    GlobalVerdict::Allowed {
                        limit,
                        remaining,
                        reset,
                    }
                } else {
                    GlobalVerdict::OverLimit { limit, reset }
                }
            }
            Ok(Err(e)) if e.is_timeout() => {
                self.timed_out(&connection);
                GlobalVerdict::Unavailable
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "global rate limit: Redis command failed");
                if e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_io_error() {
                    self.broken(&connection);
                }
                GlobalVerdict::Unavailable
            }
            Err(_) => {
                self.timed_out(&connection);
                GlobalVerdict::Unavailable
            }
        }
    }

    fn timed_out(&self, connection: &Arc<MultiplexedConnection>) {
        let n = self
            .shared
            .timeouts_in_a_row
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n >= STALLED_AFTER {
            tracing::debug!("global rate limit: Redis stalled; reconnecting");
            self.broken(connection);
        }
    }

    /// Drops `connection` (unless another request already replaced it) and wakes the task.
    fn broken(&self, connection: &Arc<MultiplexedConnection>) {
        let previous = self
            .shared
            .connection
            .compare_and_swap(connection, None::<Arc<MultiplexedConnection>>);
        if previous
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, connection))
        {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for GlobalLimiter {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// window.lua's `{allowed, limit, remaining, reset_ms}`, when each is in its range.
fn script_answer(
    (allowed, limit, remaining, reset_ms): (i64, i64, i64, i64),
) -> Option<(u8, u32, u32, u64)> {
    Some((
        u8::try_from(allowed).ok()?,
        u32::try_from(limit).ok()?,
        u32::try_from(remaining).ok()?,
        u64::try_from(reset_ms).ok()?,
    ))
}

/// Makes a connection whenever there is none, until the limiter is dropped.
async fn keep_connected(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_FIRST;
    let mut was_down = false;
    while !shared.closed.load(Ordering::Acquire) {
        if shared.connection.load().is_some() {
            shared.wake.notified().await;
            continue;
        }
        match connect(&shared).await {
            Ok(connection) => {
                if was_down {
                    tracing::info!(redis = %shared.options.address, "global rate limit: Redis reachable again");
                }
                was_down = false;
                backoff = BACKOFF_FIRST;
                shared.timeouts_in_a_row.store(0, Ordering::Relaxed);
                shared.connection.store(Some(Arc::new(connection)));
            }
            Err(e) => {
                if !was_down {
                    tracing::warn!(redis = %shared.options.address, error = %e, "global rate limit: Redis unreachable; retrying in the background");
                }
                was_down = true;
            }
        }
        shared.first_attempt_done.send_replace(true);
        if shared.connection.load().is_none() {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shared.wake.notified() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Connects and loads the script, within `connect_timeout`.
async fn connect(shared: &Shared) -> Result<MultiplexedConnection, String> {
    let attempt = async {
        let client = redis::Client::open(format!("redis://{}/", shared.options.address))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(shared.options.connect_timeout))
            .set_response_timeout(Some(shared.options.timeout));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        shared
            .script
            .prepare_invoke()
            .load_async(&mut connection)
            .await?;
        Ok::<_, redis::RedisError>(connection)
    };
    match tokio::time::timeout(shared.options.connect_timeout, attempt).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {:?}",
            shared.options.connect_timeout
        )),
    }
}
