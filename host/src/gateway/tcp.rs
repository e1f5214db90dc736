//! The raw TCP listener: core frames back to back on the stream, deframed by the core's
//! resynchronising deframer in the session's own task (no reader task, no queue between them:
//! a frame costs one task wake-up, not two).

use std::io;
use std::sync::Arc;

use kefu_core::frame::{Deframer, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::conn::{Conn, Inbound, Inlet, Unit};
use super::context::Ctx;
use super::metrics::Transport;
use super::session::Session;
use crate::store::Store;

/// The deframer's buffer: the largest frame a TCP client may send (content limits are checked
/// per packet; the gateway's `max_body` is clamped to this).
pub const TCP_FRAME_BUFFER: usize = 64 * 1024 + 2048;

/// Serves one accepted TCP connection until it ends.
pub async fn serve<S: Store>(ctx: Arc<Ctx<S>>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let inlet = TcpInlet {
        read,
        deframer: Box::new(Deframer::with_max_body(ctx.cfg.max_body())),
        ended: false,
    };
    let conn = TcpConn {
        write: BufWriter::with_capacity(16 * 1024, write),
    };
    Session::new(ctx, Transport::Tcp, conn).run(inlet).await;
}

/// The read half of a TCP connection and the frames read from it so far.
struct TcpInlet {
    read: OwnedReadHalf,
    deframer: Box<Deframer<TCP_FRAME_BUFFER>>,
    /// The stream ended, failed or sent garbage: nothing more comes.
    ended: bool,
}

impl Inlet for TcpInlet {
    async fn recv(&mut self) -> Option<Inbound> {
        loop {
            if let Some(unit) = self.try_recv() {
                return Some(unit);
            }
            if self.ended {
                return None;
            }
            // Cancel-safe: a read dropped before it completes has taken no bytes.
            match self.read.read(self.deframer.spare_capacity()).await {
                Ok(0) | Err(_) => self.ended = true,
                Ok(n) => self.deframer.commit(n),
            }
        }
    }

    fn try_recv(&mut self) -> Option<Inbound> {
        if self.ended {
            return None;
        }
        Some(match self.deframer.next_frame()? {
            Ok([]) => Inbound::Ping,
            Ok(body) => Inbound::Body(body.to_vec()),
            Err(e) => {
                // Framing errors end the connection.
                self.ended = true;
                Inbound::Garbage(garbage_kind(e))
            }
        })
    }
}

/// A short name for a framing error, for the close reason and metrics.
pub fn garbage_kind(e: FrameError) -> &'static str {
    match e {
        FrameError::Garbage { .. } => "garbage bytes",
        FrameError::HeaderCorrupt => "corrupt frame header",
        FrameError::BodyCorrupt => "corrupt frame body",
        FrameError::Oversized { .. } => "oversized frame",
        _ => "bad frame",
    }
}

struct TcpConn {
    write: BufWriter<OwnedWriteHalf>,
}

impl Conn for TcpConn {
    async fn feed(&mut self, unit: Unit) -> io::Result<()> {
        match unit {
            Unit::Frame(bytes) => self.write.write_all(&bytes).await,
            // The TCP transport carries frames only; a JSON text cannot occur here.
            Unit::Text(_) => Ok(()),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.write.flush().await
    }

    async fn close(&mut self) {
        let _ = self.write.flush().await;
        let _ = self.write.shutdown().await;
    }
}
