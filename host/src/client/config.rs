//! What a client is told up front: where the gateway is, how to log in, and the tuning it hands
//! to the core engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kefu_core::backoff::BackoffConfig;
use kefu_core::engine::{Credentials, EngineConfig, Filter, label};
use kefu_core::keepalive::KeepaliveConfig;
use kefu_core::outbox::OutboxConfig;
use tokio_tungstenite::tungstenite::http::Uri;

use super::error::ClientError;

/// How the client logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    /// A login name and password.
    Password {
        /// The login name.
        user: String,
        /// The password.
        password: String,
    },
    /// A token issued by the gateway (`kefu user token`, or the one a password login returns).
    Token(Vec<u8>),
}

/// Everything [`super::Client::connect`] needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `tcp://host:port` (framed binary), `ws://host:port` or `wss://host:port` (binary
    /// WebSocket; the path defaults to `/v0/channels`).
    pub url: String,
    /// How to log in.
    pub login: Login,
    /// Stable device identifier (per-device push marks on the gateway).
    pub device: String,
    /// Preferred language tag, sent in `hi`.
    pub lang: String,
    /// Drops received messages the application never wants to see, before they reach the pool
    /// (they are still acknowledged).
    pub filter: Option<Filter>,
    /// Subscribe to `me` (presence, consultation assignments, unread counts of other topics).
    pub subscribe_me: bool,
    /// PEM file with extra CA certificates trusted for `wss://`, besides the webpki roots.
    pub extra_ca: Option<PathBuf>,
    /// Longest wait for one connection attempt (TCP connect, TLS and WebSocket handshakes).
    pub connect_timeout: Duration,
    /// Longest wait of [`super::Client::connect`] for the first login, and of requests that
    /// wait for an answer (history pages, customer-service actions).
    pub request_timeout: Duration,
    /// Events buffered per [`super::Subscription`]: when one is full, the driver stops taking
    /// events from the engine (which then stops acknowledging) until the application reads.
    pub subscription_buffer: usize,
    /// Send-side reliability (retransmit timeout, give-up).
    pub outbox: OutboxConfig,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// Ping interval and dead-peer timeout.
    pub keepalive: KeepaliveConfig,
}

impl ClientConfig {
    /// A configuration with default tuning.
    pub fn new(url: impl Into<String>, login: Login) -> Self {
        ClientConfig {
            url: url.into(),
            login,
            device: format!("kefu-sdk-{}", std::process::id()),
            lang: "en".into(),
            filter: None,
            subscribe_me: true,
            extra_ca: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            subscription_buffer: 256,
            outbox: OutboxConfig::default(),
            backoff: BackoffConfig::default(),
            keepalive: KeepaliveConfig::default(),
        }
    }

    /// Password login shorthand.
    pub fn password(url: impl Into<String>, user: &str, password: &str) -> Self {
        ClientConfig::new(
            url,
            Login::Password {
                user: user.into(),
                password: password.into(),
            },
        )
    }

    /// The engine's configuration.
    pub(crate) fn engine_config(&self) -> Result<EngineConfig, ClientError> {
        let credentials = match &self.login {
            Login::Password { user, password } => Credentials::basic(user, password),
            Login::Token(t) => Credentials::token(t),
        }
        .ok_or(ClientError::BadCredentials)?;
        let mut cfg = EngineConfig::new(&self.device, credentials);
        cfg.platform = label(std::env::consts::OS);
        cfg.lang = label(&self.lang);
        cfg.ua = label(concat!("kefu-host/", env!("CARGO_PKG_VERSION")));
        cfg.filter = self.filter;
        cfg.outbox = self.outbox;
        cfg.backoff = self.backoff;
        cfg.keepalive = self.keepalive;
        cfg.wall_ms_at_zero = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(cfg)
    }
}

/// Where the gateway is, parsed from [`ClientConfig::url`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Framed binary over TCP: `host:port`.
    Tcp(String),
    /// Binary WebSocket; the full URL.
    Ws(String),
    /// Binary WebSocket over TLS; the full URL.
    Wss(String),
}

impl Endpoint {
    /// Parses a gateway URL.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let bad = || ClientError::BadUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("" | "/") => "/v0/channels",
            Some(p) => p,
        };
        let authority = uri.authority().ok_or_else(bad)?.as_str();
        match uri.scheme_str() {
            Some("tcp") => {
                uri.port_u16().ok_or_else(bad)?;
                Ok(Endpoint::Tcp(authority.to_owned()))
            }
            Some("ws") => Ok(Endpoint::Ws(format!("ws://{authority}{path}"))),
            Some("wss") => Ok(Endpoint::Wss(format!("wss://{authority}{path}"))),
            _ => Err(bad()),
        }
    }
}

/// The rustls configuration for `wss://`: the webpki roots plus the extra CA, if any.
pub(crate) fn tls_config(
    extra_ca: Option<&PathBuf>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::Tls(format!(
                "{}: no certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_endpoints_with_the_default_websocket_path() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:6061").unwrap(),
            Endpoint::Tcp("127.0.0.1:6061".into())
        );
        assert_eq!(
            Endpoint::parse("ws://localhost:6060").unwrap(),
            Endpoint::Ws("ws://localhost:6060/v0/channels".into())
        );
        assert_eq!(
            Endpoint::parse("wss://chat.example.com/custom").unwrap(),
            Endpoint::Wss("wss://chat.example.com/custom".into())
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_typed_error() {
        for url in [
            "",
            "tcp://host",
            "http://x:1",
            "127.0.0.1:6061",
            "ws://",
            "tcp://:80",
        ] {
            assert!(
                matches!(Endpoint::parse(url), Err(ClientError::BadUrl(_))),
                "{url:?} must be refused"
            );
        }
    }

    #[test]
    fn long_credentials_are_refused_and_the_filter_reaches_the_engine() {
        fn no_bots(d: &kefu_core::proto::Data<'_>) -> bool {
            d.head.mime != "bot"
        }
        let mut cfg = ClientConfig::password("tcp://h:1", "alice", &"p".repeat(300));
        assert!(matches!(
            cfg.engine_config(),
            Err(ClientError::BadCredentials)
        ));
        cfg.login = Login::Token(b"tok".to_vec());
        cfg.filter = Some(no_bots);
        let e = cfg.engine_config().unwrap();
        assert!(e.filter.is_some());
        assert!(
            e.wall_ms_at_zero > 1_600_000_000_000,
            "wall clock taken from the system"
        );
    }

    #[test]
    fn an_extra_ca_that_is_not_pem_is_a_tls_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, b"not a certificate").unwrap();
        assert!(matches!(tls_config(Some(&path)), Err(ClientError::Tls(_))));
        assert!(tls_config(None).is_ok());
    }
}
