//! The raw TCP listener: core frames back to back on the stream, deframed by the core's
//! resynchronising deframer.

use std::io;
use std::sync::Arc;

use kefu_core::frame::{Deframer, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::conn::{Conn, Inbound, Unit};
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
    let (tx, rx) = mpsc::channel(64);
    let max_body = ctx.cfg.max_body();
    let reader = tokio::spawn(read_frames(read, tx, max_body));
    let conn = TcpConn {
        write: BufWriter::with_capacity(16 * 1024, write),
    };
    Session::new(ctx, Transport::Tcp, conn).run(rx).await;
    reader.abort();
}

/// Reads the stream, yielding frame bodies; framing errors end the connection.
async fn read_frames(mut read: OwnedReadHalf, tx: mpsc::Sender<Inbound>, max_body: usize) {
    let mut deframer: Box<Deframer<TCP_FRAME_BUFFER>> = Box::new(Deframer::with_max_body(max_body));
    loop {
        loop {
            let unit = match deframer.next_frame() {
                None => break,
                Some(Ok([])) => Inbound::Ping,
                Some(Ok(body)) => Inbound::Body(body.to_vec()),
                Some(Err(e)) => Inbound::Garbage(garbage_kind(e)),
            };
            let stop = matches!(unit, Inbound::Garbage(_));
            if tx.send(unit).await.is_err() || stop {
                return;
            }
        }
        let spare = deframer.spare_capacity();
        match read.read(spare).await {
            Ok(0) | Err(_) => return,
            Ok(n) => deframer.commit(n),
        }
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
