//! The writing half of an RPC connection, either side: messages queued by many calls
//! are written as they come, several in one write when they queue up.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The most bytes gathered into one write.
const MAX_BATCH: usize = 64 * 1024;

/// Writes what `queued` brings until every sender is gone (then shuts the write side)
/// or a write fails (then calls `failed`).
pub(super) async fn write_batched<W: AsyncWrite>(
    write: W,
    mut queued: mpsc::Receiver<Bytes>,
    failed: impl FnOnce(),
) {
    let mut write = std::pin::pin!(write);
    let mut batch = BytesMut::new();
    while let Some(first) = queued.recv().await {
        let wrote = if queued.is_empty() {
            write.write_all(&first).await
        } else {
            batch.extend_from_slice(&first);
            while let Ok(next) = queued.try_recv() {
                batch.extend_from_slice(&next);
                if batch.len() > MAX_BATCH {
                    break;
                }
            }
            let r = write.write_all(&batch).await;
            batch.clear();
            r
        };
        if wrote.is_err() || write.flush().await.is_err() {
            failed();
            return;
        }
    }
    let _ = write.shutdown().await;
}
