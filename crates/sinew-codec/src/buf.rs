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

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> PoolConfig {
        PoolConfig {
            buf_size: 1024,
            max_free: 2,
            max_keep_capacity: 4096,
        }
    }

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        let mut pool = BufPool::new(small());
        let buf = pool.take();
        assert!(buf.capacity() >= 1024);
        let address = buf.as_ptr();
        assert!(pool.give_back(buf));
        assert_eq!(pool.free_count(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), address, "the same allocation came back");
        assert!(again.is_empty());
        assert_eq!(pool.free_count(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_cap() {
        let mut pool = BufPool::new(small());
        let taken: Vec<_> = (0..5).map(|_| pool.take()).collect();
        let kept = taken.into_iter().map(|b| pool.give_back(b));
        let kept = kept.filter(|&k| k).count();
        assert_eq!(kept, 2);
        assert_eq!(pool.free_count(), 2);
        assert!(pool.free_bytes() >= 2048 && pool.free_bytes() < 4 * 4096);
    }

    #[test]
    fn a_grown_buffer_is_freed_not_kept() {
        let mut pool = BufPool::new(small());
        let mut buf = pool.take();
        buf.extend_from_slice(&[0u8; 10_000]);
        assert!(!pool.give_back(buf));
        assert_eq!(pool.free_count(), 0);
    }

    #[test]
    fn a_buffer_with_data_still_shared_is_not_kept() {
        let mut pool = BufPool::new(small());
        let mut buf = pool.take();
        buf.extend_from_slice(&[7u8; 1000]);
        let body = buf.split_to(1000).freeze();
        // The body still points into the allocation: reusing it would need a new one.
        assert!(!pool.give_back(buf));
        drop(body);
        // Once nothing shares it, a split buffer's whole allocation is reclaimed.
        let mut buf = pool.take();
        buf.extend_from_slice(&[7u8; 1000]);
        drop(buf.split_to(1000).freeze());
        assert!(pool.give_back(buf));
        assert!(pool.take().capacity() >= 1024);
    }

    #[test]
    fn a_given_back_buffer_is_emptied() {
        let mut pool = BufPool::new(small());
        let mut buf = pool.take();
        buf.extend_from_slice(b"stale");
        assert!(pool.give_back(buf));
        assert!(pool.take().is_empty());
    }

    #[test]
    fn trim_frees_down_to_the_count_kept() {
        let mut pool = BufPool::new(PoolConfig {
            max_free: 10,
            ..small()
        });
        let taken: Vec<_> = (0..8).map(|_| pool.take()).collect();
        for b in taken {
            pool.give_back(b);
        }
        assert_eq!(pool.free_count(), 8);
        pool.trim(3);
        assert_eq!(pool.free_count(), 3);
        pool.trim(0);
        assert_eq!((pool.free_count(), pool.free_bytes()), (0, 0));
    }

    #[test]
    fn an_idle_connection_holds_no_buffer() {
        let mut pool = BufPool::new(small());
        let mut conn = ConnBuf::new();
        assert!(!conn.is_held());
        conn.get_from(&mut pool)
            .extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert!(conn.is_held());
        // Something is buffered: the buffer stays.
        assert!(!conn.release_if_idle_to(&mut pool));
        assert_eq!(conn.buffered(), b"GET / HTTP/1.1\r\n");
        conn.get_from(&mut pool).clear();
        assert!(conn.release_if_idle_to(&mut pool));
        assert!(!conn.is_held());
        assert_eq!(pool.free_count(), 1);
        // The next readable event takes it again.
        conn.get_from(&mut pool);
        assert_eq!(pool.free_count(), 0);
    }

    #[test]
    fn the_worker_pool_is_per_thread() {
        let mut conn = ConnBuf::new();
        conn.get().extend_from_slice(b"x");
        conn.get().clear();
        assert!(conn.release_if_idle());
        assert_eq!(with_worker_pool(|p| p.free_count()), 1);
        let other = std::thread::spawn(|| with_worker_pool(|p| p.free_count()))
            .join()
            .unwrap();
        assert_eq!(other, 0, "another thread has its own pool");
        // Reentrant use does not panic.
        let nested = with_worker_pool(|_| with_worker_pool(|p| p.free_count()));
        assert_eq!(nested, 0);
    }
}
