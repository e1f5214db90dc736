//! Byte pipes to the gateway: framed binary over TCP, or one binary WebSocket message per frame
//! (plain or over rustls).

use std::io;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::config::Endpoint;

/// Bytes read from TCP at most per read.
const READ_CHUNK: usize = 64 * 1024;

/// An open connection.
pub(crate) enum Conn {
    /// Frames back to back on a TCP stream.
    Tcp(TcpStream),
    /// One frame per binary WebSocket message.
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

impl Conn {
    /// Opens a connection to the gateway.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> io::Result<Conn> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
            Endpoint::Ws(url) | Endpoint::Wss(url) => {
                let connector = tls.map(|c| Connector::Rustls(c.clone()));
                let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
                    url.as_str(),
                    None,
                    true,
                    connector,
                )
                .await
                .map_err(io::Error::other)?;
                Ok(Conn::Ws(Box::new(ws)))
            }
        }
    }

    /// Writes frames (each one whole frame).
    pub(crate) async fn send(&mut self, frames: &[Vec<u8>]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                if let [one] = frames {
                    return s.write_all(one).await;
                }
                let all: Vec<u8> = frames.concat();
                s.write_all(&all).await
            }
            Conn::Ws(ws) => {
                for f in frames {
                    ws.feed(Message::binary(f.clone()))
                        .await
                        .map_err(io::Error::other)?;
                }
                ws.flush().await.map_err(io::Error::other)
            }
        }
    }

    /// Reads the next bytes into `buf` (replacing its content); 0 = the connection closed.
    /// Cancel-safe: nothing is lost if the future is dropped before it completes.
    pub(crate) async fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => {
                buf.resize(READ_CHUNK, 0);
                let n = s.read(buf).await?;
                buf.truncate(n);
                Ok(n)
            }
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None => return Ok(0),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(Message::Binary(b))) => {
                        buf.clear();
                        buf.extend_from_slice(&b);
                        if !b.is_empty() {
                            return Ok(b.len());
                        }
                    }
                    Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(_)) => {} // ping / pong handled by tungstenite; text is not ours
                }
            },
        }
    }

    /// Closes the connection politely (errors do not matter any more).
    pub(crate) async fn close(self) {
        match self {
            Conn::Tcp(mut s) => {
                let _ = s.shutdown().await;
            }
            Conn::Ws(mut ws) => {
                let _ = ws.close().await;
            }
        }
    }
}
