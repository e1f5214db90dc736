//! Per-topic event streams, and the client-wide one. Dropping a [`Subscription`] leaves the
//! topic (when it was the last subscription of that topic).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use kefu_core::pool::TopicKey;
use tokio::sync::mpsc;
use tokio_stream::wrappers::BroadcastStream;

use super::shared::SharedRef;
use super::types::{ClientEvent, TopicEvent};

/// The events of one topic, as a [`Stream`]. Made by [`super::Client::subscribe`]; dropping it
/// unsubscribes (the engine leaves the topic once its last subscription is gone).
///
/// The channel is bounded ([`super::ClientConfig::subscription_buffer`]): an application that
/// does not read back-pressures the driver, which then stops taking events from the engine, so
/// nothing more is acknowledged to the gateway until the application catches up.
pub struct Subscription {
    pub(crate) shared: SharedRef,
    pub(crate) topic: TopicKey,
    pub(crate) name: String,
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<TopicEvent>,
}

impl Subscription {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.name
    }

    /// The next event; `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<TopicEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<TopicEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Subscription {
    type Item = TopicEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TopicEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        let last = match g.routes.get_mut(&self.topic) {
            Some(routes) => {
                routes.retain(|r| r.id != self.id);
                routes.is_empty()
            }
            None => false,
        };
        if last {
            g.routes.remove(&self.topic);
            if self.name != "me" {
                // The engine may be closed or busy: then there is nothing to leave, or the
                // subscription ends with the connection anyway.
                let _ = g.engine.leave(self.topic, false);
            }
            drop(g);
            self.shared.kick();
        }
    }
}

/// Client-wide events (connection state, unread counts, presence) as a [`Stream`]. Made by
/// [`super::Client::events`]; any number may exist. A listener that falls more than 1024
/// events behind skips the oldest (these are notices; messages come through subscriptions).
pub struct ClientEvents {
    pub(crate) inner: BroadcastStream<ClientEvent>,
}

impl Stream for ClientEvents {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(ev))) => return Poll::Ready(Some(ev)),
                Poll::Ready(Some(Err(_lagged))) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
