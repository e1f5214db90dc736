//! kefu-host: kefu on std. The gateway server with durable storage, the tokio transports, the
//! client SDK and everything the `kefu` command runs.
//!
//! | module | job |
//! |---|---|
//! | [`store`] | durable storage: the [`store::Store`] trait and its SQLite implementation |
//! | [`model`] | the stored message model shared by store and gateway |
//! | [`client`] | the client SDK: a cloneable handle driving the core engine over TCP or WebSocket |
//! | [`chat`] | `kefu chat`, the terminal client on the SDK: pure screen state, ratatui view |
//! | [`gateway`] | the IM gateway: sessions, topics, delivery, policy, metrics, listeners |
//! | [`bench`] | `kefu bench`: the load generator (throughput, latency, connection scale) |
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod chat;
pub mod client;
pub mod gateway;
pub mod model;
pub mod store;
