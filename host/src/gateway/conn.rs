//! What a session reads and writes, whatever the transport: whole frame bodies or JSON texts
//! in, encoded units out.

use std::future::Future;
use std::io;

/// One unit read from a client, after framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A binary frame's body (one packet).
    Body(Vec<u8>),
    /// An empty frame: a keepalive ping, answered with one.
    Ping,
    /// A WebSocket text message (one JSON packet).
    Text(String),
    /// Framing garbage (bad magic, CRC, oversized length): the connection is closed.
    Garbage(&'static str),
}

/// One unit written to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    /// One whole binary frame (one WebSocket message on WebSocket).
    Frame(Vec<u8>),
    /// A JSON text message.
    Text(String),
}

/// The write side of a connection.
pub trait Conn: Send {
    /// Queues a unit (may write if buffers are full).
    fn feed(&mut self, unit: Unit) -> impl Future<Output = io::Result<()>> + Send;
    /// Writes everything queued.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the connection politely.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}
