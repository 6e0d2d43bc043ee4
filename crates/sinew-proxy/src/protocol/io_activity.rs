//! A downstream connection's bytes, marking when any last moved (read or written), for
//! the stream idle timeout's stall check (`stream::in_flight`). Its reads first give
//! back the bytes already read to tell the protocol apart (`sniff`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::moment::SharedMoment;

/// A downstream connection's bytes, marking when any last moved (read or written). Its
/// reads first return `prefix`: the bytes already read to tell the protocol apart
/// (`sniff`).
pub(crate) struct IoActivity<IO> {
    prefix: Bytes,
    io: IO,
    last: Arc<SharedMoment>,
}

impl<IO> IoActivity<IO> {
    pub(crate) fn new(prefix: Bytes, io: IO, last: Arc<SharedMoment>) -> Self {
        Self { prefix, io, last }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IoActivity<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            if this.prefix.is_empty() {
                // Let the allocation go: a long-lived connection should not keep it.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last.mark();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IoActivity<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.last.mark();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.last.mark();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_return_the_sniffed_prefix_then_the_rest_and_mark_activity() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let last = Arc::new(SharedMoment::unset());
        let mut io = IoActivity::new(Bytes::from_static(b"hello"), server, last.clone());
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
        assert!(
            last.elapsed().is_some(),
            "bytes read mark the connection active"
        );
    }
}
