//! The SDK's error type.

use kefu_core::engine::EngineError;
use kefu_core::proto::Code;

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The gateway URL is not `tcp://host:port`, `ws://host[:port][/path]` or `wss://...`.
    #[error("bad gateway url {0:?}: expected tcp://host:port, ws://host:port or wss://host:port")]
    BadUrl(String),
    /// The login secret is longer than the engine keeps (`kefu_core::engine::MAX_SECRET`).
    #[error("credentials too long")]
    BadCredentials,
    /// The TLS setup failed (an extra CA that is not PEM, no usable protocol versions).
    #[error("tls setup: {0}")]
    Tls(String),
    /// The engine could not be built (its thread could not be spawned).
    #[error("could not build the engine: {0}")]
    Spawn(std::io::Error),
    /// The engine refused the command (full pool or outbox, bad topic, too large, closed...).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The gateway answered the request with this non-success code.
    #[error("the gateway refused the request: {0}")]
    Refused(Code),
    /// No connection came up within [`crate::client::ClientConfig::request_timeout`] of
    /// [`crate::client::Client::connect`]; the last attempt failed like this (connection
    /// refused, an untrusted TLS certificate, a WebSocket handshake refused...).
    #[error("cannot reach the gateway: {0}")]
    Connect(String),
    /// No answer in time: the first login during [`crate::client::Client::connect`], or a
    /// request that waits for the gateway's answer.
    #[error("timed out")]
    Timeout,
    /// The client was closed (or its driver stopped) before the answer came.
    #[error("the client is closed")]
    Closed,
    /// No topic of that name is known to this client.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
}
