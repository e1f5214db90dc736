//! Connection scale: many idle WebSocket connections, each upgraded, greeted (`hi`) and logged
//! in (one account, token login), held open while the gateway's resident memory is read before
//! and after. What one connection costs is the difference over the count.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use kefu_core::frame;
use kefu_core::proto::{self, AuthScheme, ClientPacket, Code, Hi, Login, ServerPacket};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::BenchError;
use super::link::Link;
use super::procstat::{self, Sample};

/// Connections being opened at the same time.
const OPENING: usize = 128;
/// How long the gateway gets to settle before its memory is read again.
const SETTLE: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What to run.
#[derive(Clone, Debug)]
pub struct ConnsConfig {
    /// The gateway's HTTP address (WebSocket at `/v0/channels`).
    pub http: SocketAddr,
    /// The gateway's framed-TCP address (to create the account).
    pub tcp: SocketAddr,
    /// Connections to open.
    pub connections: usize,
    /// The gateway's process.
    pub gateway_pid: u32,
}

/// What a run measured.
#[derive(Clone, Copy, Debug)]
pub struct ConnsReport {
    /// Connections open, each logged in, when memory was read.
    pub connections: usize,
    /// How long opening them took.
    pub elapsed: Duration,
    /// The gateway before the first connection.
    pub before: Sample,
    /// The gateway with every connection open and idle.
    pub after: Sample,
    /// The machine's load average when the run started.
    pub load: [f64; 3],
}

impl ConnsReport {
    /// Resident bytes the gateway grew by, per connection.
    pub fn per_connection(&self) -> f64 {
        self.after.rss.saturating_sub(self.before.rss) as f64 / self.connections.max(1) as f64
    }
}

/// Opens the connections, reads the gateway's memory, closes them.
pub async fn run(cfg: &ConnsConfig) -> Result<ConnsReport, BenchError> {
    let load = procstat::load_average();
    let pid = cfg.gateway_pid.to_string();
    let token = {
        let mut link = Link::connect(cfg.tcp).await?;
        link.hi().await?;
        let login = format!("c{:08x}", rand::random::<u32>());
        link.acc(&login, "kefu-bench-pass").await?.token
    };
    if token.is_empty() {
        return Err(BenchError::Protocol("the gateway issued no token".into()));
    }
    tokio::time::sleep(SETTLE).await;
    let before = procstat::sample(&pid).ok_or(BenchError::NoProcess(cfg.gateway_pid))?;
    let url = format!("ws://{}/v0/channels", cfg.http);
    let started = Instant::now();
    let mut open = Vec::with_capacity(cfg.connections);
    let mut opening = FuturesUnordered::new();
    let mut next = 0;
    while open.len() < cfg.connections {
        while next < cfg.connections && opening.len() < OPENING {
            opening.push(connect(&url, &token));
            next += 1;
        }
        match opening.next().await {
            Some(ws) => open.push(ws.map_err(|e| match e {
                BenchError::Io(io) => BenchError::Io(std::io::Error::new(
                    io.kind(),
                    format!("connection {}: {io}", open.len() + 1),
                )),
                e => e,
            })?),
            None => break,
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let after = procstat::sample(&pid).ok_or(BenchError::NoProcess(cfg.gateway_pid))?;
    let report = ConnsReport {
        connections: open.len(),
        elapsed,
        before,
        after,
        load,
    };
    drop(open);
    Ok(report)
}

/// One connection: upgrade, `hi`, token `login`, each answered with success.
async fn connect(url: &str, token: &[u8]) -> Result<Ws, BenchError> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(ws_error)?;
    let hi = ClientPacket::Hi(Hi {
        id: 1,
        ver: proto::PROTOCOL_VERSION,
        device: "kefu-bench",
        platform: "linux",
        lang: "en",
        ua: "kefu-bench",
    });
    call(&mut ws, &hi, 1, Code::OK).await?;
    let login = ClientPacket::Login(Login {
        id: 2,
        scheme: AuthScheme::Token,
        secret: token,
    });
    call(&mut ws, &login, 2, Code::OK).await?;
    Ok(ws)
}

/// Sends `packet` as one binary message and waits for the `ctrl` with `id`.
async fn call(
    ws: &mut Ws,
    packet: &ClientPacket<'_>,
    id: u32,
    want: Code,
) -> Result<(), BenchError> {
    let mut buf = vec![0u8; 1024];
    let n = proto::encode_client(packet, &mut buf)
        .map_err(|e| BenchError::Protocol(format!("cannot encode: {e:?}")))?;
    buf.truncate(n);
    ws.send(Message::Binary(buf.into()))
        .await
        .map_err(ws_error)?;
    while let Some(msg) = ws.next().await {
        let Message::Binary(bytes) = msg.map_err(ws_error)? else {
            continue;
        };
        let (body, _) = frame::decode_frame(&bytes, bytes.len())
            .map_err(|e| BenchError::Protocol(format!("bad frame: {e:?}")))?;
        if let Ok(ServerPacket::Ctrl(c)) = proto::decode_server(body)
            && c.id == id
        {
            return if c.code == want {
                Ok(())
            } else {
                Err(BenchError::Refused {
                    what: "ws request",
                    code: c.code.0,
                    text: c.text.to_owned(),
                })
            };
        }
    }
    Err(BenchError::Closed)
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> BenchError {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Io(io) => BenchError::Io(io),
        Error::ConnectionClosed | Error::AlreadyClosed => BenchError::Closed,
        e => BenchError::Protocol(format!("websocket: {e}")),
    }
}
