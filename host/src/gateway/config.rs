//! The gateway's settings, with the defaults `kefu gateway` runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kefu_core::delivery::DeliveryConfig;

/// Everything `kefu gateway` can be told.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// HTTP listener: WebSocket at `/v0/channels`, `/metrics`, `/healthz`.
    pub http_addr: SocketAddr,
    /// Serve the HTTP listener over TLS (`wss://`, `https://`) with this certificate; plain
    /// `ws://` / `http://` when `None`.
    pub tls: Option<TlsFiles>,
    /// Raw TCP listener for the framed binary protocol.
    pub tcp_addr: SocketAddr,
    /// Folder holding the database and the token key.
    pub data_dir: PathBuf,
    /// Largest `pub` content accepted, bytes (413 beyond).
    pub max_content: usize,
    /// Requests per second a session may make on average (0 = unlimited).
    pub rate_per_sec: u32,
    /// Burst allowance of the rate limit.
    pub rate_burst: u32,
    /// Sensitive words: a `pub` containing one is refused with 422.
    pub words: Vec<String>,
    /// A connection must log in within this time.
    pub handshake_timeout: Duration,
    /// A connection silent for this long is closed (clients send keepalives).
    pub idle_timeout: Duration,
    /// How long a login token stays valid.
    pub token_ttl: Duration,
    /// Whether `acc` may create accounts online.
    pub open_signup: bool,
    /// Per-subscriber push window.
    pub delivery: DeliveryConfig,
    /// Events (presence, receipts) queued per session before more are dropped.
    pub event_queue: usize,
    /// Consultations one agent is given at most by automatic assignment.
    pub max_agent_load: u32,
    /// How long shutdown waits for sessions to finish in-flight commits.
    pub drain_timeout: Duration,
    /// Sync every commit to disk (`false` only for throwaway test setups).
    pub durable: bool,
}

/// The PEM files of the HTTP listener's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl GatewayConfig {
    /// Largest frame body accepted from a client: the content limit plus room for the rest
    /// of a `pub` (topic, ids, head).
    pub fn max_body(&self) -> usize {
        self.max_content.saturating_add(1024)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 6060)),
            tls: None,
            tcp_addr: SocketAddr::from(([127, 0, 0, 1], 6061)),
            data_dir: PathBuf::from("kefu-data"),
            max_content: 16 * 1024,
            rate_per_sec: 1000,
            rate_burst: 2000,
            words: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            token_ttl: Duration::from_secs(14 * 24 * 3600),
            open_signup: true,
            delivery: DeliveryConfig::default(),
            event_queue: 256,
            max_agent_load: 5,
            drain_timeout: Duration::from_secs(10),
            durable: true,
        }
    }
}
