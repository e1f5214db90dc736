//! The user's conversation list ([`super::Client::conversations`]): the gateway's `get subs` on
//! `me`, asked over a short side connection of its own.
//!
//! The engine follows the topics the application names; it does not keep the user's whole
//! list. The list is asked on a separate connection (hi, login, `get subs`, close) so the
//! engine's session is never touched. The first such login uses the client's credentials; the
//! gateway's token from that answer is used for later ones (no password hash on every refresh).
//! A second session of the same user changes nobody's presence: the main session is up.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kefu_core::frame::Deframer;
use kefu_core::proto::{
    self, AuthScheme, ClientPacket, Code, CtrlParams, Get, GetWhat, Hi, MetaItem, ServerPacket,
};

use super::config::{Endpoint, Login};
use super::error::ClientError;
use super::shared::FRAME_BYTES;
use super::transport::Conn;

/// One of the user's conversations, as the gateway lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The topic name, as this user calls it (a one-to-one topic is named after the peer).
    pub topic: String,
    /// Display title: the topic's title, or the peer's name for a one-to-one topic.
    pub title: String,
    /// The topic's latest seq.
    pub latest: u64,
    /// The user's read mark.
    pub read: u64,
    /// Unread messages (own messages not counted).
    pub unread: u64,
    /// Whether the peer (one-to-one) or anyone (group) is attached now.
    pub online: bool,
}

/// What a side connection needs.
pub(crate) struct Directory {
    pub endpoint: Endpoint,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub login: Login,
    pub device: String,
    pub lang: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// The token from the last side login.
    token: Mutex<Option<Vec<u8>>>,
}

/// Request ids on the side connection.
const HI: u32 = 1;
const LOGIN: u32 = 2;
const SUBS: u32 = 3;

impl Directory {
    pub(crate) fn new(
        endpoint: Endpoint,
        tls: Option<Arc<rustls::ClientConfig>>,
        login: Login,
        device: String,
        lang: String,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Directory {
            endpoint,
            tls,
            login,
            device,
            lang,
            connect_timeout,
            request_timeout,
            token: Mutex::new(None),
        }
    }

    /// Asks the gateway for the user's conversations.
    pub(crate) async fn list(&self) -> Result<Vec<Conversation>, ClientError> {
        let token = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match self.ask(token.as_deref()).await {
            // An expired or revoked token: once more with the client's own credentials.
            Err(ClientError::Refused(Code::UNAUTHORIZED)) if token.is_some() => {
                self.ask(None).await
            }
            other => other,
        }
    }

    async fn ask(&self, token: Option<&[u8]>) -> Result<Vec<Conversation>, ClientError> {
        let conn = tokio::time::timeout(
            self.connect_timeout,
            Conn::open(&self.endpoint, self.tls.as_ref()),
        )
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut side = Side {
            conn,
            deframer: Box::new(Deframer::new()),
            input: Vec::new(),
            at: 0,
            out: vec![0; FRAME_BYTES],
        };
        let asked = tokio::time::timeout(self.request_timeout, self.converse(&mut side, token))
            .await
            .unwrap_or(Err(ClientError::Timeout));
        side.conn.close().await;
        asked
    }

    async fn converse(
        &self,
        side: &mut Side,
        token: Option<&[u8]>,
    ) -> Result<Vec<Conversation>, ClientError> {
        let ua = concat!("kefu-host/", env!("CARGO_PKG_VERSION"));
        side.send(&ClientPacket::Hi(Hi {
            id: HI,
            ver: proto::PROTOCOL_VERSION,
            device: &self.device,
            platform: std::env::consts::OS,
            lang: &self.lang,
            ua,
        }))
        .await?;
        let basic;
        let (scheme, secret) = match (token, &self.login) {
            (Some(t), _) => (AuthScheme::Token, t),
            (None, Login::Token(t)) => (AuthScheme::Token, t.as_slice()),
            (None, Login::Password { user, password }) => {
                basic = format!("{user}:{password}");
                (AuthScheme::Basic, basic.as_bytes())
            }
        };
        side.send(&ClientPacket::Login(proto::Login {
            id: LOGIN,
            scheme,
            secret,
        }))
        .await?;
        side.send(&ClientPacket::Get(Get {
            id: SUBS,
            topic: "me",
            what: GetWhat::Subs,
        }))
        .await?;
        let mut list = Vec::new();
        loop {
            let body = side.next_body().await?;
            let Ok(packet) = proto::decode_server(&body) else {
                continue;
            };
            match packet {
                ServerPacket::Ctrl(c) if c.id == HI || c.id == LOGIN => {
                    if !c.code.is_success() {
                        return Err(ClientError::Refused(c.code));
                    }
                    if let CtrlParams::Login { token, .. } = c.params
                        && !token.is_empty()
                    {
                        *self.token.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(token.to_vec());
                    }
                }
                ServerPacket::Ctrl(c) if c.id == SUBS => {
                    return if c.code.is_success() {
                        Ok(list)
                    } else {
                        Err(ClientError::Refused(c.code))
                    };
                }
                ServerPacket::Meta(m) if m.id == SUBS => {
                    if let MetaItem::Sub(s) = m.item {
                        list.push(Conversation {
                            topic: s.name.to_owned(),
                            title: s.title.to_owned(),
                            latest: s.seq,
                            read: s.read,
                            unread: s.unread,
                            online: s.online,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// The side connection with its framing state.
struct Side {
    conn: Conn,
    deframer: Box<Deframer<FRAME_BYTES>>,
    /// Bytes read; `input[at..]` not yet given to the deframer.
    input: Vec<u8>,
    at: usize,
    out: Vec<u8>,
}

impl Side {
    async fn send(&mut self, p: &ClientPacket<'_>) -> Result<(), ClientError> {
        let n = proto::encode_client(p, &mut self.out).map_err(|_| ClientError::BadCredentials)?;
        let frame = self.out.get(..n).unwrap_or_default().to_vec();
        self.conn
            .send(&[frame])
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    }

    /// The next frame's body.
    async fn next_body(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(frame) = self.deframer.next_frame() {
                match frame {
                    Ok(body) => return Ok(body.to_vec()),
                    Err(_) => continue,
                }
            }
            if let Some(rest) = self.input.get(self.at..).filter(|r| !r.is_empty()) {
                let took = self.deframer.write(rest);
                if took == 0 {
                    return Err(ClientError::Connect(
                        "oversized frame from the gateway".into(),
                    ));
                }
                self.at += took;
                continue;
            }
            let n = self
                .conn
                .recv(&mut self.input)
                .await
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.at = 0;
        }
    }
}
