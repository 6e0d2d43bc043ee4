//! WebSocket and other upgraded connections: once the upstream has answered 101 and the
//! downstream has switched, the two connections are joined byte for byte.

use sinew_stream::Upgraded;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::slot::ListenerSlot;

/// Joins the two halves of an upgraded connection once both sides have switched. The
/// tunnel counts as one of its listener's connections until it ends, and a drain treats
/// it as a TCP proxy connection: it runs until the deadline.
pub(crate) fn tunnel(
    downstream: sinew_stream::OnUpgrade,
    upstream: Upgraded,
    slot: &std::sync::Arc<ListenerSlot>,
) {
    let guard = slot.hold();
    tokio::spawn(slot.drain.watch().cut_at_deadline(async move {
        let _guard = guard;
        // The downstream switches once the 101 is on its wire.
        match downstream.await {
            Ok(down) => {
                if let Err(e) = join_upgraded(down, upstream).await {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    }));
}

/// Copies both ways until both directions end; the bytes each side's codec read past
/// its head go to the other side first.
async fn join_upgraded(down: Upgraded, up: Upgraded) -> std::io::Result<()> {
    let (a, b) = tokio::join!(
        one_way(down.read, down.read_buf, up.write),
        one_way(up.read, up.read_buf, down.write)
    );
    a.and(b)
}

async fn one_way<R, W>(mut from: R, early: bytes::Bytes, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !early.is_empty() {
        to.write_all(&early).await?;
    }
    tokio::io::copy(&mut from, &mut to).await?;
    to.shutdown().await
}
