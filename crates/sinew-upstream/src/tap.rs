//! A stream wrapper that shows every byte read to an observer on the way through,
//! unchanged. Sinew uses it to learn things hyper does not expose: an HTTP/2 peer's
//! first SETTINGS, or whether an HTTP/1 request head used bare LFs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sees the bytes a [`ReadTap`] reads.
pub trait ReadObserver {
    fn observe(&mut self, bytes: &[u8]);
    /// Once true, the tap stops calling [`ReadObserver::observe`].
    fn is_done(&self) -> bool;
}

pin_project_lite::pin_project! {
    /// Passes reads and writes through to `inner`, showing reads to an observer.
    pub struct ReadTap<T, O> {
        #[pin]
        inner: T,
        observer: O,
    }
}

impl<T, O> ReadTap<T, O> {
    pub fn new(inner: T, observer: O) -> Self {
        Self { inner, observer }
    }
}

impl<T: AsyncRead, O: ReadObserver> AsyncRead for ReadTap<T, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if !this.observer.is_done() {
            this.observer.observe(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite, O> AsyncWrite for ReadTap<T, O> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
