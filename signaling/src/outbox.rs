//! What the server sends a client, queued: a session (or a proxied session's relay) never waits
//! on the client's socket. Its messages go into a bounded queue ([`Outbox`], a `Sink` that never
//! blocks) and a writer of their own ([`write_out`]) puts them on the socket. A client that stops
//! reading stalls only that writer: the session still hears the engine, checks liveness and
//! takes kicks, and the engine's events do not pile up without bound.
//!
//! A full queue is an error the session sees at once (the client is that far behind: it is
//! dropped); a send that takes longer than [`SEND_TIMEOUT`] ends the writer, and the session
//! sees that through [`Outbox::gone`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tracing::info;

/// Messages a client may be behind before it is dropped. A join into a busy room and a burst of
/// layer changes stay well below it.
pub const QUEUE: usize = 1024;

/// How long one message may take to reach the client's socket.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stalled {
    /// [`QUEUE`] messages are waiting: the client does not read.
    Full,
    /// The writer gave up (a send failed or timed out).
    Gone,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stalled::Full => "the client is too far behind",
            Stalled::Gone => "the client's socket no longer takes messages",
        })
    }
}

/// The queue's sending end: a `Sink` that never waits.
pub struct Outbox {
    queue: mpsc::Sender<Message>,
}

/// A queue of `capacity` messages: the outbox for the session, the receiver for [`write_out`].
pub fn outbox(capacity: usize) -> (Outbox, mpsc::Receiver<Message>) {
    let (queue, rx) = mpsc::channel(capacity);
    (Outbox { queue }, rx)
}

impl Outbox {
    /// Resolves once the writer has given up.
    pub fn gone(&self) -> impl std::future::Future<Output = ()> + 'static {
        let queue = self.queue.clone();
        async move { queue.closed().await }
    }
}

impl Sink<Message> for Outbox {
    type Error = Stalled;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Stalled>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Stalled> {
        self.queue.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Stalled::Full,
            mpsc::error::TrySendError::Closed(_) => Stalled::Gone,
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Stalled>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Stalled>> {
        Poll::Ready(Ok(()))
    }
}

/// Writes the queued messages to `sink` until the queue ends (its [`Outbox`] dropped and
/// everything in it written), a send fails, or a send takes longer than `timeout`; then closes
/// the sink (within `timeout` too).
pub async fn write_out<S: Sink<Message> + Unpin>(
    mut sink: S,
    mut queue: mpsc::Receiver<Message>,
    timeout: Duration,
) {
    while let Some(message) = queue.recv().await {
        match tokio::time::timeout(timeout, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                info!(
                    ?timeout,
                    "the client does not read what it is sent; giving up on it"
                );
                return;
            }
        }
    }
    let _ = tokio::time::timeout(timeout, sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes one message and then never another.
    struct Jammed(usize);

    impl Sink<Message> for Jammed {
        type Error = ();
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            if self.0 == 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
        fn start_send(mut self: Pin<&mut Self>, _: Message) -> Result<(), ()> {
            self.0 += 1;
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_jammed_socket_fills_the_queue_and_then_ends_the_writer() {
        let (mut outbox, queue) = outbox(4);
        let gone = outbox.gone();
        let writer = tokio::spawn(write_out(Jammed(0), queue, SEND_TIMEOUT));
        // The writer takes the first and waits on the socket with the second...
        for _ in 0..2 {
            outbox.send(Message::Text("x".into())).await.unwrap();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        // ... and then the queue holds four, and no more.
        for _ in 0..4 {
            outbox.send(Message::Text("x".into())).await.unwrap();
        }
        assert_eq!(
            outbox.send(Message::Text("x".into())).await,
            Err(Stalled::Full)
        );
        // Nothing waited: the session went on. After the timeout the writer gives up.
        tokio::time::sleep(SEND_TIMEOUT + Duration::from_millis(10)).await;
        gone.await;
        writer.await.unwrap();
        assert_eq!(
            outbox.send(Message::Text("x".into())).await,
            Err(Stalled::Gone)
        );
    }

    #[tokio::test]
    async fn everything_queued_is_written_in_order_before_the_sink_closes() {
        let (mut outbox, queue) = outbox(QUEUE);
        let mut written: Vec<Message> = Vec::new();
        for i in 0..100 {
            outbox
                .send(Message::Text(i.to_string().into()))
                .await
                .unwrap();
        }
        drop(outbox);
        write_out(&mut written, queue, SEND_TIMEOUT).await;
        let got: Vec<String> = written
            .iter()
            .map(|m| match m {
                Message::Text(t) => t.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(got, want);
    }
}
