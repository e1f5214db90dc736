//! The HTTP listener: WebSocket sessions at `/v0/channels` (Tinode's path; binary messages
//! carry core frames, text messages the JSON dialect), `/metrics` and `/healthz`; plain, or
//! over TLS ([`TlsListener`]) when the gateway is given a certificate.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kefu_core::frame;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::conn::{Conn, Inbound, Unit};
use super::context::Ctx;
use super::metrics::{Metrics, Transport};
use super::session::Session;
use super::tcp::garbage_kind;
use crate::store::Store;

/// Bytes tungstenite reads at a time per connection. Its buffer stays allocated while the
/// connection idles, so this is what every idle connection pays (its default, 128 KiB, would be
/// 2.5 GiB for 20,000 connections). A chat message fits; a larger one grows the buffer as needed
/// and is read in several calls.
const WS_READ_BUFFER: usize = 512;

/// The router for the HTTP listener.
pub fn router<S: Store>(ctx: Arc<Ctx<S>>) -> Router {
    Router::new()
        .route("/v0/channels", get(upgrade::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(healthz::<S>))
        .with_state(ctx)
}

async fn upgrade<S: Store>(State(ctx): State<Arc<Ctx<S>>>, ws: WebSocketUpgrade) -> Response {
    if ctx.shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let max_message = ctx
        .cfg
        .max_body()
        .saturating_add(frame::OVERHEAD)
        .saturating_mul(2);
    ws.read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            let tracked = ctx.sessions.token();
            async move {
                serve(ctx, socket).await;
                drop(tracked);
            }
        })
}

async fn metrics<S: Store>(State(ctx): State<Arc<Ctx<S>>>) -> Response {
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        ctx.metrics.render(),
    )
        .into_response()
}

async fn healthz<S: Store>(State(ctx): State<Arc<Ctx<S>>>) -> Response {
    if ctx.shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if let Some(why) = ctx.store.fault() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("storage: {why}\n")).into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn serve<S: Store>(ctx: Arc<Ctx<S>>, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(64);
    let reader = tokio::spawn(read_messages(stream, tx, ctx.cfg.max_body()));
    Session::new(ctx, Transport::WebSocket, WsConn { sink })
        .run(rx)
        .await;
    reader.abort();
}

async fn read_messages(
    mut stream: SplitStream<WebSocket>,
    tx: mpsc::Sender<Inbound>,
    max_body: usize,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let unit = match msg {
            Message::Binary(bytes) => match frame::decode_frame(&bytes, max_body) {
                Ok(([], _)) => Inbound::Ping,
                Ok((body, used)) if used == bytes.len() => Inbound::Body(body.to_vec()),
                Ok(_) => Inbound::Garbage("bytes after the frame"),
                Err(e) => Inbound::Garbage(garbage_kind(e)),
            },
            Message::Text(text) => Inbound::Text(text.to_string()),
            Message::Close(_) => return,
            // Pings are answered by the WebSocket layer itself.
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let stop = matches!(unit, Inbound::Garbage(_));
        if tx.send(unit).await.is_err() || stop {
            return;
        }
    }
}

struct WsConn {
    sink: SplitSink<WebSocket, Message>,
}

fn ws_err(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl Conn for WsConn {
    async fn feed(&mut self, unit: Unit) -> io::Result<()> {
        let msg = match unit {
            Unit::Frame(bytes) => Message::Binary(bytes.into()),
            Unit::Text(text) => Message::Text(text.into()),
        };
        self.sink.feed(msg).await.map_err(ws_err)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.sink.flush().await.map_err(ws_err)
    }

    async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}

/// Reads a PEM certificate chain and private key into a TLS acceptor for the HTTP listener
/// (TLS 1.2 and 1.3, ALPN `http/1.1`, which WebSocket upgrades need). The error names the file.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// A TCP listener that hands out connections once their TLS handshake is done. Handshakes run
/// side by side (a slow or silent client delays nobody) and are dropped after a timeout.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS on `tcp`; a handshake must finish within `handshake_timeout`.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor, handshake_timeout: Duration) -> Self {
        TlsListener {
            tcp,
            acceptor,
            handshake_timeout,
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let handshake = self.acceptor.accept(stream);
                        let limit = self.handshake_timeout;
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(limit, handshake).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "tls handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
