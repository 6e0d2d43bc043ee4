//! Read buffers from a per-worker pool: a connection takes one when its socket becomes
//! readable and gives it back when it goes idle with nothing buffered, so an idle
//! keep-alive connection holds no buffer at all (nginx frees its buffers the same way;
//! hyper kept 8 KiB per direction for a connection's whole life).
//!
//! The pool is per worker thread and unsynchronised: [`BufPool`] takes `&mut self`, and
//! the worker's own pool is a thread local behind a `RefCell`, never a lock. A
//! connection's future holds only its `BytesMut`, so it stays `Send`; if it ever runs on
//! another thread it simply gives its buffer to that thread's pool.
//!
//! The pool shrinks: it keeps at most `max_free` buffers (the rest are freed when given
//! back), never keeps one that grew past `max_keep_capacity` (a large head should not pin
//! its memory), and [`BufPool::trim`] frees down to a count the worker chooses, so after
//! a burst of connections closes the memory goes back.

use std::cell::RefCell;

use bytes::BytesMut;

/// Sizes and counts for a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Capacity of a new buffer.
    pub buf_size: usize,
    /// Free buffers kept for reuse.
    pub max_free: usize,
    /// A buffer whose capacity grew beyond this is freed, not kept.
    pub max_keep_capacity: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            buf_size: 8 * 1024,
            max_free: 64,
            max_keep_capacity: 32 * 1024,
        }
    }
}

/// A pool of read buffers for one worker.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<BytesMut>,
    config: PoolConfig,
}

impl BufPool {
    pub fn new(config: PoolConfig) -> Self {
        BufPool {
            free: Vec::new(),
            config,
        }
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// An empty buffer with at least `buf_size` capacity: a free one, or a new one.
    pub fn take(&mut self) -> BytesMut {
        self.free
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(self.config.buf_size))
    }

    /// Takes a buffer back; whatever it still holds is discarded. It is kept only if
    /// the pool has room, its whole allocation is reclaimable (no `Bytes` split off it
    /// are still alive) and it has not grown past `max_keep_capacity`; otherwise it is
    /// freed here (or, if shared, when the last `Bytes` of it is dropped). Returns whether
    /// it was kept.
    pub fn give_back(&mut self, mut buf: BytesMut) -> bool {
        buf.clear();
        if self.free.len() >= self.config.max_free
            || !buf.try_reclaim(self.config.buf_size)
            || buf.capacity() > self.config.max_keep_capacity
        {
            return false;
        }
        self.free.push(buf);
        true
    }

    /// Frees free buffers beyond `keep`; the worker calls this on a timer with, say, the
    /// number taken since the last call, so a pool sized by a burst does not outlive it.
    pub fn trim(&mut self, keep: usize) {
        self.free.truncate(keep);
        self.free.shrink_to(keep);
    }

    /// Buffers waiting for reuse.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Heap bytes held by the free buffers.
    pub fn free_bytes(&self) -> usize {
        self.free.iter().map(BytesMut::capacity).sum()
    }
}

impl Default for BufPool {
    fn default() -> Self {
        BufPool::new(PoolConfig::default())
    }
}

thread_local! {
    static WORKER_POOL: RefCell<BufPool> = RefCell::new(BufPool::default());
}

/// This thread's pool, for `f`. If the pool is already in use further up this thread's
/// stack (it never is, in the codec's own use), `f` gets a throwaway pool instead of a
/// panic.
pub fn with_worker_pool<R>(f: impl FnOnce(&mut BufPool) -> R) -> R {
    WORKER_POOL.with(|cell| match cell.try_borrow_mut() {
        Ok(mut pool) => f(&mut pool),
        Err(_) => f(&mut BufPool::default()),
    })
}

/// A connection's read buffer, held only while there is something to read or parse.
#[derive(Debug, Default)]
pub struct ConnBuf {
    buf: Option<BytesMut>,
}

impl ConnBuf {
    pub fn new() -> Self {
        ConnBuf { buf: None }
    }

    /// The buffer to read into, taken from `pool` if the connection holds none: call this
    /// once the socket is readable, not before.
    pub fn get_from(&mut self, pool: &mut BufPool) -> &mut BytesMut {
        self.buf.get_or_insert_with(|| pool.take())
    }

    /// [`ConnBuf::get_from`] this thread's pool.
    pub fn get(&mut self) -> &mut BytesMut {
        if self.buf.is_none() {
            self.buf = Some(with_worker_pool(BufPool::take));
        }
        self.buf.get_or_insert_with(BytesMut::new)
    }

    /// Bytes read but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }

    /// The connection holds a buffer.
    pub fn is_held(&self) -> bool {
        self.buf.is_some()
    }

    /// Gives the buffer back to `pool` if nothing is buffered in it; call when the
    /// connection goes idle. Returns whether the connection now holds no buffer.
    pub fn release_if_idle_to(&mut self, pool: &mut BufPool) -> bool {
        match self.buf.take() {
            None => true,
            Some(buf) if buf.is_empty() => {
                pool.give_back(buf);
                true
            }
            Some(buf) => {
                self.buf = Some(buf);
                false
            }
        }
    }

    /// [`ConnBuf::release_if_idle_to`] this thread's pool.
    pub fn release_if_idle(&mut self) -> bool {
        if self.buf.as_ref().is_some_and(|b| !b.is_empty()) {
            return false;
        }
        match self.buf.take() {
            Some(buf) => with_worker_pool(|pool| pool.give_back(buf)),
            None => false,
        };
        true
    }

    /// Takes the buffer out with whatever it holds (for handing a live connection over,
    /// unread bytes included).
    pub fn take_buffered(&mut self) -> Option<BytesMut> {
        self.buf.take()
    }
}
