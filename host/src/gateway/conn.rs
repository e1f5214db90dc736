//! What a session reads and writes, whatever the transport: whole frame bodies or JSON texts
//! in, encoded units out.

use std::future::Future;
use std::io;

use tokio::sync::mpsc;

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

/// The read side of a connection: where a session's inbound units come from.
pub trait Inlet: Send {
    /// The next unit, waiting for it; `None` once the client is gone. Cancel-safe: a unit is
    /// never lost when the future is dropped unfinished.
    fn recv(&mut self) -> impl Future<Output = Option<Inbound>> + Send;
    /// A unit already read, if there is one, without waiting.
    fn try_recv(&mut self) -> Option<Inbound>;
}

/// Units fed by a reader task (WebSocket: the library reads whole messages in its own task).
impl Inlet for mpsc::Receiver<Inbound> {
    async fn recv(&mut self) -> Option<Inbound> {
        mpsc::Receiver::recv(self).await
    }

    fn try_recv(&mut self) -> Option<Inbound> {
        mpsc::Receiver::try_recv(self).ok()
    }
}
