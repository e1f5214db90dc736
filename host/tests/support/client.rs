//! Test support for the client SDK: a config that reconnects quickly, and waiting for events.

use std::time::Duration;

use futures_util::StreamExt;
use kefu_host::client::{ClientConfig, Subscription, TopicEvent};

/// A password config for `url` with fast reconnects; requests time out after `wait`.
pub fn config(url: String, login: &str, password: &str, wait: Duration) -> ClientConfig {
    let mut c = ClientConfig::password(url, login, password);
    c.backoff.base = kefu_core::time::Duration::from_millis(20);
    c.backoff.cap = kefu_core::time::Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = wait;
    c
}

/// The next event matching `pred` within `wait`, skipping others.
pub async fn next(
    sub: &mut Subscription,
    wait: Duration,
    pred: impl Fn(&TopicEvent) -> bool,
) -> TopicEvent {
    tokio::time::timeout(wait, async {
        loop {
            let ev = sub.next().await.expect("subscription open");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event in time")
}
