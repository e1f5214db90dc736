//! Engine configuration: who the client is, how it logs in, and the tuning of every timer.

use heapless::{String, Vec};

use crate::backoff::BackoffConfig;
use crate::keepalive::KeepaliveConfig;
use crate::order::AckConfig;
use crate::outbox::OutboxConfig;
use crate::proto::{AuthScheme, Data};
use crate::time::Duration;

/// Longest credential secret the engine keeps, in bytes.
pub const MAX_SECRET: usize = 128;

/// A short text field of the configuration (device, platform, language, agent).
pub type Label = String<32>;

/// Decides, before a received message reaches the pool, whether the application wants it.
/// Returning `false` drops the message for good: it is acknowledged like any other, but never
/// stored nor shown.
pub type Filter = fn(&Data<'_>) -> bool;

/// How the engine logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The scheme of `secret`.
    pub scheme: AuthScheme,
    /// `user:password` for [`AuthScheme::Basic`], the token bytes for [`AuthScheme::Token`].
    pub secret: Vec<u8, MAX_SECRET>,
}

impl Credentials {
    /// Basic credentials `user:password`; `None` if they are longer than [`MAX_SECRET`].
    pub fn basic(user: &str, password: &str) -> Option<Self> {
        let mut secret = Vec::new();
        secret.extend_from_slice(user.as_bytes()).ok()?;
        secret.push(b':').ok()?;
        secret.extend_from_slice(password.as_bytes()).ok()?;
        Some(Credentials {
            scheme: AuthScheme::Basic,
            secret,
        })
    }

    /// A device or session token; `None` if longer than [`MAX_SECRET`].
    pub fn token(token: &[u8]) -> Option<Self> {
        Some(Credentials {
            scheme: AuthScheme::Token,
            secret: Vec::from_slice(token).ok()?,
        })
    }
}

/// Everything the engine needs to know up front.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Stable device identifier, sent in `hi`.
    pub device: Label,
    /// Platform name, sent in `hi`.
    pub platform: Label,
    /// Preferred language, sent in `hi`.
    pub lang: Label,
    /// Client software name and version, sent in `hi`.
    pub ua: Label,
    /// How to log in.
    pub credentials: Credentials,
    /// Send-side reliability.
    pub outbox: OutboxConfig,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// Ping interval and dead-peer timeout.
    pub keepalive: KeepaliveConfig,
    /// Ack coalescing.
    pub ack: AckConfig,
    /// How long a request may wait for its `ctrl` (default 10 s). A handshake request that times
    /// out closes the connection; others are answered with a local 408.
    pub request_timeout: Duration,
    /// How long a gap in the pushed seqs may stay open before it is pulled with `get`
    /// (default 200 ms): pushes that are merely reordered fill it without a round trip.
    pub gap_hold: Duration,
    /// Most messages one gap pull asks for (default 64).
    pub pull_limit: u32,
    /// Shortest spacing of typing notes per topic (default 3 s).
    pub typing_interval: Duration,
    /// Wall-clock milliseconds since the Unix epoch at `Instant::ZERO`, used for message-id
    /// timestamps until the gateway's `hi` answer tells the real time (0 = unknown).
    pub wall_ms_at_zero: u64,
    /// Drops unwanted messages before they reach the pool.
    pub filter: Option<Filter>,
}

impl EngineConfig {
    /// A configuration with default tuning for the given device and credentials.
    pub fn new(device: &str, credentials: Credentials) -> Self {
        EngineConfig {
            device: label(device),
            platform: label("kefu-core"),
            lang: label("en"),
            ua: label(concat!("kefu-core/", env!("CARGO_PKG_VERSION"))),
            credentials,
            outbox: OutboxConfig::default(),
            backoff: BackoffConfig::default(),
            keepalive: KeepaliveConfig::default(),
            ack: AckConfig::default(),
            request_timeout: Duration::from_secs(10),
            gap_hold: Duration::from_millis(200),
            pull_limit: 64,
            typing_interval: Duration::from_secs(3),
            wall_ms_at_zero: 0,
            filter: None,
        }
    }
}

/// `text` cut to fit a [`Label`] (at a character boundary).
pub fn label(text: &str) -> Label {
    let mut out = Label::new();
    set_label(&mut out, text);
    out
}

/// Overwrites `out` with `text` cut to fit (at a character boundary), in place: what
/// [`label`] makes, without building a second label to copy.
pub(crate) fn set_label(out: &mut Label, text: &str) {
    out.clear();
    // Almost every text fits: one copy, not one push per character (except in the `small`
    // build, where flash is dearer than cycles).
    #[cfg(not(feature = "small"))]
    if out.push_str(text).is_ok() {
        return;
    }
    for c in text.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_join_user_and_password() {
        let c = Credentials::basic("alice", "s3cret").unwrap();
        assert_eq!(c.secret.as_slice(), b"alice:s3cret");
        assert_eq!(c.scheme, AuthScheme::Basic);
        assert!(Credentials::basic("a", &"x".repeat(200)).is_none());
    }

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        let l = label(&"客".repeat(20));
        assert_eq!(l.chars().count(), 10, "3-byte characters, 32 bytes hold 10");
        assert_eq!(label("kiosk").as_str(), "kiosk");
    }

    #[test]
    fn a_label_set_in_place_forgets_what_it_held() {
        let mut l = label("a-much-longer-earlier-sender-id");
        set_label(&mut l, "bo");
        assert_eq!(l.as_str(), "bo");
        set_label(&mut l, &"客".repeat(20));
        assert_eq!(l.as_str(), "客".repeat(10), "cut at a character boundary");
        set_label(&mut l, "");
        assert!(l.is_empty());
    }
}
